"""The managed production model ``NAME`` in the Model Registry, its commit point and its tuned policy.

DESIGN.md "MLflow naming":

* registered model ``NAME`` with the production alias (``production`` by default), the commit
  point ``cara.last_batch`` and the hint ``cara.last_run`` as registered-model tags;
* model version tags ``cara.trained_on``, ``cara.trigger``, ``cara.gate`` and
  ``cara.training_run`` (the run holding ``cara/training.json`` and ``cara/losses.parquet`` — the
  training rows with a non-zero loss and their losses — so Ψ̄'s second term never needs the old
  batch; versions of 0.1 have ``cara/misclassified.parquet``, each row a loss of 1);
* experiment ``cara/NAME`` (:attr:`Registry.runs`) with runs told apart by ``cara.run_type``;
* the tuned policy as registered model ``NAME.policy`` @ ``active``: an MLflow "external"
  logged model whose only artifact is ``policy.json`` (JSON, nothing executed at load).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import InputError, SetupError
from ..names import POLICY_ALIAS, PRODUCTION_ALIAS
from .connection import Connection, is_missing
from .predictor import Predictor, load_predictor
from .runs import TAG_BATCH, TAG_RUN_TYPE, RunRecord, Runs

__all__ = ["Registry", "ArtifactsUnreadable", "VersionInfo", "check_model_name", "POLICY_FILE", "TRAINING_INFO",
           "MISCLASSIFIED", "LOSSES_FILE",
           "TAG_LAST_BATCH", "TAG_LAST_RUN", "TAG_ROLLBACK", "TAG_RUN_TYPE", "TAG_BATCH", "TAG_DECISION",
           "TAG_MODEL_VERSION", "TAG_POLICY_VERSION", "TAG_TRAINED_ON", "TAG_TRIGGER", "TAG_GATE",
           "TAG_TRAINING_RUN", "TAG_MODEL_URI", "TAG_TIMELINE_THROUGH", "TAG_LATE"]

POLICY_SUFFIX = ".policy"
POLICY_FILE = "policy.json"


class ArtifactsUnreadable(SetupError):
    """A model's artifacts are registered but cannot be read from this host (another store's folder)."""
TRAINING_INFO = "cara/training.json"
MISCLASSIFIED = "cara/misclassified.parquet"     # 0.1: the rows a classifier got wrong
LOSSES_FILE = "cara/losses.parquet"

TAG_LAST_BATCH = "cara.last_batch"
TAG_ROLLBACK = "cara.rollback_reason"
TAG_DECISION = "cara.decision"
#: Batch-run tag: the version of ``NAME.policy`` that decided the batch (a re-tune changes it).
TAG_POLICY_VERSION = "cara.policy_version"
TAG_MODEL_VERSION = "cara.model_version"
TAG_TRAINED_ON = "cara.trained_on"
TAG_TRIGGER = "cara.trigger"
TAG_GATE = "cara.gate"
TAG_TRAINING_RUN = "cara.training_run"
TAG_MODEL_URI = "cara.model_uri"
TAG_TIMELINE_THROUGH = "cara.timeline_through"
TAG_GUARD = "cara.guard"             # the guard rail that changed the policy's answer (max-age, cooldown, budget)
TAG_GUARDS = "cara.guards"           # on a batch run: the guard rails in force when it was decided
TAG_DEFERRED = "cara.deferred"       # a retrain the budget deferred: "budget"
TAG_DECIDED_AT = "cara.decided_at"   # on a version trained on an earlier batch than the one that decided it
TAG_PROVISIONAL = "cara.provisional"   # on a batch run decided before its labels: true, then false once reconciled
TAG_CATCHUP = "cara.catchup"         # on a reconciled batch run: the retrain its realized Ψ̄ asked for, taken late
TAG_LATE = "cara.late"               # on the batch run of a batch processed after a later one
TAG_VERIFY = "cara.verify"           # on a batch run: the check of the promotion before it (passed/reverted/skipped: …)
TAG_REVERT_FROM = "cara.revert_from"   # on a batch run whose check reverted production: from this version…
TAG_REVERT_TO = "cara.revert_to"       # …back to this one
TAG_REVERT_REASON = "cara.revert_reason"   # …and why (the check's figures)
TAG_PRODUCTION_FROM = "cara.production_from"   # on a batch run that promoted: the version it replaced
#: Registered-model tag ``<batch>:<run_id>``: the batch run of the last commit, written just before
#: ``cara.last_batch`` (a late batch's commit is this tag alone). The run holding the manager state,
#: found by id instead of by a search; trusted only when the run's own tags agree. A hint naming a
#: batch above ``cara.last_batch`` is a commit a crash cut before its last write: the next step
#: finishes it (:func:`cara_mlflow.lifecycle.records.commit_point`).
TAG_LAST_RUN = "cara.last_run"


@dataclass(frozen=True)
class VersionInfo:
    """What the lifecycle needs of a model version."""

    version: int
    source: str
    run_id: str | None
    tags: Mapping[str, str]

    @property
    def trained_on(self) -> int | None:
        value = self.tags.get(TAG_TRAINED_ON)
        return int(value) if value is not None else None

    @property
    def decided_at(self) -> int | None:
        """The batch whose step asked for this version: a batch decided before its labels trains on an
        earlier, labelled one (tag ``cara.decided_at``); otherwise the batch it was trained on."""
        value = self.tags.get(TAG_DECIDED_AT)
        return int(value) if value is not None else self.trained_on


def _version_info(mv) -> VersionInfo:
    return VersionInfo(version=int(mv.version), source=mv.source, run_id=mv.run_id, tags=dict(mv.tags or {}))


def _logged_model_id(model_uri: str) -> str | None:
    """``m-…`` of a ``models:/m-…`` URI (a REST registry needs it beside the source), else None.

    >>> _logged_model_id("models:/m-123"), _logged_model_id("runs:/abc/model")
    ('m-123', None)
    """
    rest = model_uri.removeprefix("models:/")
    return rest if model_uri.startswith("models:/") and rest and "/" not in rest else None


def check_model_name(name) -> str:
    """A registered model name cara-mlflow can manage.

    >>> check_model_name("churn-v2")
    'churn-v2'
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise InputError(f"name: {name!r} is not a valid model name; use letters, digits, '.', '_' or '-'")
    return name


