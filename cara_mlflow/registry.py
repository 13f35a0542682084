"""The MLflow adapter: one managed production model ``NAME`` in the Model Registry.

Everything MLflow-specific lives here (DESIGN.md "MLflow naming"):

* registered model ``NAME`` with the production alias (``production`` by default) and the
  commit point ``cara.last_batch`` as a registered-model tag;
* model version tags ``cara.trained_on``, ``cara.trigger``, ``cara.gate`` and
  ``cara.training_run`` (the run holding ``cara/training.json`` and ``cara/misclassified.parquet``,
  so Ψ̄'s second term never needs the old batch);
* experiment ``cara/NAME`` with runs told apart by ``cara.run_type`` (``batch``, ``retrain``,
  ``tune``, ``timeline``);
* the tuned policy as registered model ``NAME.policy`` @ ``active``: an MLflow "external"
  logged model whose only artifact is ``policy.json`` (JSON, nothing executed at load).

The adapter takes the tracking URI explicitly and talks through its own ``MlflowClient``. The
few MLflow calls that read only the global URI (projects, logged-model lookups during
registration, artifact loading) run inside :func:`tracking_uri_scope`, which restores the
previous global state.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .policy_doc import parse_policy_document

PRODUCTION_ALIAS = "production"
POLICY_ALIAS = "active"
POLICY_SUFFIX = ".policy"
POLICY_FILE = "policy.json"
TRAINING_INFO = "cara/training.json"
MISCLASSIFIED = "cara/misclassified.parquet"

TAG_LAST_BATCH = "cara.last_batch"
TAG_ROLLBACK = "cara.rollback_reason"
TAG_RUN_TYPE = "cara.run_type"
TAG_BATCH = "cara.batch"
TAG_DECISION = "cara.decision"
TAG_MODEL_VERSION = "cara.model_version"
TAG_TRAINED_ON = "cara.trained_on"
TAG_TRIGGER = "cara.trigger"
TAG_GATE = "cara.gate"
TAG_TRAINING_RUN = "cara.training_run"
TAG_MODEL_URI = "cara.model_uri"
TAG_TIMELINE_THROUGH = "cara.timeline_through"
#: Registered-model tag ``<batch>:<run_id>``: the batch run that committed ``cara.last_batch``,
#: written just before the commit point. A hint, so a step finds that run by id instead of
#: searching the experiment; trusted only when its batch is ``cara.last_batch`` and the run's own
#: tags agree (a crash between the two writes leaves a hint for an uncommitted batch: ignored).
TAG_LAST_RUN = "cara.last_run"


class RegistryError(RuntimeError):
    """A problem with the tracking server or the registry: one line naming the thing and the fix."""


def default_tracking_uri(store_root: str | os.PathLike) -> str:
    """The embedded default: an absolute sqlite file inside the store, so cron works from anywhere.

    >>> default_tracking_uri("/data/store")
    'sqlite:////data/store/mlflow.db'
    """
    return f"sqlite:///{Path(store_root).resolve() / 'mlflow.db'}"


def default_artifact_root(store_root: str | os.PathLike) -> str:
    """Artifacts of the embedded default: ``STORE/mlartifacts``."""
    return str(Path(store_root).resolve() / "mlartifacts")


def mask_uri(uri: str) -> str:
    """Hide credentials in a URI before it is shown.

    >>> mask_uri("postgresql+psycopg2://mlflow:secret@127.0.0.1:5433/mlflow")
    'postgresql+psycopg2://mlflow:***@127.0.0.1:5433/mlflow'
    >>> mask_uri("https://token@host/x")
    'https://***@host/x'
    """
    uri = re.sub(r"(://[^:/@\s]+):[^@/\s]*@", r"\1:***@", uri)
    return re.sub(r"(://)[^:/@\s]+@", r"\1***@", uri)


@contextlib.contextmanager
def tracking_uri_scope(uri: str) -> Iterator[None]:
    """Set MLflow's global tracking/registry URI (and the env vars children inherit) for a block only."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved_tracking, saved_registry = tracking_utils._tracking_uri, registry_utils._registry_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_tracking)
        registry_utils._registry_uri = saved_registry
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _is_missing(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


@dataclass(frozen=True)
class VersionInfo:
    """What the lifecycle needs of a model version."""

    version: int
    source: str
    run_id: str | None
    tags: dict

    @property
    def trained_on(self) -> int | None:
        value = self.tags.get(TAG_TRAINED_ON)
        return int(value) if value is not None else None


def _version_info(mv) -> VersionInfo:
    return VersionInfo(version=int(mv.version), source=mv.source, run_id=mv.run_id, tags=dict(mv.tags or {}))


class Registry:
    """MLflow adapter for the managed model ``name`` (see the module docstring).

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
        from mlflow import MlflowClient

        if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ValueError(f"name: {name!r} is not a valid model name; use letters, digits, '.', '_' or '-'")
        self.tracking_uri = tracking_uri
        self.name = name
        self.policy_name = name + POLICY_SUFFIX
        self.artifact_root = artifact_root
        self.production_alias = production_alias
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._experiment_id: str | None = None
        self._last_run_hint: str | None = None   # cara.last_run as last read or written
        self._hint_read = False

    # -- connectivity ---------------------------------------------------------
    def scope(self):
        """Context in which MLflow's global URI is this registry's."""
        return tracking_uri_scope(self.tracking_uri)

    def check_reachable(self) -> None:
        """Fail with one line naming the (masked) URI when the tracking store cannot be reached."""
        try:
            self.client.search_experiments(max_results=1)
        except Exception as exc:  # any failure here is "cannot reach": say where, not how
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RegistryError(f"cannot reach the MLflow tracking store at {mask_uri(self.tracking_uri)}: "
                                f"{mask_uri(first[:200])}; check MLFLOW_TRACKING_URI and that the server is up") from None

    # -- experiment and runs --------------------------------------------------
    @property
    def experiment_name(self) -> str:
        return f"cara/{self.name}"

    def experiment_id(self, create: bool = True) -> str | None:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                if not create:
                    return None
                location = None
                if self.artifact_root and not self.tracking_uri.startswith(("http://", "https://")):
                    location = str(Path(self.artifact_root) / self.experiment_name.replace("/", "_"))
                from mlflow.exceptions import MlflowException

                try:
                    self._experiment_id = self.client.create_experiment(self.experiment_name,
                                                                        artifact_location=location)
                except MlflowException:      # created concurrently
                    self._experiment_id = self.client.get_experiment_by_name(self.experiment_name).experiment_id
            else:
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    def start_run(self, run_type: str, *, run_name: str, tags: dict | None = None) -> str:
        # tag values as strings: a sqlite store takes an int, a REST server's protobuf does not
        run = self.client.create_run(self.experiment_id(), run_name=run_name,
                                     tags={TAG_RUN_TYPE: run_type, **{k: str(v) for k, v in (tags or {}).items()}})
        return run.info.run_id

    def find_runs(self, run_type: str, *, batch: int | None = None, statuses: tuple[str, ...] | None = None,
                  max_results: int = 1000, run_name: str | None = None):
        """Runs of one type (optionally for one batch, optionally of one status), newest first.

        A single status is filtered by the server, so ``max_results`` counts matching runs only.
        With ``run_name`` (the name the lifecycle gives such runs: ``batch-<id>``, ``timeline``)
        the server filters on the run's name alone — a plain scan of the runs table, where a
        filter on tags walks every run's tag of that key (on sqlite, several times slower per
        run in the experiment) — and the type and batch tags are checked here; a run renamed by
        hand is then not found.
        """
        exp = self.experiment_id(create=False)
        if exp is None:
            return []
        from mlflow.entities import ViewType

        if run_name is not None:
            query = f"attributes.run_name = '{run_name}'"
        else:
            query = f"tags.`{TAG_RUN_TYPE}` = '{run_type}'"
            if batch is not None:
                query += f" and tags.`{TAG_BATCH}` = '{int(batch)}'"
        if statuses is not None and len(statuses) == 1:
            query += f" and attributes.status = '{statuses[0]}'"
        runs = self.client.search_runs([exp], filter_string=query, run_view_type=ViewType.ACTIVE_ONLY,
                                       max_results=max_results if run_name is None else max(max_results, 100),
                                       order_by=["attributes.start_time DESC"])
        runs = [r for r in runs if (statuses is None or r.info.status in statuses)
                and (run_name is None or (r.data.tags.get(TAG_RUN_TYPE) == run_type
                                          and (batch is None or r.data.tags.get(TAG_BATCH) == str(int(batch)))))]
        return runs[:max_results]

    def get_run(self, run_id: str):
        """The run ``run_id``, or None when it does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException as exc:
            if _is_missing(exc):
                return None
            raise

    def log_metrics(self, run_id: str, metrics: dict[str, float], *, step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_dict(self, run_id: str, obj: Any, path: str) -> None:
        self.client.log_dict(run_id, obj, path)

    def load_run_json(self, run_id: str, path: str) -> Any:
        with tempfile.TemporaryDirectory() as tmp:
            local = self.client.download_artifacts(run_id, path, tmp)
            with open(local) as fh:
                return json.load(fh)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    # -- the managed model ----------------------------------------------------
    def registered_model(self):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(self.name)
        except MlflowException as exc:
            if _is_missing(exc):
                return None
            raise

    def ensure_registered_model(self, description: str = "") -> None:
        from mlflow.exceptions import MlflowException

        if self.registered_model() is None:
            try:
                self.client.create_registered_model(self.name, description=description or None)
            except MlflowException as exc:
                if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise

    def last_batch(self) -> int | None:
        model = self.registered_model()
        tags = {} if model is None else model.tags
        self._last_run_hint, self._hint_read = tags.get(TAG_LAST_RUN), True   # with the commit point
        value = tags.get(TAG_LAST_BATCH)
        return None if value is None else int(value)

    def commit(self, batch_id: int, run_id: str | None = None) -> None:
        """The commit point of a step: everything before it is redone by a rerun.

        With ``run_id`` (the batch run committing), the hint ``cara.last_run`` is written first.
        """
        if run_id is not None:
            hint = f"{int(batch_id)}:{run_id}"
            self.client.set_registered_model_tag(self.name, TAG_LAST_RUN, hint)
            self._last_run_hint, self._hint_read = hint, True
        self.client.set_registered_model_tag(self.name, TAG_LAST_BATCH, str(int(batch_id)))

    def committed_run(self, last: int):
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
        run = self.get_run(run_id)
        if run is None or run.info.experiment_id != self.experiment_id(create=False):
            return None
        tags = run.data.tags
        if tags.get(TAG_RUN_TYPE) != "batch" or tags.get(TAG_BATCH) != str(int(last)):
            return None
        return run

    def set_model_tag(self, key: str, value: str) -> None:
        self.client.set_registered_model_tag(self.name, key, str(value))

    def production(self) -> VersionInfo:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(self.name, self.production_alias)
        except MlflowException as exc:
            if _is_missing(exc):
                fix = ("put it back with `cara-mlflow rollback --to VERSION --reason TEXT`"
                       if self.last_batch() is not None else "run `cara-mlflow init` first (or check --name)")
                raise RegistryError(f"model {self.name!r} has no '{self.production_alias}' alias in "
                                    f"{mask_uri(self.tracking_uri)}: {fix}") from None
            raise
        return _version_info(mv)

    def version(self, version: int) -> VersionInfo:
        from mlflow.exceptions import MlflowException

        try:
            return _version_info(self.client.get_model_version(self.name, str(int(version))))
        except MlflowException as exc:
            if _is_missing(exc):
                raise ValueError(f"version: model {self.name!r} has no version {version}") from None
            raise

    def versions(self, *, trained_on: int | None = None) -> list[VersionInfo]:
        query = f"name='{self.name}'"
        if trained_on is not None:
            query += f" and tags.`{TAG_TRAINED_ON}` = '{int(trained_on)}'"
        found = self.client.search_model_versions(query, order_by=["version_number DESC"])
        return [_version_info(mv) for mv in found]

    def register(self, model_uri: str, *, run_id: str | None, tags: dict[str, Any]) -> VersionInfo:
        self.ensure_registered_model()
        with self.scope():
            mv = self.client.create_model_version(self.name, model_uri, run_id=run_id,
                                                  tags={k: str(v) for k, v in tags.items()},
                                                  model_id=_logged_model_id(model_uri))
        return _version_info(mv)

    def tag_version(self, version: int, key: str, value: Any) -> None:
        self.client.set_model_version_tag(self.name, str(int(version)), key, str(value))

    def set_production(self, version: int) -> None:
        self.client.set_registered_model_alias(self.name, self.production_alias, str(int(version)))

    def model_of_run(self, run_id: str) -> str:
        """The ``models:/<id>`` URI a training run logged (its tag ``cara.model_uri``), checked.

        Only a logged model of this very run is accepted: a tag pointing anywhere else (another
        run's model, a path, a URL) is refused, so nothing outside the registry's own runs can be
        registered and later loaded.
        """
        from mlflow.exceptions import MlflowException

        uri = self.client.get_run(run_id).data.tags.get(TAG_MODEL_URI, "")
        model_id = uri.removeprefix("models:/")
        ok = uri.startswith("models:/") and model_id and "/" not in model_id
        if ok:
            try:
                ok = self.client.get_logged_model(model_id).source_run_id == run_id
            except MlflowException:
                ok = False
        if not ok:
            raise RegistryError(f"run {run_id}: tag {TAG_MODEL_URI}={uri[:120]!r} is not a model logged by this "
                                "run; a training run must log its model with mlflow.<flavor>.log_model")
        return uri

    def load_model(self, version: VersionInfo, dst: str):
        """Load a version's sklearn model (downloaded into ``dst``, which the caller cleans up)."""
        import mlflow.sklearn

        with self.scope():
            return mlflow.sklearn.load_model(f"models:/{self.name}/{version.version}", dst_path=dst)

    def training_info(self, version: VersionInfo, dst: str) -> tuple[dict, "Any"]:
        """``training.json`` and the misclassified rows of a version's training batch."""
        import pandas as pd

        run_id = version.tags.get(TAG_TRAINING_RUN) or version.run_id
        if not run_id:
            raise RegistryError(f"version {version.version} of {self.name!r} has no training run "
                                f"(tag {TAG_TRAINING_RUN}): adopt it with `cara-mlflow init --adopt-version`")
        info_path = self.client.download_artifacts(run_id, TRAINING_INFO, dst)
        rows_path = self.client.download_artifacts(run_id, MISCLASSIFIED, dst)
        with open(info_path) as fh:
            info = json.load(fh)
        return info, pd.read_parquet(rows_path)

    # -- the tuned policy -----------------------------------------------------
    def register_policy(self, document: dict, tune_run_id: str) -> int:
        """Store ``policy.json`` as an external logged model, register it as NAME.policy, alias it active."""
        from mlflow.exceptions import MlflowException

        lm = self.client.create_logged_model(self.experiment_id(), name="policy", source_run_id=tune_run_id,
                                             model_type="cara-policy",
                                             params={"policy": document["policy"],
                                                     "kappa": str(document["kappa"])},
                                             tags={"mlflow.model.isExternal": "true"})
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, POLICY_FILE), "w") as fh:
                json.dump(document, fh, indent=2, sort_keys=True)
            self.client.log_model_artifacts(lm.model_id, tmp)
        self.client.finalize_logged_model(lm.model_id, "READY")
        try:
            self.client.create_registered_model(self.policy_name, description=f"tuned CARA policy for {self.name}")
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise
        with self.scope():
            mv = self.client.create_model_version(self.policy_name, f"models:/{lm.model_id}", run_id=tune_run_id,
                                                  model_id=lm.model_id)
        self.client.set_registered_model_alias(self.policy_name, POLICY_ALIAS, mv.version)
        return int(mv.version)

    def active_policy(self) -> dict:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(self.policy_name, POLICY_ALIAS)
        except MlflowException as exc:
            if _is_missing(exc):
                raise RegistryError(f"no tuned policy {self.policy_name}@{POLICY_ALIAS} in "
                                    f"{mask_uri(self.tracking_uri)}: run `cara-mlflow tune` first") from None
            raise
        model_id = mv.source.removeprefix("models:/")
        with tempfile.TemporaryDirectory() as tmp:
            local = self._download_logged_model_file(model_id, POLICY_FILE, tmp)
            with open(local, "rb") as fh:
                document = parse_policy_document(fh.read(), f"{self.policy_name}@{POLICY_ALIAS} ({POLICY_FILE})")
        document["_version"] = int(mv.version)
        return document

    def _download_logged_model_file(self, model_id: str, path: str, dst: str) -> str:
        import mlflow.artifacts

        location = self.client.get_logged_model(model_id).artifact_location.rstrip("/")
        with self.scope():
            return mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/{path}", dst_path=dst)

    # -- UI links -------------------------------------------------------------
    def ui_links(self, base: str) -> dict[str, str]:
        exp = self.experiment_id(create=False)
        links = {"model": f"{base}/#/models/{self.name}"}
        if exp is not None:
            links["runs"] = f"{base}/#/experiments/{exp}/runs"
            timeline = (self.find_runs("timeline", run_name="timeline", max_results=1)
                        or self.find_runs("timeline", max_results=1))
            if timeline:
                links["timeline"] = f"{base}/#/experiments/{exp}/runs/{timeline[0].info.run_id}/model-metrics"
        return links


def _logged_model_id(model_uri: str) -> str | None:
    """``m-…`` of a ``models:/m-…`` URI (a REST registry needs it beside the source), else None.

    >>> _logged_model_id("models:/m-123"), _logged_model_id("runs:/abc/model")
    ('m-123', None)
    """
    rest = model_uri.removeprefix("models:/")
    return rest if model_uri.startswith("models:/") and rest and "/" not in rest else None


@contextlib.contextmanager
def child_environment(**extra: str) -> Iterator[None]:
    """The environment a retrain project's child gets, restored afterwards.

    Our interpreter's directory first on PATH (cron's PATH often lacks it and MLflow runs the
    project's ``python`` through bash), plus ``extra`` variables.
    """
    keys = ["PATH", *extra]
    saved = {k: os.environ.get(k) for k in keys}
    bindir = os.path.dirname(sys.executable)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
