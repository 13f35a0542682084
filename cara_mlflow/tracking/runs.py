"""Runs of one experiment, returned as typed :class:`RunRecord` values (never a raw MLflow ``Run``).

The lifecycle's runs are told apart by the tag ``cara.run_type`` and found by their names
(``batch-<id>``, ``timeline``): DESIGN.md "MLflow naming".
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .connection import Connection, is_missing, is_remote

__all__ = ["RunRecord", "Runs", "TAG_RUN_TYPE", "TAG_BATCH", "TAG_PARENT", "TAG_NOTE", "one_line"]

TAG_RUN_TYPE = "cara.run_type"
TAG_BATCH = "cara.batch"
#: MLflow's own tags: the UI nests a run under the run this names, and shows the note as the
#: run's description (markdown).
TAG_PARENT = "mlflow.parentRunId"
TAG_NOTE = "mlflow.note.content"


@dataclass(frozen=True)
class RunRecord:
    """What cara-mlflow reads of a run."""

    run_id: str
    name: str
    status: str                      # RUNNING | FINISHED | FAILED | KILLED | SCHEDULED
    experiment_id: str
    start_time: int
    tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    end_time: int = 0                # ms since the epoch; 0 while running

    @property
    def run_type(self) -> str | None:
        return self.tags.get(TAG_RUN_TYPE)

    @property
    def batch(self) -> int | None:
        value = self.tags.get(TAG_BATCH)
        return None if value is None else int(value)


def _record(run) -> RunRecord:
    info, data = run.info, run.data
    return RunRecord(run_id=info.run_id, name=info.run_name or "", status=info.status,
                     experiment_id=info.experiment_id, start_time=int(info.start_time or 0),
                     tags=dict(data.tags), metrics=dict(data.metrics), params=dict(data.params),
                     end_time=int(info.end_time or 0))


class Runs:
    """The runs of experiment ``experiment_name`` (created on first write).

    ``artifact_root``: where a new experiment keeps its artifacts (the embedded default puts them
    in ``STORE/mlartifacts``); ignored by a server, which proxies artifacts itself.
    """

    def __init__(self, connection: Connection, experiment_name: str, artifact_root: str | None = None):
        self._conn = connection
        self._client = connection.client
        self.experiment_name = experiment_name
        self.artifact_root = artifact_root
        self._experiment_id: str | None = None

    def experiment_id(self, create: bool = True) -> str | None:
        """The experiment's id; None when it does not exist and ``create`` is false."""
        if self._experiment_id is None:
            exp = self._client.get_experiment_by_name(self.experiment_name)
            if exp is not None:
                self._experiment_id = exp.experiment_id
            elif create:
                self._experiment_id = self._create_experiment()
        return self._experiment_id

    def _create_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        location = None
        if self.artifact_root and not is_remote(self._conn.tracking_uri):
            location = str(Path(self.artifact_root) / self.experiment_name.replace("/", "_"))
        try:
            return self._client.create_experiment(self.experiment_name, artifact_location=location)
        except MlflowException:      # created concurrently
            return self._client.get_experiment_by_name(self.experiment_name).experiment_id

    # -- reading -------------------------------------------------------------
    def find(self, run_type: str, *, batch: int | None = None, statuses: tuple[str, ...] | None = None,
             max_results: int = 1000, run_name: str | None = None) -> list[RunRecord]:
        """Active runs of one type (optionally for one batch, of some statuses), newest first.

        A single status is filtered by the server, so ``max_results`` counts matching runs only.
        With ``run_name`` (the name the lifecycle gives such runs: ``batch-<id>``, ``timeline``)
        the server filters on the run's name alone — a plain scan of the runs table, where a
        filter on tags walks every run's tag of that key — and the type and batch tags are
        checked here; a run renamed by hand is then not found.
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
        found = self._client.search_runs([exp], filter_string=query, run_view_type=ViewType.ACTIVE_ONLY,
                                         max_results=max_results if run_name is None else max(max_results, 100),
                                         order_by=["attributes.start_time DESC"])
        runs = [_record(r) for r in found]
        runs = [r for r in runs if (statuses is None or r.status in statuses)
                and (run_name is None or (r.run_type == run_type and (batch is None or r.batch == int(batch))))]
        return runs[:max_results]

    def with_param(self, key: str, value: str, max_results: int = 100) -> list[RunRecord]:
        """Active runs whose parameter ``key`` is ``value``, newest first (a run MLflow created
        for a submitted project, found before our tags are on it)."""
        exp = self.experiment_id(create=False)
        if exp is None:
            return []
        from mlflow.entities import ViewType

        quoted = value.replace("'", "\\'")
        found = self._client.search_runs([exp], filter_string=f"params.`{key}` = '{quoted}'",
                                         run_view_type=ViewType.ACTIVE_ONLY, max_results=max_results,
                                         order_by=["attributes.start_time DESC"])
        return [_record(r) for r in found]

    def all(self, max_results: int = 5000) -> list[RunRecord]:
        """Every run of the experiment, deleted ones included, newest first."""
        exp = self.experiment_id(create=False)
        if exp is None:
            return []
        from mlflow.entities import ViewType

        found = self._client.search_runs([exp], run_view_type=ViewType.ALL, max_results=max_results,
                                         order_by=["attributes.start_time DESC"])
        return [_record(r) for r in found]

    def get(self, run_id: str) -> RunRecord | None:
        """The run ``run_id``, or None when it does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            return _record(self._client.get_run(run_id))
        except MlflowException as exc:
            if is_missing(exc):
                return None
            raise

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """Every (step, value) of one metric, in the order logged."""
        return [(m.step, m.value) for m in self._client.get_metric_history(run_id, key)]

    def load_json(self, run_id: str, path: str) -> Any:
        """A JSON artifact of a run."""
        with tempfile.TemporaryDirectory() as tmp:
            local = self._client.download_artifacts(run_id, path, tmp)
            with open(local) as fh:
                return json.load(fh)

    def download(self, run_id: str, path: str, dst: str) -> str:
        """An artifact of a run, downloaded into ``dst``; returns its local path."""
        return self._client.download_artifacts(run_id, path, dst)

    def artifact_paths(self, run_id: str, path: str | None = None) -> list[str]:
        return [a.path for a in self._client.list_artifacts(run_id, path)]

    # -- writing -------------------------------------------------------------
    def start(self, run_type: str, *, run_name: str, tags: Mapping[str, Any] | None = None) -> str:
        """A new RUNNING run tagged ``cara.run_type``; returns its id."""
        # tag values as strings: a sqlite store takes an int, a REST server's protobuf does not
        run = self._client.create_run(self.experiment_id(), run_name=run_name,
                                      tags={TAG_RUN_TYPE: run_type, **{k: str(v) for k, v in (tags or {}).items()}})
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int = 0,
                    timestamp_ms: int | None = None) -> None:
        """Metric values at ``step``, stamped ``timestamp_ms`` (default: now)."""
        self.log_points(run_id, [(k, v, step) for k, v in metrics.items()], timestamp_ms=timestamp_ms)

    def log_points(self, run_id: str, points: Iterable[tuple[str, float, int]], *,
                   timestamp_ms: int | None = None) -> None:
        """Metric values ``(key, value, step)``, in as few requests as MLflow allows."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
        items = [Metric(k, float(v), stamp, int(step)) for k, v, step in points]
        for start in range(0, len(items), 900):          # a REST log_batch takes 1000 at most
            self._client.log_batch(run_id, metrics=items[start:start + 900])

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Params as strings of at most 500 characters (MLflow's limit)."""
        from mlflow.entities import Param

        self._client.log_batch(run_id, params=[Param(k, _short(str(v))) for k, v in params.items()])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def delete_tag(self, run_id: str, key: str) -> None:
        """Remove a tag (one that named something since removed, so the run does not point at nothing)."""
        self._client.delete_tag(run_id, key)

    def set_description(self, run_id: str, text: str) -> None:
        """The run's description in the MLflow UI (the tag ``mlflow.note.content``): ``text`` on
        one line, cut at 300 characters, so the runs table and the run page stay readable."""
        self.set_tags(run_id, {TAG_NOTE: one_line(text, 300)})

    def log_dict(self, run_id: str, obj: Any, path: str) -> None:
        self._client.log_dict(run_id, obj, path)

    def log_files(self, run_id: str, files: Mapping[str, bytes], artifact_path: str) -> None:
        """Files (name → bytes) as artifacts under ``artifact_path``."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in files.items():
                Path(tmp, name).write_bytes(content)
            self._client.log_artifacts(run_id, tmp, artifact_path)

    def log_training_dataset(self, run_id: str, frame, *, source: str, target: str, name: str) -> None:
        """``frame`` as the run's dataset input ``name`` (context ``training``), unless it is there."""
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag

        if any(d.dataset.name == name for d in self._client.get_run(run_id).inputs.dataset_inputs):
            return
        dataset = mlflow.data.from_pandas(frame, source=source, targets=target, name=name)
        entity = dataset._to_mlflow_entity()   # the public path, mlflow.log_input, needs an active run
        self._client.log_inputs(run_id, [DatasetInput(entity, [InputTag("mlflow.data.context", "training")])])

    def log_directory(self, run_id: str, local_dir: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._client.log_artifacts(run_id, str(local_dir), artifact_path)

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self._client.set_terminated(run_id, status)


def one_line(text: str, limit: int) -> str:
    """``text`` with its whitespace runs (newlines too) made one space, cut to ``limit``
    characters at a word when one is near, an ellipsis marking the cut.

    >>> one_line("Kept v3:\\n  Ψ̄=0.41 < τ=1.2.", 80)
    'Kept v3: Ψ̄=0.41 < τ=1.2.'
    >>> one_line("retrained on batch 57 because", 20)
    'retrained on batch…'
    """
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    word = cut.rsplit(" ", 1)[0]
    return (word if len(word) >= limit * 2 // 3 else cut).rstrip(" ,;:") + "…"


def _short(text: str, limit: int = 500) -> str:
    """
    >>> _short("x" * 600)[-4:], len(_short("x" * 600))
    ('x...', 500)
    """
    return text if len(text) <= limit else text[:limit - 3] + "..."
