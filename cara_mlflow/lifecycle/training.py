"""Training a model on one batch through a project, whatever the project: the lifecycle's half of
the custom-trainer contract.

cara-mlflow writes the batch's training rows (held-out rows withheld) as ``data.parquet`` in a
scratch directory (for a store on an object store, in the folder ``STORE/retrain/<id>/`` there,
so that a project running elsewhere reads it by URI; nothing goes to the working directory),
runs the project's ``train`` entry point on it (``data``, ``target``,
``features``, and whichever of our other parameters the entry point declares), finds the one
model the run logged, and computes what it needs itself: the model's loss on every row of the
batch, kept with the run (:func:`cara_mlflow.tracking.training.record_training`).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..losses import per_sample_losses, resolve_loss
from ..policy_doc import PolicyDocument
from ..store.location import is_remote
from ..tracking import registry as reg
from ..tracking.projects import declared_parameters, run_training_project
from ..tracking.training import record_training
from ..train import project_parameters, split_holdout

__all__ = ["train_on_batch", "complete_record", "holdout_of", "training_seconds", "clock", "TRAINING_SECONDS",
           "retrain_folder", "write_training_rows", "remove_training_rows"]

#: The folder of a remote store that holds a retrain's training rows while its project runs.
RETRAIN_DIR = "retrain"
#: The wall clock of training times (a test replaces it with a fake one: nothing sleeps).
clock = time.monotonic
#: The training run's metric: seconds from the run's start until its model was logged.
TRAINING_SECONDS = "training_seconds"


def holdout_of(batch, doc: PolicyDocument) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of ``batch``: the trainer settings' seeded split."""
    return split_holdout(batch.n_rows, doc.trainer.holdout, doc.trainer.seed)


def _training_frame(batch, rows: np.ndarray):
    frame = batch.frame.iloc[rows].reset_index(drop=True)
    frame[batch.target] = batch.y[rows]
    return frame


def retrain_folder(batch):
    """``STORE/retrain/<id>``: where a detached retrain's training rows wait for its project (a
    path, or a URI on an object store), beside the store's ``batches`` folder."""
    return batch.data_path.parent.parent.parent / RETRAIN_DIR / str(batch.id)   # STORE/batches/<id>/data


def write_training_rows(batch, rows: np.ndarray, folder) -> str:
    """The rows ``rows`` of ``batch`` as ``folder/data.parquet`` (rewritten whole); ``folder`` as
    the project's ``data`` parameter."""
    payload = _training_frame(batch, rows).to_parquet(index=False)
    if is_remote(folder):
        (folder / "data.parquet").write_bytes(payload)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / ".data.parquet.partial"
        partial.write_bytes(payload)
        partial.replace(folder / "data.parquet")
    return str(folder)


def remove_training_rows(folder) -> None:
    """Remove a detached retrain's rows once its run has ended."""
    if is_remote(folder):
        folder.remove_tree()
    else:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def staged_training_rows(batch, rows: np.ndarray) -> Iterator[str]:
    """The ``data`` parameter of the project: a folder holding ``data.parquet`` (the rows ``rows``
    of ``batch``), removed afterwards. Beside the batches on an object store (``STORE/retrain/<id>``,
    a URI), else a local scratch directory."""
    frame = _training_frame(batch, rows)
    if is_remote(batch.data_path):
        folder = batch.data_path.parent.parent.parent / RETRAIN_DIR / str(batch.id)   # STORE/batches/<id>/data
        (folder / "data.parquet").write_bytes(frame.to_parquet(index=False))
        try:
            yield str(folder)
        finally:
            folder.remove_tree()
        return
    scratch = Path(tempfile.mkdtemp(prefix="cara-data-"))
    try:
        frame.to_parquet(scratch / "data.parquet", index=False)
        yield str(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def train_on_batch(registry: reg.Registry, batch, doc: PolicyDocument, project_uri: str, *,
                   run_type: str = "retrain", before_start: Callable[[], None] = lambda: None,
                   parent_run_id: str | None = None) -> str:
    """Run the project on ``batch``'s training rows in a new run (a child of ``parent_run_id``,
    the batch run, when given), record the model's losses on the whole batch there, and return
    the run's id."""
    train_rows, _ = holdout_of(batch, doc)
    with staged_training_rows(batch, train_rows) as data:
        params = project_parameters(doc.trainer, data=data, target=doc.target, features=doc.features,
                                    task=doc.task, declared=declared_parameters(project_uri))
        started = clock()
        run_id = run_training_project(registry, project_uri, params, batch_id=batch.id, run_type=run_type,
                                      before_start=before_start, parent_run_id=parent_run_id)
        registry.runs.log_metrics(run_id, {TRAINING_SECONDS: max(clock() - started, 1e-6)})
    complete_record(registry, run_id, batch, doc)
    return run_id


def training_seconds(registry: reg.Registry, run_id: str | None) -> float | None:
    """How long a training run took until its model was logged (None: not timed, e.g. adopted)."""
    run = registry.runs.get(run_id) if run_id else None
    return None if run is None else run.metrics.get(TRAINING_SECONDS)


def complete_record(registry: reg.Registry, run_id: str, batch, doc: PolicyDocument) -> str:
    """The training record of a finished run whose model exists (idempotent); its model's URI."""
    run = registry.runs.get(run_id)
    if run is not None and run.tags.get(reg.TAG_MODEL_URI):
        return registry.model_of_run(run_id)
    model_uri = registry.logged_model_of_run(run_id)
    if model_uri is None:
        raise ValueError(f"run {run_id} has no logged model")
    with tempfile.TemporaryDirectory() as tmp:
        model = registry.load_model_uri(model_uri, tmp)
        losses = per_sample_losses(resolve_loss(doc.psi.loss), batch.y, model.predict(batch.frame),
                                   f"batch {batch.id}")
    _, held = holdout_of(batch, doc)
    record_training(registry.runs, run_id, model_uri, batch, losses, held, loss=doc.psi.loss, task=doc.task,
                    settings=asdict(doc.trainer))
    return model_uri
