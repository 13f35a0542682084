"""The manager state (``policy_state.json`` on every batch run), typed and checked.

What a step carries to the next: the policy's JSON state, the cumulative cost, the cooldown, the
production version in use and the last retrain (DESIGN.md "Policy state and costs"), and the
stream's clock: the position of the last batch processed in order (counts, never id differences),
the id ranges passed over with no batch (``missing``), the late batches processed since, and
whether every id so far is a ``YYYYMMDD`` date. The state is read back from the committed batch
run, so a step can run on any machine, and a step's cost does not grow with the history.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

from .batch_ids import is_date_id
from .errors import InputError
from .policies import Policy, policy_from_dict

__all__ = ["STATE_FILE", "LastRetrain", "PendingCheck", "Provisional", "Observed", "ManagerState"]

STATE_FILE = "policy_state.json"
_FIELDS = ("policy", "cumulative_cost", "cooldown_left", "model_version", "last_retrain", "position", "missing",
           "late", "dated", "position_from", "model_position", "retrain_attempts",
           "training_seconds", "timed_policy", "spend", "recent_spend", "verify",
           "provisional", "policy_base", "observed", "estimate_errors")
_LEGACY = ("cooldown_until",)      # written before counts replaced id differences: converted on reading


@dataclass(frozen=True)
class LastRetrain:
    """The last retrain attempt: its batch, the version it registered and its gate outcome."""

    batch: int
    version: int
    gate: str

    def to_dict(self) -> dict:
        return {"batch": self.batch, "version": self.version, "gate": self.gate}


@dataclass(frozen=True)
class PendingCheck:
    """A promotion whose check waits for the next batch in order (:mod:`cara_mlflow.verify`): the
    version promoted, the version it replaced, the batch that promoted it, and why it will not be
    checked (``skip``; e.g. a schema promotion) or None."""

    version: int
    replaced: int
    batch: int
    skip: str | None = None

    def to_dict(self) -> dict:
        return {"version": self.version, "replaced": self.replaced, "batch": self.batch, "skip": self.skip}

    @classmethod
    def from_dict(cls, data) -> "PendingCheck | None":
        return None if data is None else cls(int(data["version"]), int(data["replaced"]), int(data["batch"]),
                                             data.get("skip"))


@dataclass(frozen=True)
class Provisional:
    """A batch decided on an estimated Ψ̄ (before its labels), waiting to be reconciled: the version
    that was in use at it, the estimate, its position, and whether it paid staleness (a Keep: its
    cost is corrected to the realized Ψ̄; a retrain paid κ)."""

    batch: int
    version: int
    estimate: float
    t: int
    kept: bool

    def to_dict(self) -> dict:
        return {"batch": self.batch, "version": self.version, "estimate": self.estimate, "t": self.t,
                "kept": self.kept}


@dataclass(frozen=True)
class Observed:
    """One observation the policy decided on since its last reset (kept while any is estimated, so
    the policy can be replayed with realized values): the batch, its position, Ψ̄, κ, whether Ψ̄
    was an estimate, and whether the policy itself asked for a retrain."""

    batch: int
    t: int
    psi_bar: float
    kappa: float
    estimated: bool
    wanted: bool

    def to_dict(self) -> dict:
        return {"batch": self.batch, "t": self.t, "psi_bar": self.psi_bar, "kappa": self.kappa,
                "estimated": self.estimated, "wanted": self.wanted}


def _records(data, fields: dict) -> bool:
    """A list of objects with exactly ``fields`` (name → check)."""
    return isinstance(data, list) and all(isinstance(d, dict) and set(d) == set(fields)
                                          and all(check(d[k]) for k, check in fields.items()) for d in data)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


_PROVISIONAL = {"batch": lambda v: _is_count(v), "version": lambda v: _is_int(v), "estimate": lambda v: _is_real(v),
                "t": lambda v: _is_count(v), "kept": lambda v: isinstance(v, bool)}
_OBSERVED = {"batch": lambda v: _is_count(v), "t": lambda v: _is_count(v), "psi_bar": lambda v: _is_real(v),
             "kappa": lambda v: _is_real(v), "estimated": lambda v: isinstance(v, bool),
             "wanted": lambda v: isinstance(v, bool)}


def _is_check(data) -> bool:
    return data is None or (isinstance(data, dict) and set(data) == {"version", "replaced", "batch", "skip"}
                            and all(_is_int(data[k]) for k in ("version", "replaced", "batch"))
                            and (data["skip"] is None or isinstance(data["skip"], str)))


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_count(value) -> bool:
    return _is_int(value) and value >= 0


def _checks(data: dict) -> dict[str, bool]:
    """Each field's check (absent optional fields pass)."""
    last, missing, late = data.get("last_retrain"), data.get("missing", []), data.get("late", [])
    return {"cumulative_cost": isinstance(data.get("cumulative_cost", 0.0), numbers.Real),
            "model_version": _is_int(data["model_version"]),
            "cooldown_until": data.get("cooldown_until") is None or _is_int(data["cooldown_until"]),
            "cooldown_left": _is_count(data.get("cooldown_left", 0)),
            "position": _is_count(data.get("position", 0)),
            "missing": isinstance(missing, list) and all(isinstance(r, list) and len(r) == 2
                                                         and all(map(_is_count, r)) for r in missing),
            "late": isinstance(late, list) and all(map(_is_count, late)),
            "dated": isinstance(data.get("dated", False), bool),
            "position_from": data.get("position_from") is None or _is_count(data["position_from"]),
            "model_position": data.get("model_position") is None or _is_count(data["model_position"]),
            "retrain_attempts": isinstance(data.get("retrain_attempts", []), list)
            and all(map(_is_count, data.get("retrain_attempts", []))),
            "training_seconds": isinstance(data.get("training_seconds", []), list)
            and all(isinstance(v, numbers.Real) and v > 0 for v in data.get("training_seconds", [])),
            "timed_policy": data.get("timed_policy") is None or _is_count(data["timed_policy"]),
            "spend": isinstance(data.get("spend", 0.0), numbers.Real),
            "recent_spend": isinstance(data.get("recent_spend", []), list)
            and all(isinstance(r, list) and len(r) == 2 and all(isinstance(v, numbers.Real) for v in r)
                    for r in data.get("recent_spend", [])),
            "verify": _is_check(data.get("verify")),
            "provisional": _records(data.get("provisional", []), _PROVISIONAL),
            "observed": _records(data.get("observed", []), _OBSERVED),
            "policy_base": data.get("policy_base") is None or isinstance(data["policy_base"], dict),
            "estimate_errors": isinstance(data.get("estimate_errors", []), list)
            and all(isinstance(r, list) and len(r) == 3 and _is_count(r[0]) and _is_real(r[1]) and _is_real(r[2])
                    for r in data.get("estimate_errors", [])),
            "last_retrain": last is None or (isinstance(last, dict) and set(last) == {"batch", "version", "gate"}
                                             and _is_int(last["batch"]) and _is_int(last["version"]))}


