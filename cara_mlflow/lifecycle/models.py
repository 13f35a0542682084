"""Model versions of the managed model: trained through the retrain project (or reused after a
crash), adopted from the registry, and gated against production."""

from __future__ import annotations

import io
import json
import tempfile

import numpy as np

from ..policy_doc import PolicyDocument
from ..staleness import psi_from_losses, zero_one_loss
from ..store import BatchStore
from ..tracking import registry as reg
from ..tracking.projects import run_training_project
from ..train import project_parameters
from .frame import Phase, default_project_uri, no_phase

__all__ = ["train_and_register", "adopt", "gate"]


def _finished_retrain(registry: reg.Registry, batch_id: int) -> str | None:
    """A finished retrain run of the batch that logged its model (a killed step's), if any; a
    retrain killed half-way is marked FAILED, to be redone."""
    finished = [r for r in registry.runs.find("retrain", batch=batch_id, statuses=("FINISHED",))
                if r.tags.get(reg.TAG_MODEL_URI)]
    for stale in registry.runs.find("retrain", batch=batch_id, statuses=("RUNNING",)):
        registry.runs.end(stale.run_id, "FAILED")
    return finished[0].run_id if finished else None


def train_and_register(store: BatchStore, registry: reg.Registry, batch_id: int, doc: PolicyDocument,
                       project_uri: str | None, *, trigger: str, gate_tag: str | None = None,
                       on_phase: Phase = no_phase) -> reg.VersionInfo:
    """A registered version trained on ``batch_id``: reuse what a killed step left, else train."""
    existing = registry.versions(trained_on=batch_id)
    if existing:
        return existing[0]
    run_id = _finished_retrain(registry, batch_id)
    if run_id is None:
        uri = project_uri or doc.project_uri or default_project_uri()
        params = project_parameters(doc.trainer, data=store.info(batch_id).path, target=doc.target,
                                    features=doc.features)
        run_id = run_training_project(registry, uri, params, batch_id=batch_id,
                                      before_start=lambda: on_phase("during-retrain"))
    on_phase("after-retrain")
    tags = {reg.TAG_TRAINED_ON: batch_id, reg.TAG_TRIGGER: trigger, reg.TAG_TRAINING_RUN: run_id}
    if gate_tag:
        tags[reg.TAG_GATE] = gate_tag
    version = registry.register(registry.model_of_run(run_id), run_id=run_id, tags=tags)
    on_phase("after-register")
    return version


def adopt(registry: reg.Registry, batch, version_number: int, run_id: str) -> reg.VersionInfo:
    """Adopt an already registered version as trained on ``batch``: its misclassified rows there
    and its training record go on the init batch run, as a retrain's would."""
    import pandas as pd

    version = registry.version(version_number)
    with tempfile.TemporaryDirectory() as tmp:
        model = registry.load_model(version, tmp)
        wrong = np.flatnonzero(model.predict(batch.X) != batch.y)
    rows = pd.DataFrame(batch.X[wrong], columns=list(batch.features))
    rows.insert(0, "row", wrong)
    rows[batch.target] = batch.y[wrong]
    info = {"batch": batch.id, "n_rows": batch.n_rows, "features": list(batch.features), "target": batch.target,
            "holdout_index": [], "n_misclassified": int(wrong.size), "settings": None}
    parquet = io.BytesIO()
    rows.to_parquet(parquet, index=False)
    registry.runs.log_files(run_id, {"misclassified.parquet": parquet.getvalue(),
                                     "training.json": json.dumps(info).encode()}, "cara")
    for key, value in {reg.TAG_TRAINED_ON: batch.id, reg.TAG_TRIGGER: "adopt", reg.TAG_GATE: "off",
                       reg.TAG_TRAINING_RUN: run_id}.items():
        registry.tag_version(version.version, key, value)
    return registry.version(version.version)


def gate(registry: reg.Registry, challenger: reg.VersionInfo, in_use: reg.VersionInfo, batch, gamma: float, *,
         enabled: bool, method: str = "exact") -> str:
    """``passed`` if the challenger's query-weighted loss on its held-out rows is not higher than
    the model in use's, else ``rejected``; ``off`` when the gate is disabled.

    Both sides use the same seed (common random blocks), so an estimate's error mostly cancels
    in the comparison."""
    if not enabled:
        return "off"
    with tempfile.TemporaryDirectory() as tmp:
        info, _ = registry.training_info(challenger, tmp)
        held = np.asarray(info.get("holdout_index") or [], dtype=np.int64)
        if held.size == 0:
            return "passed"
        new_model = registry.load_model(challenger, tmp)
        old_model = registry.load_model(in_use, tmp)
    X, y = batch.X[held], batch.y[held]
    new, old = (psi_from_losses(batch.queries, X, zero_one_loss(y, model.predict(X)), gamma, method=method,
                                seed=(batch.id, 2)) for model in (new_model, old_model))
    return "passed" if new <= old else "rejected"
