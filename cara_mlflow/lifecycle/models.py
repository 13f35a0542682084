"""Model versions of the managed model: trained through the retrain project (or reused after a
crash), adopted from the registry, and gated against production."""

from __future__ import annotations

import tempfile

import numpy as np

from ..errors import SetupError
from ..losses import per_sample_losses, resolve_loss
from ..policy_doc import PolicyDocument
from ..row_sample import sampled_first_term
from ..staleness import psi_from_losses
from ..tracking import registry as reg
from ..tracking.projects import TAG_BACKEND
from ..tracking.runs import TAG_PARENT, RunRecord
from ..tracking.training import record_training
from .detached import abandoned, detached_retrain
from .frame import Phase, default_project_uri, no_phase
from .observe import samples_rows
from .training import complete_record, train_on_batch

__all__ = ["train_and_register", "adopt", "gate"]


def _nest(registry: reg.Registry, run: RunRecord | None, parent_run_id: str | None) -> None:
    """Nest a reused retrain run under the batch run now using it. A killed step's retrain hangs
    under that step's KILLED batch run (or under none, if older than the tag): the operator looks
    for it under the batch run that records its gate and promotion."""
    if parent_run_id and run is not None and run.run_type == "retrain" \
            and run.tags.get(TAG_PARENT) != parent_run_id:
        registry.runs.set_tags(run.run_id, {TAG_PARENT: parent_run_id})


def _finished_retrain(registry: reg.Registry, batch, doc: PolicyDocument,
                      parent_run_id: str | None = None) -> str | None:
    """A finished retrain run of the batch whose model exists (a killed step's), its record
    completed if the kill came before that and nested under ``parent_run_id``; a retrain killed
    half-way is marked FAILED, to be redone."""
    for stale in registry.runs.find("retrain", batch=batch.id, statuses=("RUNNING",)):
        if stale.tags.get(TAG_BACKEND) and not abandoned(stale, detached=True):
            raise SetupError(f"batch {batch.id}'s retrain run {stale.run_id} is still running on backend "
                             f"{stale.tags[TAG_BACKEND]}; wait for it with --backend {stale.tags[TAG_BACKEND]} (the "
                             "step that submitted it), or end it as FAILED before retraining here")
        registry.runs.end(stale.run_id, "FAILED")
    for run in registry.runs.find("retrain", batch=batch.id, statuses=("FINISHED",)):
        if run.tags.get(reg.TAG_MODEL_URI) or registry.logged_model_of_run(run.run_id):
            complete_record(registry, run.run_id, batch, doc)
            _nest(registry, run, parent_run_id)
            return run.run_id
    return None


def train_and_register(registry: reg.Registry, batch, doc: PolicyDocument, project_uri: str | None, *,
                       trigger: str, gate_tag: str | None = None, on_phase: Phase = no_phase,
                       parent_run_id: str | None = None, decided_at: int | None = None) -> reg.VersionInfo:
    """A registered version trained on ``batch``: reuse what a killed step left, else train (on
    the policy's backend: :mod:`cara_mlflow.lifecycle.detached` for a detached one).

    ``parent_run_id``: the batch run asking for it; the retrain run is its child in the UI
    (None, e.g. an offline training: a top-level run). ``decided_at``: the batch that asked for
    it, when not ``batch`` (decided before its own labels; tag ``cara.decided_at``)."""
    existing = registry.versions(trained_on=batch.id)
    if existing:
        training_run = existing[0].tags.get(reg.TAG_TRAINING_RUN)
        if parent_run_id and training_run:
            _nest(registry, registry.runs.get(training_run), parent_run_id)
        return existing[0]
    uri = project_uri or doc.project_uri
    if doc.backend.detached:
        run_id = detached_retrain(registry, batch, doc, uri or default_project_uri(), parent_run_id=parent_run_id,
                                  on_phase=on_phase)
    else:
        run_id = _finished_retrain(registry, batch, doc, parent_run_id) or train_on_batch(
            registry, batch, doc, uri or default_project_uri(), before_start=lambda: on_phase("during-retrain"),
            parent_run_id=parent_run_id)
    on_phase("after-retrain")
    tags = {reg.TAG_TRAINED_ON: batch.id, reg.TAG_TRIGGER: trigger, reg.TAG_TRAINING_RUN: run_id,
            **({reg.TAG_DECIDED_AT: decided_at} if decided_at is not None else {})}
    if gate_tag:
        tags[reg.TAG_GATE] = gate_tag
    version = registry.register(registry.model_of_run(run_id), run_id=run_id, tags=tags)
    on_phase("after-register")
    return version


