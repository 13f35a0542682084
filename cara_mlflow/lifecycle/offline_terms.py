"""The offline matrix's Ψ terms for ``tune``: every model on every later batch, or, for large
batches, each later batch's row sample (:mod:`cara_mlflow.matrix_sample`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..costs import StalenessTerms, predict_later, staleness_terms
from ..losses import per_sample_losses, resolve_loss
from ..matrix_sample import sampled_staleness_terms, samples_matrix
from ..policy_doc import PolicyDocument

__all__ = ["offline_terms"]


def offline_terms(batches: Sequence, models: Sequence, doc: PolicyDocument, *, method: str, scale: str,
                  seed: int) -> tuple[StalenessTerms, list[str]]:
    """Both Ψ terms of the offline window (``doc`` gives γ, the loss and κ), and a note when the
    first terms come from row samples (how many predictions, and the bound every entry met)."""
    loss_fn = resolve_loss(doc.psi.loss)
    queries = [b.queries for b in batches]
    if not samples_matrix(method, scale, [b.n_rows for b in batches]):
        predictions = predict_later(models, [b.frame for b in batches])
        return staleness_terms([(b.X, b.y) for b in batches], predictions=predictions, queries=queries,
                               gamma=doc.psi.gamma, loss=loss_fn, method=method, seed=seed, scale=scale), []

    def losses(models_, batch, rows=None) -> np.ndarray:
        """One loss column per model, on ``rows`` of ``batch`` (sliced once for every model)."""
        frame, y = (batch.frame, batch.y) if rows is None else (batch.frame.iloc[rows], batch.y[rows])
        return np.column_stack([per_sample_losses(loss_fn, y, np.asarray(m.predict(frame)), f"batch {batch.id}")
                                for m in models_])

    result = sampled_staleness_terms(
        [b.X for b in batches], lambda t, rows: losses(models[:t], batches[t], rows),
        lambda t: losses([models[t]], batches[t])[:, 0], queries=queries, gamma=doc.psi.gamma, kappa=doc.kappa,
        method=method, seed=seed)
    return result.terms, [_sample_note(result, len(batches))]


def _sample_note(result, T: int) -> str:
    """How many first terms were sampled, the share of the exact path's predictions made, and the
    widest entry interval against the bound (and why an entry exceeds it)."""
    bound = 0.01 * result.bound_scale
    over = int(np.sum(result.half_width > bound * (1 + 1e-9)))
    note = (f"offline matrix: {result.n_sampled} of {T * (T - 1) // 2} first terms from row samples "
            f"({result.n_predicted / result.n_exact:.0%} of every model's row predictions on every later batch); "
            f"widest 99% half-width "
            f"{np.nanmax(result.half_width):.3g} against 1% of max(kappa, mean |psi_bar|) = {bound:.3g}")
    if over:
        note += (f"; {over} entries above it: their kernel sums were estimated to 1% of the term itself "
                 "(--psi-method exact sums them exactly)")
    return note
