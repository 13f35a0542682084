"""Ψ̄ of a batch before its labels: the model in use's expected loss at the batch's queries, from a
loss estimator (:mod:`cara_mlflow.estimate`) fitted on labelled rows the model did not train on;
and which labelled batch a retrain decided then trains on."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..batch import Batch, QueryBatch
from ..errors import InputError
from ..estimate import REFERENCE_ROWS, LossEstimator, estimated_psi_now, reference_rows
from ..losses import per_sample_losses, resolve_loss
from ..planner import SchemaChange
from ..policy_doc import PolicyDocument
from ..store import BatchStore
from ..tracking import registry as reg
from .observe import then_term

__all__ = ["REFERENCE_BATCHES", "Estimate", "estimate", "labelled_batch", "reference"]

#: At most this many of the latest labelled batches fit the estimator (fewer when they hold
#: :data:`~cara_mlflow.estimate.REFERENCE_ROWS` rows already).
REFERENCE_BATCHES = 3


@dataclass(frozen=True)
class Estimate:
    """Ψ̄ estimated before the labels: Ψ's first term from the estimator, the second as always."""

    now: float
    then: float
    estimator: LossEstimator

    @property
    def psi_bar(self) -> float:
        return self.now - self.then


def reference(store: BatchStore, doc: PolicyDocument, version: reg.VersionInfo, info: dict,
              before: int) -> list[tuple[Batch, np.ndarray, str]]:
    """Labelled rows the version did not train on, as (batch, rows, what they are): the latest
    complete batches after its training batch and before ``before``; else its training batch's
    held-out rows; else (nothing held out) its training rows, in-sample, hence optimistic."""
    trained = version.trained_on
    later = [i.id for i in store.list() if i.complete and i.id < before and (trained is None or i.id > trained)]
    picked, rows = [], 0
    for batch_id in reversed(later[-REFERENCE_BATCHES:]):
        batch = store.read(batch_id, target=doc.target, space=doc.space)
        picked.append((batch, np.arange(batch.n_rows), "later batch"))
        rows += batch.n_rows
        if rows >= REFERENCE_ROWS:
            break
    if picked:
        return picked
    if trained is None or not any(i.id == trained and i.complete for i in store.list()):
        raise InputError(f"batch {before}: no labelled rows to estimate Ψ̄ before its labels: production "
                         f"v{version.version} was trained on batch {trained}, which is not in the store, and no "
                         "later batch has labels; wait for this batch's labels (data.parquet and _SUCCESS)")
    batch = store.read(trained, target=doc.target, space=doc.space)
    held = np.asarray(info.get("holdout_index") or [], dtype=np.int64)
    if held.size >= 2:
        return [(batch, held, "held-out rows")]
    return [(batch, np.arange(batch.n_rows), "training rows (in-sample, optimistic)")]


def _outputs(model, frame: pd.DataFrame, task: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """What the estimator takes of the model: its confidence (class probabilities), and its
    prediction for a regression only (a class label is not a quantity, whatever its dtype)."""
    proba = model.predict_proba(frame)
    predictions = np.asarray(model.predict(frame)) if task == "regression" else None
    return predictions, None if proba is None else proba.max(axis=1)


def _fit(model, doc: PolicyDocument, version: reg.VersionInfo, parts) -> LossEstimator:
    """The estimator of ``version``'s loss, fitted on the reference ``parts`` (a seeded sample of
    :data:`~cara_mlflow.estimate.REFERENCE_ROWS` rows of them when larger)."""
    frame = pd.concat([b.frame.iloc[rows] for b, rows, _ in parts], ignore_index=True)
    y = np.concatenate([np.asarray(b.y)[rows] for b, rows, _ in parts])
    keep = reference_rows(len(y), seed=(version.version, parts[0][0].id))       # sorted
    starts = np.cumsum([0, *(len(rows) for _, rows, _ in parts)])
    # only the kept rows into the kernel space (a large batch's X is not computed for them)
    X = np.vstack([b.coordinates(rows[keep[(keep >= lo) & (keep < hi)] - lo])[:]
                   for (b, rows, _), lo, hi in zip(parts, starts[:-1], starts[1:])])
    frame, y = frame.iloc[keep].reset_index(drop=True), y[keep]
    predictions, confidence = _outputs(model, frame, doc.task)
    labels = np.asarray(model.predict(frame)) if predictions is None else predictions
    losses = per_sample_losses(resolve_loss(doc.psi.loss), y, labels, "the estimator's reference rows")
    provenance = {"version": version.version, "loss": doc.psi.loss,
                  "reference": [{"batch": b.id, "rows": int(len(rows)), "part": part} for b, rows, part in parts]}
    return LossEstimator.fit(points=X, confidence=confidence, predictions=predictions, losses=losses,
                             provenance=provenance)


def estimate(registry: reg.Registry, store: BatchStore, doc: PolicyDocument, version: reg.VersionInfo,
             queries: QueryBatch, method: str) -> Estimate | SchemaChange:
    """Ψ̄ of ``version`` at the batch of ``queries``, estimated without its labels; the
    :class:`SchemaChange` instead when the version was trained on other features than the policy's."""
    with tempfile.TemporaryDirectory() as tmp:
        info, rows = registry.training_info(version, tmp)
        change = SchemaChange.between(tuple(info.get("features", ())), tuple(doc.features))
        if change is not None:
            return change
        model = registry.load_model(version, tmp)
        estimator = _fit(model, doc, version, reference(store, doc, version, info, queries.id))
        predictions, confidence = _outputs(model, queries.query_frame, doc.task)
    expected = estimator.expected_losses(queries.queries, confidence, predictions)
    now = estimated_psi_now(queries.queries, queries.queries, expected, doc.psi.gamma, scale=doc.psi.scale,
                            method=method, seed=(queries.id, 0))
    then = then_term(queries.queries, lambda: queries.queries, queries.id, doc, info, rows, method)
    return Estimate(now, then, estimator)


def labelled_batch(store: BatchStore, registry: reg.Registry, production: reg.VersionInfo, before: int, *,
                   decided_at: int | None = None) -> int | None:
    """The batch a retrain decided at ``decided_at`` (default ``before``; a batch without its labels,
    or a reconciled one) trains on: the one a killed step's retrain for it already trained on;
    else the latest complete batch before ``before``, when newer than production's training batch
    and not trained on for another decision (one labelled batch never trains two versions); else
    None (no new labels)."""
    decided_at = before if decided_at is None else decided_at
    resumed = registry.versions(decided_at=decided_at)
    if resumed:
        return resumed[0].trained_on
    trained = production.trained_on
    complete = [i.id for i in store.list() if i.complete and i.id < before]
    if not complete or (trained is not None and complete[-1] <= trained):
        return None
    latest = complete[-1]
    return None if registry.versions(trained_on=latest) else latest
