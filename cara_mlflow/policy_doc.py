"""The tuned policy document (``policy.json``, registered as ``NAME.policy@active``), typed and checked.

``tune`` writes it; every ``step`` reads it back from the registry as a :class:`PolicyDocument`.
Anything that is not exactly what ``tune`` writes — invalid JSON, a missing or unknown field, a
wrong type, a parameter the policy does not take — is refused with one line naming the field and
the fix, before the step touches anything. The document is JSON and only JSON: nothing in it is ever unpickled or
evaluated, and it names no model to load (models come from the registry alone).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

from .backends import Backend
from .errors import InputError
from .features import FeatureSpace
from .guards import Guards
from .losses import TASKS, check_loss_name
from .money import Money
from .names import PSI_METHODS
from .notify import check_command, check_timeout
from .policies import make_policy
from .staleness import DEFAULT_PSI_SCALE, PSI_SCALES
from .validate import is_positive, tunable_policies
from .verify import VERIFY_MARGIN, check_margin

__all__ = ["POLICY_FORMAT", "FIELDS", "PsiSettings", "PolicyDocument", "parse_policy_document",
           "check_policy_document"]

POLICY_FORMAT = 2
#: Formats this version reads: 1 (0.1: numeric features in raw units, 0-1 loss, classification).
READ_FORMATS = (1, 2)

#: Top-level fields ``tune`` writes, and whether each is required.
FIELDS = {"format": True, "name": True, "policy": True, "params": True, "kappa": True, "psi": True,
          "target": True, "features": True, "trainer": True, "project_uri": False, "offline": False,
          "tuning": False, "task": False, "feature_kinds": False, "guards": False,
          "money": False, "notify": False, "verify": False, "decide_before_labels": False, "backend": False}

_FIX = "re-run `cara-mlflow tune` to register a valid policy"


def parse_policy_document(text: str | bytes, source: str = "policy.json") -> dict:
    """Parse and check a policy document; :class:`~cara_mlflow.errors.InputError` (one line) if it
    is not valid.

    >>> doc = {"format": 1, "name": "m", "policy": "cara-t", "params": {"tau": 2.0}, "kappa": 5.0,
    ...        "psi": {"gamma": 1.5, "loss": "zero_one"}, "target": "label", "features": ["x"],
    ...        "trainer": {"model": "rf"}}
    >>> parse_policy_document(json.dumps(doc))["policy"]
    'cara-t'
    >>> parse_policy_document("{not json")
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: policy.json: not valid JSON (line 1, column 2: Expecting property name
    enclosed in double quotes); re-run `cara-mlflow tune` to register a valid policy
    """
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = (f"line {exc.lineno}, column {exc.colno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError)
                 else str(exc))
        raise InputError(f"{source}: not valid JSON ({where}); {_FIX}") from None
    return check_policy_document(doc, source)


def check_policy_document(doc: Any, source: str = "policy.json") -> dict:
    """Check a decoded policy document field by field; return it unchanged.

    >>> check_policy_document({"format": 1})
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: policy.json: missing field 'name'; re-run `cara-mlflow tune` to register a
    valid policy
    """
    if not isinstance(doc, dict):
        raise InputError(f"{source}: expected a JSON object, got {type(doc).__name__}; {_FIX}")
    unknown = sorted(set(doc) - set(FIELDS) - {"_version"})
    if unknown:
        raise InputError(f"{source}: unknown field {unknown[0]!r}; expected only {', '.join(FIELDS)}; {_FIX}")
    for key, required in FIELDS.items():
        if required and key not in doc:
            raise InputError(f"{source}: missing field {key!r}; {_FIX}")
    _check_values(doc, source)
    return doc


def _check_values(doc: dict, source: str) -> None:
    """Each field's type and value (the fields are known to be there)."""

    def bad(field: str, expected: str):
        value = repr(doc_get(field))
        return InputError(f"{source}: field {field!r} is {value[:80]}; expected {expected}; {_FIX}")

    def doc_get(field: str):
        value: Any = doc
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    if doc["format"] not in READ_FORMATS or isinstance(doc["format"], bool):
        raise bad("format", f"{' or '.join(map(str, READ_FORMATS))} (this version of cara-mlflow)")
    if not isinstance(doc["name"], str) or not doc["name"]:
        raise bad("name", "the registered model's name")
    if not isinstance(doc["policy"], str) or doc["policy"] not in tunable_policies():
        raise bad("policy", f"one of {', '.join(tunable_policies())}")
    if not isinstance(doc["params"], dict):
        raise bad("params", "an object of policy parameters")
    try:
        make_policy(doc["policy"], **doc["params"])
    except (TypeError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:160]
        raise InputError(f"{source}: field 'params' does not fit {doc['policy']!r} ({detail}); {_FIX}") from None
    if not is_positive(doc["kappa"]):
        raise bad("kappa", "a finite number > 0")
    if not isinstance(doc["psi"], dict) or not is_positive(doc["psi"].get("gamma")):
        raise bad("psi.gamma", "a finite number > 0 (the RBF kernel's γ)")
    try:
        check_loss_name(doc["psi"].get("loss", "zero_one"))
    except InputError:
        raise bad("psi.loss", "zero_one, squared, absolute or module:function") from None
    if doc.get("task", "classification") not in TASKS:
        raise bad("task", " or ".join(TASKS))
    if doc["psi"].get("method", "exact") not in PSI_METHODS:
        raise bad("psi.method", " or ".join(repr(m) for m in PSI_METHODS))
    if doc["psi"].get("scale", DEFAULT_PSI_SCALE) not in PSI_SCALES:
        raise bad("psi.scale", " or ".join(repr(m) for m in PSI_SCALES))
    if not isinstance(doc["target"], str) or not doc["target"]:
        raise bad("target", "the target column's name")
    features = doc["features"]
    if (not isinstance(features, list) or not features or not all(isinstance(f, str) and f for f in features)
            or len(set(features)) != len(features) or doc["target"] in features):
        raise bad("features", "a non-empty list of distinct column names, without the target")
    if not isinstance(doc["trainer"], dict):
        raise bad("trainer", "an object of trainer settings")
    from .train import TrainerSettings

    try:
        TrainerSettings(**doc["trainer"])
    except (TypeError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:160]
        raise InputError(f"{source}: field 'trainer' is not valid ({detail}); {_FIX}") from None
    _check_optional(doc, source, bad)
    _check_space(doc, source, bad)


