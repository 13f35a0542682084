"""Ψ̄ of a batch under the model in use, from the model and the rows of its own training batch
with a non-zero loss (stored with the version, so old batches may be deleted)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import numpy as np

from ..losses import per_sample_losses, resolve_loss
from ..planner import BatchObservation, SchemaChange
from ..policies import make_policy
from ..policy_doc import PolicyDocument
from ..row_sample import ROW_SAMPLE_MIN_ROWS, sampled_first_term
from ..staleness import psi_from_losses
from ..tracking import registry as reg

__all__ = ["PsiTerms", "psi_terms", "then_term", "observe", "samples_rows"]


@dataclass(frozen=True)
class PsiTerms:
    """Ψ(Q_t, D_t, M) (``now``), Ψ(Q_t, D_t', M) (``then``) and M's per-sample losses on D_t
    (None when ``now`` was estimated from a row sample: ``now_half_width`` is then its 99%
    interval's half-width and ``n_predicted`` the rows predicted)."""

    now: float
    then: float
    errors: np.ndarray | None
    now_half_width: float = 0.0
    n_predicted: int | None = None

    @property
    def psi_bar(self) -> float:
        return self.now - self.then


def psi_terms(model, batch, doc: PolicyDocument, info: dict, rows, method: str, kappa: float | None = None) -> PsiTerms:
    """The two Ψ terms from the model and its training batch's stored rows with a non-zero loss.

    Both terms are measured in the policy's kernel space (``batch.X`` is already there; the
    stored rows are put there). Estimates (``method`` other than exact) are seeded by the
    batch id, so a step rerun after a crash computes the same Ψ̄. With ``kappa`` (the batch's κ)
    a large batch's first term may come from a row sample (:func:`samples_rows`).
    """
    then = then_term(batch.queries, lambda: batch.X, batch.id, doc, info, rows, method)
    loss_fn = resolve_loss(doc.psi.loss)

    def losses_of(picked):
        return per_sample_losses(loss_fn, batch.y[picked], model.predict(batch.frame.iloc[picked]),
                                 f"batch {batch.id}")

    if samples_rows(doc, method, batch.n_rows, kappa):
        sample = sampled_first_term(batch.queries, batch.coordinates(), losses_of, doc.psi.gamma, kappa=kappa,
                                    seed=(batch.id, 4))
        if sample.sampled:
            return PsiTerms(sample.value, then, None, sample.half_width, sample.n_predicted)
        losses = sample.losses
    else:
        losses = per_sample_losses(loss_fn, batch.y, model.predict(batch.frame), f"batch {batch.id}")
    now = psi_from_losses(batch.queries, batch.X, losses, doc.psi.gamma, method=method, seed=(batch.id, 0),
                          scale=doc.psi.scale)
    return PsiTerms(now, then, losses)


def samples_rows(doc: PolicyDocument, method: str, n_rows: int, kappa: float | None) -> bool:
    """Whether a step estimates the first term from a row sample: ``auto`` or ``sample`` on more
    than :data:`~cara_mlflow.row_sample.ROW_SAMPLE_MIN_ROWS` rows, on the paper's scale, for a
    policy that decides from costs (a drift detector watches every row's error)."""
    return (kappa is not None and method in ("auto", "sample") and n_rows > ROW_SAMPLE_MIN_ROWS
            and doc.psi.scale == "paper" and make_policy(doc.policy, **doc.params).from_costs())


def then_term(queries, points_of, batch_id: int, doc: PolicyDocument, info: dict, rows, method: str) -> float:
    """Ψ(Q_t, D_t', M): the queries against the model's training batch, from its stored rows with a
    non-zero loss. ``points_of()``: the batch's own rows (or its queries, before its labels), whose
    kernel mass stands for the training batch's on the expected-loss scale for a version trained
    before mass samples were stored (asked for only then: a large batch's rows are not transformed
    for nothing)."""
    if not len(rows):
        return 0.0
    X_then = doc.space.transform(rows)
    return psi_from_losses(queries, X_then, rows["loss"].to_numpy(dtype=np.float64), doc.psi.gamma,
                           int(info["n_rows"]), method=method, seed=(batch_id, 1), scale=doc.psi.scale,
                           **_then_mass(doc.psi.scale, rows, points_of, int(info["n_rows"])))


def _then_mass(scale: str, rows, points_of, n_rows: int) -> dict:
    """The kernel mass of the training batch for the expected-loss scale: its stored sample; for a
    version trained before samples were stored, the current batch's rows stand for it (the
    densities of two batches differ where the stream drifted: re-train to measure it exactly)."""
    if scale == "paper":
        return {}
    if "mass_weight" in rows:
        return {"mass_weight": rows["mass_weight"].to_numpy(dtype=np.float64)}
    points = points_of()
    return {"mass_points": points, "mass_weight": n_rows / points.shape[0]}


def observe(registry: reg.Registry, version: reg.VersionInfo, batch, doc: PolicyDocument,
            method: str, kappa: float | None = None) -> tuple[BatchObservation, PsiTerms | None]:
    """What the planner needs of the batch, measured with ``version`` (and the Ψ terms, for the run).
    ``kappa``: the batch's κ, for the bound of a row-sampled first term (None: every row predicted).

    When ``version`` was trained on other features than the policy's (a re-tune changed them),
    nothing can be measured: the observation carries the :class:`SchemaChange` and no terms.
    """
    n_classes = int(np.unique(batch.y).size)
    with tempfile.TemporaryDirectory() as tmp:
        training, rows = registry.training_info(version, tmp)
        change = SchemaChange.between(tuple(training.get("features", ())), tuple(doc.features))
        if change is not None:
            return BatchObservation(batch=batch.id, psi_bar=0.0, n_classes=n_classes, schema=change), None
        model = registry.load_model(version, tmp)
    terms = psi_terms(model, batch, doc, training, rows, method, kappa)
    return BatchObservation(batch=batch.id, psi_bar=terms.psi_bar, n_classes=n_classes, errors=terms.errors), terms