@dataclass(frozen=True)
class ManagerState:
    """The lifecycle's state after a batch.

    ``policy`` is the policy's own JSON (``Policy.to_dict()``); :meth:`make_policy` rebuilds it.

    >>> from cara_mlflow.policies import make_policy
    >>> s = ManagerState.fresh(make_policy("cara-ct", tau_cum=2.0), version=1, kappa=5.0, batch=4)
    >>> s.cumulative_cost, s.model_version, s.last_retrain, s.position
    (5.0, 1, LastRetrain(batch=4, version=1, gate='off'), 4)
    >>> ManagerState.from_json(json.dumps(s.to_dict())) == s
    True

    A state written before positions existed counts from its batch's id, as the steps then did:

    >>> old = {"policy": s.policy, "model_version": 1, "cooldown_until": 9}
    >>> new = ManagerState.from_dict(old, batch=7)
    >>> new.position, new.cooldown_left, new.dated
    (7, 2, False)
    """

    policy: Mapping[str, Any]
    cumulative_cost: float
    model_version: int
    cooldown_left: int = 0                        # batches in order without a retrain attempt, still to come
    last_retrain: LastRetrain | None = None
    position: int = 0                             # CARA-P's t of the last batch processed in order
    missing: tuple[tuple[int, int], ...] = ()     # id ranges passed over with no batch (where late ones land)
    late: tuple[int, ...] = ()                    # late batches processed, in the order they were
    dated: bool = False                           # every id processed so far is a YYYYMMDD date
    position_from: int | None = None              # the offline window start the position counts from
    model_position: int | None = None             # the position of the batch the model in use was trained on
    retrain_attempts: tuple[int, ...] = ()        # positions of the last retrain attempts (the budget's)
    training_seconds: tuple[float, ...] = ()      # wall times of the last trainings (a measured retrain cost)
    timed_policy: int | None = None               # the policy version those trainings ran under
    spend: float = 0.0                            # money spent on batches decided with an error cost
    recent_spend: tuple[tuple[float, float], ...] = ()   # the last such batches' (staleness, retrain) money
    verify: PendingCheck | None = None            # a promotion to check at the next batch in order
    provisional: tuple[Provisional, ...] = ()     # batches decided before their labels, to reconcile
    policy_base: Mapping[str, Any] | None = None  # the policy at its last reset, while `observed` is kept
    observed: tuple[Observed, ...] = ()           # what the policy decided on since (replayed when labels land)
    estimate_errors: tuple[tuple[int, float, float], ...] = ()   # the last reconciled (batch, estimate, realized)

    @classmethod
    def fresh(cls, policy: Policy, *, version: int, kappa: float, batch: int,
              position: int | None = None, training_seconds: tuple[float, ...] = (),
              timed_policy: int | None = None, error_cost: float | None = None) -> "ManagerState":
        """The state after ``init``: the first model (trained or adopted on ``batch``) cost κ;
        ``position`` is the init batch's count in the stream (default: its id, as on the paper's);
        ``training_seconds``: the trainings timed so far (a measured retrain cost's), under the
        policy version ``timed_policy``; with ``error_cost``, the first model's cost is money spent."""
        spent = () if error_cost is None else ((0.0, float(kappa) * error_cost),)
        return cls(policy=policy.to_dict(), cumulative_cost=float(kappa), model_version=int(version),
                   training_seconds=tuple(training_seconds), timed_policy=timed_policy,
                   spend=sum(b for _, b in spent), recent_spend=spent,
                   last_retrain=LastRetrain(int(batch), int(version), "off"),
                   position=int(batch if position is None else position), dated=is_date_id(int(batch)),
                   model_position=int(batch if position is None else position))

    def counted_from(self, first: int, position: int) -> "ManagerState":
        """The state with its position counted from the offline window starting at ``first`` (the
        model's age keeps its count: it moves by as much as the position)."""
        shift = int(position) - self.position
        moved = None if self.model_position is None else max(0, self.model_position + shift)
        attempts = tuple(max(0, a + shift) for a in self.retrain_attempts)
        return ManagerState(**{**self.__dict__, "position": int(position), "position_from": int(first),
                               "model_position": moved, "retrain_attempts": attempts})

    @classmethod
    def from_json(cls, text: str | bytes, source: str = STATE_FILE, *, batch: int | None = None) -> "ManagerState":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{source}: not valid JSON ({exc}); the batch run's state was edited by hand") from None
        return cls.from_dict(data, source, batch=batch)

    @classmethod
    def from_dict(cls, data: Any, source: str = STATE_FILE, *, batch: int | None = None) -> "ManagerState":
        """A checked state from its decoded JSON (:class:`InputError` naming the field if not valid).

        ``batch``: the id of the batch whose run stored it, which converts a state written before
        positions (``cooldown_until``, an id) into counts.
        """
        allowed = set(_FIELDS) | set(_LEGACY)
        if not isinstance(data, dict) or not set(data) <= allowed or not {"policy", "model_version"} <= set(data):
            raise InputError(f"{source}: expected an object with the fields {', '.join(_FIELDS)}")
        for name, good in _checks(data).items():
            if not good:
                raise InputError(f"{source}: field {name!r} is {data.get(name)!r:.80}; not what a step writes")
        policy_from_dict(data["policy"])               # the policy's own checks
        last = data.get("last_retrain")
        base = batch if batch is not None else 0
        until = data.get("cooldown_until")
        return cls(policy=data["policy"], cumulative_cost=float(data.get("cumulative_cost", 0.0)),
                   model_version=int(data["model_version"]),
                   cooldown_left=int(data.get("cooldown_left", 0 if until is None else max(0, until - base))),
                   last_retrain=None if last is None else LastRetrain(last["batch"], last["version"], last["gate"]),
                   position=int(data.get("position", base)),
                   missing=tuple((int(a), int(b)) for a, b in data.get("missing", ())),
                   late=tuple(int(i) for i in data.get("late", ())),
                   dated=bool(data.get("dated", batch is not None and is_date_id(batch))),
                   position_from=data.get("position_from"), model_position=data.get("model_position"),
                   retrain_attempts=tuple(int(a) for a in data.get("retrain_attempts", ())),
                   training_seconds=tuple(float(v) for v in data.get("training_seconds", ())),
                   timed_policy=data.get("timed_policy"),
                   spend=float(data.get("spend", 0.0)),
                   recent_spend=tuple((float(a), float(b)) for a, b in data.get("recent_spend", ())),
                   verify=PendingCheck.from_dict(data.get("verify")),
                   provisional=tuple(Provisional(**d) for d in data.get("provisional", ())),
                   policy_base=data.get("policy_base"),
                   observed=tuple(Observed(**d) for d in data.get("observed", ())),
                   estimate_errors=tuple((int(b), float(e), float(r)) for b, e, r in data.get("estimate_errors", ())))

    def to_dict(self) -> dict:
        """The JSON stored as ``policy_state.json``."""
        return {"policy": dict(self.policy), "cumulative_cost": self.cumulative_cost,
                "cooldown_left": self.cooldown_left, "model_version": self.model_version,
                "last_retrain": None if self.last_retrain is None else self.last_retrain.to_dict(),
                "position": self.position, "missing": [list(r) for r in self.missing], "late": list(self.late),
                "dated": self.dated, "position_from": self.position_from, "model_position": self.model_position,
                "retrain_attempts": list(self.retrain_attempts), "training_seconds": list(self.training_seconds),
                "timed_policy": self.timed_policy,
                "spend": self.spend, "recent_spend": [list(r) for r in self.recent_spend],
                "verify": None if self.verify is None else self.verify.to_dict(),
                **self._before_labels()}

    def _before_labels(self) -> dict:
        """The fields of decisions before labels, written only when in use (older readers and
        states stay as they were)."""
        if not (self.provisional or self.observed or self.estimate_errors or self.policy_base):
            return {}
        return {"provisional": [p.to_dict() for p in self.provisional],
                "policy_base": None if self.policy_base is None else dict(self.policy_base),
                "observed": [o.to_dict() for o in self.observed],
                "estimate_errors": [list(r) for r in self.estimate_errors]}

    def model_age(self, t: int) -> int:
        """Batches processed in order between the model in use's training batch and position ``t``
        (a state from before ages were kept counts from its own position)."""
        return t - (self.position if self.model_position is None else self.model_position)

    def retrain_seconds(self, policy_version: int | None) -> tuple[float, ...]:
        """The trainings timed under ``policy_version`` (a re-tune starts from its own offline ones)."""
        return self.training_seconds if self.timed_policy == policy_version else ()

    def make_policy(self) -> Policy:
        """The policy, with its state, as the last step left it."""
        return policy_from_dict(self.policy)