def _check_optional(doc: dict, source: str, bad) -> None:
    """The fields a document may leave out."""
    if doc.get("project_uri") is not None and not isinstance(doc["project_uri"], str):
        raise bad("project_uri", "a string or null")
    offline = doc.get("offline")
    if offline is not None and not (isinstance(offline, dict) and set(offline) == {"start", "stop"}
                                    and all(type(v) is int for v in offline.values())):
        raise bad("offline", "an object {start, stop} of batch ids, or null")
    if doc.get("tuning") is not None and not isinstance(doc["tuning"], dict):
        raise bad("tuning", "an object of tuning figures, or null")
    try:
        Money.from_dict(doc.get("money"), source)
    except InputError:
        raise bad("money", "{error_cost, retrain_cost, price_per_hour, training_seconds} as tune writes them") from None
    if doc.get("notify") is not None:
        _check_notify(doc["notify"], bad)
    if not isinstance(doc.get("decide_before_labels", False), bool):
        raise bad("decide_before_labels", "true or false")
    if doc.get("decide_before_labels") and not make_policy(doc["policy"], **doc["params"]).from_costs():
        raise bad("decide_before_labels", f"false for {doc['policy']!r}: a drift detector needs the labels' errors")
    verify = doc.get("verify")
    if verify is not None and not (isinstance(verify, dict) and set(verify) == {"margin"}
                                   and (verify["margin"] is None or _is_margin(verify["margin"]))):
        raise bad("verify", "{margin: a fraction >= 0, or null for no check}")
    try:
        Guards.from_dict(doc.get("guards"), source)
    except InputError:
        raise bad("guards", "{max_model_age, retrain_budget: {attempts, window}} as tune writes them") from None
    try:
        Backend.from_dict(doc.get("backend"))
    except (InputError, TypeError, ValueError):
        raise bad("backend", "{name, config} as tune writes them") from None