class Registry:
    """The MLflow side of one managed model ``name`` (see the module docstring).

    Parameters
    ----------
    tracking_uri
        Where the runs and the registry live (the registry URI is the same).
    name
        The registered model managed, e.g. ``churn``.
    artifact_root
        Artifact location of the experiment when it is created (the embedded default puts it
        in ``STORE/mlartifacts``); ignored for an existing experiment or a server that proxies
        artifacts.
    production_alias
        Alias that marks the serving version.
    """

    def __init__(self, tracking_uri: str, name: str, *, artifact_root: str | None = None,
                 production_alias: str = PRODUCTION_ALIAS):
        self.name = check_model_name(name)
        self.policy_name = name + POLICY_SUFFIX
        self.production_alias = production_alias
        self._conn = Connection(tracking_uri)
        self._client = self._conn.client
        self.runs = Runs(self._conn, f"cara/{name}", artifact_root)
        #: Called before each write that registers a version, moves production or commits (the
        #: lifecycle sets the store lease's fence): raises to refuse the write.
        self.fence: Callable[[], None] | None = None
        self._last_run_hint: str | None = None   # cara.last_run as last read or written
        self._hint_read = False
        self._described: set[str] = set()          # registered models whose description was checked

    @property
    def tracking_uri(self) -> str:
        return self._conn.tracking_uri

    @property
    def where(self) -> str:
        """The tracking URI with its credentials masked, for messages."""
        return self._conn.where

    def scope(self):
        """Context in which MLflow's global URI is this registry's (:func:`.connection.mlflow_scope`)."""
        return self._conn.scope()

    def check_reachable(self) -> None:
        """Fail with one line naming the (masked) URI when the tracking store cannot be reached."""
        self._conn.check_reachable()

    # -- the managed model ----------------------------------------------------
    def _registered_model(self):
        from mlflow.exceptions import MlflowException

        try:
            return self._client.get_registered_model(self.name)
        except MlflowException as exc:
            if is_missing(exc):
                return None
            raise

    def exists(self) -> bool:
        """Whether the registered model exists."""
        return self._registered_model() is not None

    def model_description(self) -> str:
        """The registered model's description (markdown in the UI): who moves its alias, where
        the policy and the runs are, how to read the decisions."""
        return (f"Managed by cara-mlflow: the alias `{self.production_alias}` is moved by `cara-mlflow step` "
                f"(policy in the registered model `{self.policy_name}`, runs in the experiment "
                f"`{self.runs.experiment_name}`, one `batch-<id>` run per batch). Decision history: "
                f"`cara-mlflow history --name {self.name} --store STORE`; to move production back: "
                f"`cara-mlflow rollback`.")

    def policy_description(self) -> str:
        """The policy model's description: what it holds and who reads it."""
        return (f"Tuned cara-mlflow policy for `{self.name}`: `policy.json` of the version aliased "
                f"`{POLICY_ALIAS}`, written by `cara-mlflow tune` and read by every `cara-mlflow step`.")

    def _ensure_registered_model(self, name: str, description: str | None = None) -> None:
        """Create the registered model ``name`` with ``description``; an existing one without a
        description gets it (once per process), one with a description is left as it is."""
        from mlflow.exceptions import MlflowException

        try:
            self._client.create_registered_model(name, description=description)
            self._described.add(name)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise
            if description:
                self._describe_once(name, description)

    def _describe_once(self, name: str, description: str) -> None:
        """Give ``name`` ``description`` if it has none: a model created before descriptions
        existed (or by hand) gets one, and a description a user wrote is never overwritten."""
        if name in self._described:
            return
        model = self._client.get_registered_model(name)
        if not (model.description or "").strip():
            self._client.update_registered_model(name, description=description)
        self._described.add(name)

    def last_batch(self) -> int | None:
        """The commit point ``cara.last_batch`` (None before ``init``)."""
        model = self._registered_model()
        tags = {} if model is None else model.tags
        self._last_run_hint, self._hint_read = tags.get(TAG_LAST_RUN), True   # with the commit point
        value = tags.get(TAG_LAST_BATCH)
        return None if value is None else int(value)

    def commit(self, batch_id: int, run_id: str | None = None, *, late: bool = False) -> None:
        """The commit point of a step: everything before it is redone by a rerun.

        With ``run_id`` (the batch run committing), the hint ``cara.last_run`` is written first.
        A ``late`` batch (below ``cara.last_batch``) commits by the hint alone: the commit point
        is the highest id processed and never moves back. ``fence``, when set, runs first.
        """
        self._fenced()
        if run_id is not None:
            hint = f"{int(batch_id)}:{run_id}"
            self._client.set_registered_model_tag(self.name, TAG_LAST_RUN, hint)
            self._last_run_hint, self._hint_read = hint, True
        if not late:
            self._client.set_registered_model_tag(self.name, TAG_LAST_BATCH, str(int(batch_id)))

    def _fenced(self) -> None:
        if self.fence is not None:
            self.fence()

    def names_last_run(self, run_id: str) -> bool:
        """Whether ``cara.last_run``, as last read or written here, names ``run_id``."""
        return (self._last_run_hint or "").partition(":")[2] == run_id

    def last_run_batch(self) -> int | None:
        """The batch that ``cara.last_run`` names (the last commit: in order, or a late batch's),
        or None without a usable hint."""
        if not self._hint_read:
            self.last_batch()
        batch = (self._last_run_hint or "").partition(":")[0]
        return int(batch) if batch.isdigit() else None

    def committed_run(self, last: int) -> RunRecord | None:
        """The batch run that committed batch ``last``, found by id through ``cara.last_run``.

        One lookup by primary key, whatever the length of the history. None when the hint is
        missing (a history older than the hint), names another batch (a crash between the hint
        and the commit point) or does not check out; the caller then searches.
        """
        if not self._hint_read:
            self.last_batch()
        batch, _, run_id = (self._last_run_hint or "").partition(":")
        if not run_id or batch != str(int(last)):
            return None
        run = self.runs.get(run_id)
        if run is None or run.experiment_id != self.runs.experiment_id(create=False):
            return None
        if run.run_type != "batch" or run.batch != int(last):
            return None
        return run

    def set_model_tag(self, key: str, value: Any) -> None:
        self._client.set_registered_model_tag(self.name, key, str(value))

    def production(self) -> VersionInfo:
        """The version the production alias points at."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self._client.get_model_version_by_alias(self.name, self.production_alias)
        except MlflowException as exc:
            if is_missing(exc):
                fix = ("put it back with `cara-mlflow rollback --to VERSION --reason TEXT`"
                       if self.last_batch() is not None else "run `cara-mlflow init` first (or check --name)")
                raise SetupError(f"model {self.name!r} has no '{self.production_alias}' alias in "
                                 f"{self.where}: {fix}") from None
            raise
        return _version_info(mv)

    def version(self, version: int) -> VersionInfo:
        from mlflow.exceptions import MlflowException

        try:
            return _version_info(self._client.get_model_version(self.name, str(int(version))))
        except MlflowException as exc:
            if is_missing(exc):
                raise InputError(f"version: model {self.name!r} has no version {version}") from None
            raise

    def versions(self, *, trained_on: int | None = None, decided_at: int | None = None) -> list[VersionInfo]:
        """Versions of the model (optionally those trained on one batch, or decided at one before
        its labels: tag ``cara.decided_at``), newest first."""
        query = f"name='{self.name}'"
        if trained_on is not None:
            query += f" and tags.`{TAG_TRAINED_ON}` = '{int(trained_on)}'"
        if decided_at is not None:
            query += f" and tags.`{TAG_DECIDED_AT}` = '{int(decided_at)}'"
        found = self._client.search_model_versions(query, order_by=["version_number DESC"])
        return [_version_info(mv) for mv in found]

    def register(self, model_uri: str, *, run_id: str | None, tags: Mapping[str, Any]) -> VersionInfo:
        """A new version of the model from a logged model's URI."""
        self._fenced()
        self._ensure_registered_model(self.name, self.model_description())
        with self._conn.scope():
            mv = self._client.create_model_version(self.name, model_uri, run_id=run_id,
                                                   tags={k: str(v) for k, v in tags.items()},
                                                   model_id=_logged_model_id(model_uri))
        return _version_info(mv)

    def tag_version(self, version: int, key: str, value: Any) -> None:
        self._client.set_model_version_tag(self.name, str(int(version)), key, str(value))

    def set_production(self, version: int) -> None:
        """Point the production alias at ``version`` (and describe a model that has no description)."""
        self._fenced()
        self._client.set_registered_model_alias(self.name, self.production_alias, str(int(version)))
        self._describe_once(self.name, self.model_description())

    def model_of_run(self, run_id: str) -> str:
        """The ``models:/<id>`` URI a training run logged (its tag ``cara.model_uri``), checked.

        Only a logged model of this very run is accepted: a tag pointing anywhere else (another
        run's model, a path, a URL) is refused, so nothing outside the registry's own runs can be
        registered and later loaded.
        """
        from mlflow.exceptions import MlflowException

        run = self.runs.get(run_id)
        uri = (run.tags if run else {}).get(TAG_MODEL_URI, "")
        model_id = uri.removeprefix("models:/")
        ok = uri.startswith("models:/") and model_id and "/" not in model_id
        if ok:
            try:
                ok = self._client.get_logged_model(model_id).source_run_id == run_id
            except MlflowException:
                ok = False
        if not ok:
            raise SetupError(f"run {run_id}: tag {TAG_MODEL_URI}={uri[:120]!r} is not a model logged by this "
                             "run; a training run must log its model with mlflow.<flavor>.log_model")
        return uri

    def logged_model_of_run(self, run_id: str) -> str | None:
        """The ``models:/<id>`` URI of the one model a training run logged; ``None`` if it logged
        none. A custom project need not tag anything: its model is found by its source run."""
        models = self._client.search_logged_models(experiment_ids=[self.runs.experiment_id()],
                                                   filter_string=f"source_run_id = '{run_id}'")
        if len(models) > 1:
            raise SetupError(f"run {run_id} logged {len(models)} models; a training project must log exactly "
                             "one (see the README, \"Your own trainer\")")
        return f"models:/{models[0].model_id}" if models else None

    def load_model(self, version: VersionInfo, dst: str) -> Predictor:
        """A version's model through pyfunc (downloaded into ``dst``, which the caller cleans up)."""
        return self.load_model_uri(f"models:/{self.name}/{version.version}", dst)

    def load_model_uri(self, model_uri: str, dst: str) -> Predictor:
        """The model at ``model_uri`` through pyfunc (downloaded into ``dst``, created if missing)."""
        os.makedirs(dst, exist_ok=True)
        with self._conn.scope():
            return load_predictor(model_uri, dst)

    def training_info(self, version: VersionInfo, dst: str) -> tuple[dict, Any]:
        """``training.json`` and the rows of a version's training batch with a non-zero loss
        (their features, target and ``loss``); for versions trained since the expected-loss scale
        (``info["mass_sample"]``), also a seeded sample of its zero-loss rows, every row with its
        ``mass_weight`` in the batch's kernel mass (:func:`cara_mlflow.staleness.mass_sample`)."""
        import pandas as pd

        run_id = version.tags.get(TAG_TRAINING_RUN) or version.run_id
        if not run_id:
            raise SetupError(f"version {version.version} of {self.name!r} has no training run "
                             f"(tag {TAG_TRAINING_RUN}): adopt it with `cara-mlflow init --adopt-version`")
        with open(self.runs.download(run_id, TRAINING_INFO, dst)) as fh:
            info = json.load(fh)
        if "n_nonzero_loss" in info:
            return info, pd.read_parquet(self.runs.download(run_id, LOSSES_FILE, dst))
        rows = pd.read_parquet(self.runs.download(run_id, MISCLASSIFIED, dst))
        return info, rows.assign(loss=1.0)

    # -- the tuned policy -----------------------------------------------------
    def register_policy(self, document: dict, tune_run_id: str) -> int:
        """Store ``policy.json`` as an external logged model, register it as NAME.policy, alias it active."""
        lm = self._client.create_logged_model(self.runs.experiment_id(), name="policy", source_run_id=tune_run_id,
                                              model_type="cara-policy",
                                              params={"policy": document["policy"],
                                                      "kappa": str(document["kappa"])},
                                              tags={"mlflow.model.isExternal": "true"})
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, POLICY_FILE).write_text(json.dumps(document, indent=2, sort_keys=True))
            self._client.log_model_artifacts(lm.model_id, tmp)
        self._client.finalize_logged_model(lm.model_id, "READY")
        self._ensure_registered_model(self.policy_name, self.policy_description())
        with self._conn.scope():
            mv = self._client.create_model_version(self.policy_name, f"models:/{lm.model_id}", run_id=tune_run_id,
                                                   model_id=lm.model_id)
        self._client.set_registered_model_alias(self.policy_name, POLICY_ALIAS, mv.version)
        return int(mv.version)

    def active_policy_text(self) -> tuple[bytes, int]:
        """The raw ``policy.json`` of ``NAME.policy@active`` and that policy version's number."""
        text, version, _ = self.active_policy_source()
        return text, version

    def active_policy_source(self) -> tuple[bytes, int, str | None]:
        """``active_policy_text`` and the id of the tuning run that registered that version."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self._client.get_model_version_by_alias(self.policy_name, POLICY_ALIAS)
        except MlflowException as exc:
            if is_missing(exc):
                raise SetupError(f"no tuned policy {self.policy_name}@{POLICY_ALIAS} in "
                                 f"{self.where}: check --name, or run `cara-mlflow tune` first") from None
            raise
        model_id = mv.source.removeprefix("models:/")
        with tempfile.TemporaryDirectory() as tmp:
            local = self._download_logged_model_file(model_id, POLICY_FILE, tmp)
            return Path(local).read_bytes(), int(mv.version), mv.run_id or None

    def tuned_window(self, artifact: str) -> tuple[bytes, int, bytes | None]:
        """For pooling this model's offline history into another's tuning: the active policy's
        ``policy.json``, its version, and the bytes of its tuning run's ``artifact`` (None if that run
        logged none). :class:`SetupError` when there is no active policy; :class:`ArtifactsUnreadable`
        when its artifacts cannot be read from this host."""
        from mlflow.exceptions import MlflowException

        try:
            text, version, run_id = self.active_policy_source()
            if not run_id or artifact not in self.runs.artifact_paths(run_id, artifact.rsplit("/", 1)[0]):
                return text, version, None
            with tempfile.TemporaryDirectory() as tmp:
                return text, version, Path(self.runs.download(run_id, artifact, tmp)).read_bytes()
        except (MlflowException, OSError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ArtifactsUnreadable(f"{self.policy_name}'s artifacts cannot be read from here ({reason})") from None

    def policy_versions(self) -> list[VersionInfo]:
        """Versions of ``NAME.policy``, newest first."""
        found = self._client.search_model_versions(f"name='{self.policy_name}'", order_by=["version_number DESC"])
        return [_version_info(mv) for mv in found]

    def _download_logged_model_file(self, model_id: str, path: str, dst: str) -> str:
        import mlflow.artifacts

        location = self._client.get_logged_model(model_id).artifact_location.rstrip("/")
        with self._conn.scope():
            return mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/{path}", dst_path=dst)

    # -- UI links -------------------------------------------------------------
    def ui_links(self, base: str) -> dict[str, str]:
        """Links into the MLflow UI: the model, the runs table, the timeline's charts.

        The run links ask for the UI's model-training view: MLflow 3 otherwise opens an
        experiment in its GenAI view, whose pages call batch runs "evaluation runs".
        """
        exp = self.runs.experiment_id(create=False)
        links = {"model": f"{base}/#/models/{self.name}"}
        view = "?workflowType=machine_learning"
        if exp is not None:
            links["runs"] = f"{base}/#/experiments/{exp}/runs{view}"
            timeline = (self.runs.find("timeline", run_name="timeline", max_results=1)
                        or self.runs.find("timeline", max_results=1))
            if timeline:
                links["timeline"] = f"{base}/#/experiments/{exp}/runs/{timeline[0].run_id}/model-metrics{view}"
        return links