def adopt(registry: reg.Registry, batch, doc: PolicyDocument, version_number: int, run_id: str) -> reg.VersionInfo:
    """Adopt an already registered version as trained on ``batch``: its losses there and its
    training record go on the init batch run, as a retrain's would."""
    version = registry.version(version_number)
    with tempfile.TemporaryDirectory() as tmp:
        model = registry.load_model(version, tmp)
        losses = per_sample_losses(resolve_loss(doc.psi.loss), batch.y, model.predict(batch.frame),
                                   f"batch {batch.id}")
    record_training(registry.runs, run_id, f"models:/{registry.name}/{version.version}", batch, losses,
                    np.zeros(0, dtype=np.int64), loss=doc.psi.loss, task=doc.task, settings=None, tags=False)
    for key, value in {reg.TAG_TRAINED_ON: batch.id, reg.TAG_TRIGGER: "adopt", reg.TAG_GATE: "off",
                       reg.TAG_TRAINING_RUN: run_id}.items():
        registry.tag_version(version.version, key, value)
    return registry.version(version.version)


def gate(registry: reg.Registry, challenger: reg.VersionInfo, in_use: reg.VersionInfo, batch, doc: PolicyDocument,
         *, enabled: bool, method: str = "exact", kappa: float | None = None) -> str:
    """``passed`` if the challenger's query-weighted loss on its held-out rows is not higher than
    the model in use's, else ``rejected``; ``off`` when the gate is disabled.

    Both sides use the same seed (common random blocks), so an estimate's error mostly cancels
    in the comparison. With ``kappa``, many held-out rows are judged on a row sample
    (:func:`~cara_mlflow.lifecycle.observe.samples_rows`): both models predict the same rows,
    summed against the same queries."""
    if not enabled:
        return "off"
    with tempfile.TemporaryDirectory() as tmp:
        info, _ = registry.training_info(challenger, tmp)
        held = np.asarray(info.get("holdout_index") or [], dtype=np.int64)
        if held.size == 0:
            return "passed"
        new_model = registry.load_model(challenger, tmp)
        old_model = registry.load_model(in_use, tmp)
    loss_fn = resolve_loss(doc.psi.loss)
    X, y, rows = batch.coordinates(held), batch.y[held], batch.frame.iloc[held]

    def losses_of(picked):
        frame = rows.iloc[picked]
        return np.column_stack([per_sample_losses(loss_fn, y[picked], model.predict(frame), "held-out rows")
                                for model in (new_model, old_model)])

    if samples_rows(doc, method, held.size, kappa):
        sample = sampled_first_term(batch.queries, X, losses_of, doc.psi.gamma, kappa=kappa, seed=(batch.id, 2))
        if sample.sampled:
            return "passed" if sample.value[0] <= sample.value[1] else "rejected"
        both = sample.losses
    else:
        both = losses_of(np.arange(held.size))
    X = X[:]        # the held-out rows whole (transformed here if they were not yet)
    new, old = (psi_from_losses(batch.queries, X, both[:, i], doc.psi.gamma, method=method, seed=(batch.id, 2),
                                scale=doc.psi.scale) for i in (0, 1))
    return "passed" if new <= old else "rejected"