def _is_margin(value) -> bool:
    try:
        check_margin(value)
    except InputError:
        return False
    return True


def _check_notify(notify, bad) -> None:
    try:
        if not isinstance(notify, dict) or set(notify) != {"command", "timeout"} or check_command(notify["command"]) \
                is None:
            raise InputError("notify")
        check_timeout(notify["timeout"])
    except InputError:
        raise bad("notify", "{command, timeout} as tune writes them") from None


def _money(data, source: str) -> dict:
    parsed = Money.from_dict(data, source)
    return {} if parsed is None else {"money": parsed[0], "training_seconds": parsed[1]}


def _check_space(doc: dict, source: str, bad) -> None:
    """Format 2: the kernel space, over exactly the features, their kinds as ``feature_kinds``."""
    if doc["format"] == 1:
        return
    try:
        space = FeatureSpace.from_dict(doc["psi"].get("space"))
    except (InputError, AttributeError):
        raise bad("psi.space", "the kernel space tune fitted") from None
    if list(space.features) != doc["features"] or doc.get("feature_kinds") != space.kind_of:
        raise bad("feature_kinds", "the kind of each feature, as in psi.space")


@dataclass(frozen=True)
class PsiSettings:
    """Everything that fixes the scale of Ψ̄, decided at ``tune`` (DESIGN.md "Units"): γ, the
    loss, the method, the query rule and the kernel space (``None``: raw numeric features, as 0.1)."""

    gamma: float
    loss: str = "zero_one"
    method: str = "exact"
    queries: str | None = None
    space: FeatureSpace | None = None
    scale: str = DEFAULT_PSI_SCALE      # paper | expected-loss: the unit of Ψ̄ and κ

    def to_dict(self) -> dict:
        out = {"gamma": self.gamma, "loss": self.loss, "method": self.method}
        if self.scale != DEFAULT_PSI_SCALE:     # documents in the paper's units stay as they were
            out["scale"] = self.scale
        if self.queries is not None:
            out["queries"] = self.queries
        return out if self.space is None else {**out, "space": self.space.to_dict()}


