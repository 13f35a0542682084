"""Ψ̄ of a batch under the model in use, from the model and the misclassified rows of its own
training batch (stored with the version, so old batches may be deleted)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import numpy as np

from ..planner import BatchObservation
from ..staleness import psi_from_losses, zero_one_loss
from ..tracking import registry as reg

__all__ = ["PsiTerms", "psi_terms", "observe"]


@dataclass(frozen=True)
class PsiTerms:
    """Ψ(Q_t, D_t, M) (``now``), Ψ(Q_t, D_t', M) (``then``) and M's 0/1 errors on D_t."""

    now: float
    then: float
    errors: np.ndarray

    @property
    def psi_bar(self) -> float:
        return self.now - self.then


def psi_terms(model, batch, info: dict, rows, gamma: float, method: str) -> PsiTerms:
    """The two Ψ terms from the model and its training batch's stored misclassified rows.

    Estimates (``method`` other than exact) are seeded by the batch id, so a step rerun after
    a crash computes the same Ψ̄.
    """
    errors = zero_one_loss(batch.y, model.predict(batch.X))
    now = psi_from_losses(batch.queries, batch.X, errors, gamma, method=method, seed=(batch.id, 0))
    X_wrong = rows[info["features"]].to_numpy(dtype=np.float64)
    then = (psi_from_losses(batch.queries, X_wrong, np.ones(X_wrong.shape[0]), gamma, int(info["n_rows"]),
                            method=method, seed=(batch.id, 1)) if len(X_wrong) else 0.0)
    return PsiTerms(now, then, errors)


def observe(registry: reg.Registry, version: reg.VersionInfo, batch, gamma: float,
            method: str) -> tuple[BatchObservation, PsiTerms]:
    """What the planner needs of the batch, measured with ``version`` (and the Ψ terms, for the run)."""
    with tempfile.TemporaryDirectory() as tmp:
        model = registry.load_model(version, tmp)
        training, rows = registry.training_info(version, tmp)
    terms = psi_terms(model, batch, training, rows, gamma, method)
    obs = BatchObservation(batch=batch.id, psi_bar=terms.psi_bar, n_classes=int(np.unique(batch.y).size),
                           trained_on=version.trained_on, errors=terms.errors)
    return obs, terms