@dataclass(frozen=True)
class PolicyDocument:
    """The tuned policy: what ``tune`` decided and every ``step`` uses (DESIGN.md "MLflow naming").

    Built only through :meth:`from_dict` / :meth:`from_json` (which check every field) or by
    ``tune``; :meth:`to_dict` writes the JSON ``tune`` has always written. ``version`` is the
    registered version of ``NAME.policy`` the document was read from (not part of the JSON).

    >>> doc = PolicyDocument.from_dict({"format": 1, "name": "m", "policy": "cara-t", "params": {"tau": 2.0},
    ...     "kappa": 5.0, "psi": {"gamma": 1.5, "loss": "zero_one", "method": "auto"}, "target": "label",
    ...     "features": ["x"], "trainer": {"model": "lr"}})
    >>> doc.policy, doc.kappa, doc.psi.gamma, doc.features, doc.trainer.model
    ('cara-t', 5.0, 1.5, ('x',), 'lr')
    >>> PolicyDocument.from_dict(doc.to_dict()) == doc
    True
    """

    name: str
    policy: str
    params: Mapping[str, Any]
    kappa: float
    psi: PsiSettings
    target: str
    features: tuple[str, ...]
    trainer: Any                                # cara_mlflow.train.TrainerSettings
    project_uri: str | None = None
    offline: tuple[int, int] | None = None
    tuning: Mapping[str, Any] | None = None
    task: str = "classification"
    guards: Guards = Guards()
    money: Money | None = None                  # κ from money (None: κ was given as a number)
    training_seconds: tuple[float, ...] = ()    # the offline trainings' wall times (measured retrain cost)
    notify: Mapping[str, Any] | None = None     # {command, timeout}: run on every event (cara_mlflow.notify)
    verify_margin: float | None = VERIFY_MARGIN  # the check after a promotion (None: off; cara_mlflow.verify)
    decide_before_labels: bool = False          # act on a batch's queries (_QUERIES), reconcile with its labels
    backend: Backend = Backend()                # where a retrain runs (cara_mlflow.backends)
    version: int | None = field(default=None, compare=False)

    @property
    def space(self) -> FeatureSpace:
        """The kernel space of Ψ̄ (0.1's policies: the numeric features in raw units)."""
        return self.psi.space or FeatureSpace.numeric(self.features)

    @property
    def feature_kinds(self) -> dict[str, str]:
        return self.space.kind_of

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "policy.json", *, version: int | None = None):
        """Parse and check ``policy.json`` (:class:`InputError`, one line, if it is not valid)."""
        return cls.from_dict(parse_policy_document(text, source), source, version=version)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], source: str = "policy.json", *, version: int | None = None):
        """A checked document from its decoded JSON."""
        from .train import TrainerSettings

        doc = check_policy_document(dict(doc), source)
        psi = doc["psi"]
        offline = doc.get("offline")
        return cls(name=doc["name"], policy=doc["policy"], params=dict(doc["params"]), kappa=float(doc["kappa"]),
                   psi=PsiSettings(gamma=float(psi["gamma"]), loss=psi.get("loss", "zero_one"),
                                   method=psi.get("method", "exact"), queries=psi.get("queries"),
                                   scale=psi.get("scale", DEFAULT_PSI_SCALE),
                                   space=FeatureSpace.from_dict(psi["space"]) if "space" in psi else None),
                   task=doc.get("task", "classification"),
                   target=doc["target"], features=tuple(doc["features"]), trainer=TrainerSettings(**doc["trainer"]),
                   project_uri=doc.get("project_uri"),
                   offline=None if offline is None else (offline["start"], offline["stop"]),
                   tuning=doc.get("tuning"), guards=Guards.from_dict(doc.get("guards"), source),
                   **_money(doc.get("money"), source), notify=doc.get("notify"),
                   verify_margin=(doc["verify"]["margin"] if doc.get("verify") else VERIFY_MARGIN),
                   decide_before_labels=bool(doc.get("decide_before_labels", False)),
                   backend=Backend.from_dict(doc.get("backend")), version=version)

    def to_dict(self) -> dict:
        """The JSON document (``policy.json``), as ``tune`` writes it."""
        return {"format": POLICY_FORMAT if self.psi.space else 1, "name": self.name, "policy": self.policy,
                "params": dict(self.params), "kappa": self.kappa, "psi": self.psi.to_dict(), "target": self.target,
                "features": list(self.features), **self._kinds(), "trainer": asdict(self.trainer),
                "project_uri": self.project_uri,
                "offline": None if self.offline is None else {"start": self.offline[0], "stop": self.offline[1]},
                "tuning": None if self.tuning is None else dict(self.tuning),
                **({"guards": self.guards.to_dict()} if self.guards.any else {}),
                **({"money": self.money.to_dict(self.training_seconds)} if self.money else {}),
                **({"notify": dict(self.notify)} if self.notify else {}),
                **({"verify": {"margin": self.verify_margin}} if self.verify_margin != VERIFY_MARGIN else {}),
                **({"decide_before_labels": True} if self.decide_before_labels else {}),
                **({} if self.backend.is_default else {"backend": self.backend.to_dict()})}

    def kappa_at(self, retrain_seconds=()) -> float:
        """κ_t of a batch: the tuned κ, or the money's: the last trainings' wall times priced, those
        of the offline trainings followed by ``retrain_seconds`` (the retrains timed since the tune)."""
        if self.money is None or not self.money.measured:
            return self.kappa
        return self.money.kappa([*self.training_seconds, *retrain_seconds])

    def _kinds(self) -> dict:
        return {} if self.psi.space is None else {"task": self.task, "feature_kinds": self.feature_kinds}

    def with_version(self, version: int) -> "PolicyDocument":
        return replace(self, version=version)
