"""The offline cost matrix from row samples: ``tune`` and ``compare`` on large histories.

The exact matrix predicts every offline model on every later batch: T(T+1)/2 full predictions,
the cost the paper's §9 names first. Here each later batch t predicts a random sample of its rows
with every older model at once (:func:`cara_mlflow.row_sample.sampled_first_term`, k = t loss
columns on the same rows and queries), so the first terms Ψ(Q_t, D_t, M_t') cost a sample each;
the second terms Ψ(Q_t, D_t', M_t') need each model's losses on its own batch only (T full
predictions, as before) and are summed by ``method`` as before (``auto``: within 1% of the term
above its switch size, exact below).

The bound is absolute: the sample's 99% half-width ≤ ``rel_error`` × max(κ, mean |Ψ̄|) over the
matrix's off-diagonal. The mean is not known before the entries are: a pilot (:data:`PILOT_ROWS`
rows of each batch, every older model) estimates it, the entries are sampled to 90% of that
bound, and any batch whose interval misses the bound the final mean sets (the pilot guessed high)
is sampled again. A batch too small for a sample to pay is predicted whole and its terms computed
as :func:`cara_mlflow.costs.staleness_terms` computes them. Each entry's reported half-width adds
the sample's and, where ``method`` estimated a kernel sum (a second term, or a batch predicted
whole, under ``auto``), that estimate's own bound, ``rel_error`` × the term: the sum of two 99%
half-widths, a conservative interval for the difference. Where the second terms are large
against κ that part can exceed the bound; ``method="exact"`` sums them exactly.

>>> rng = np.random.default_rng(0)
>>> Xs = [rng.normal(size=(60_000, 2)) for _ in range(3)]
>>> wrong = [[(rng.random(60_000) < (0.05 if tp == t else 0.3)).astype(float) for tp in range(3)]
...          for t in range(3)]                            # model t' errs 5% on its batch, 30% on later ones
>>> result = sampled_staleness_terms(Xs, lambda t, rows: np.column_stack([wrong[t][tp][rows] for tp in range(t)]),
...                                  lambda t: wrong[t][t], queries=[X[:500] for X in Xs], gamma=0.5,
...                                  kappa=400.0, group_rows=1024)           # κ ≈ 10 × mean Ψ̄
>>> bool(np.nanmax(result.half_width) <= 0.01 * result.bound_scale), result.n_predicted < result.n_exact
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .costs import StalenessTerms, _second_terms, first_terms_of
from .row_sample import GROUP_QUERIES, ROW_SAMPLE_MIN_ROWS, sampled_first_term
from .staleness import (
    DEFAULT_REL_ERROR,
    MAX_BLOCK_BYTES,
    Gamma,
    _child_seed,
    _computes_exactly,
    _weighted_kernel_sums,
    resolve_gamma,
    stack_rows,
)

__all__ = ["SampledTerms", "sampled_staleness_terms", "samples_matrix", "PILOT_ROWS"]

#: Rows of each batch the pilot predicts with every older model (to guess the bound's mean |Ψ̄|).
PILOT_ROWS = 4096
#: Rounds of re-sampling when the final mean |Ψ̄| is below the pilot's guess.
MAX_PASSES = 3


def samples_matrix(method: str, scale: str, n_rows: Sequence[int]) -> bool:
    """Whether the offline matrix comes from row samples: ``auto`` or ``sample`` on the paper's
    scale, when a batch has more than :data:`~cara_mlflow.row_sample.ROW_SAMPLE_MIN_ROWS` rows
    (the step's switch; the expected-loss scale needs every row's kernel mass).

    >>> samples_matrix("auto", "paper", [1000, 600_000]), samples_matrix("exact", "paper", [600_000])
    (True, False)
    """
    return method in ("auto", "sample") and scale == "paper" and max(n_rows) > ROW_SAMPLE_MIN_ROWS


@dataclass(frozen=True)
class SampledTerms:
    """Result of :func:`sampled_staleness_terms`.

    ``terms``: both Ψ terms, as :func:`~cara_mlflow.costs.staleness_terms` gives them;
    ``half_width[t', t]``: the 99% half-width of entry (t', t): the sample's plus that of any kernel
    sum ``method`` estimated (0 where every row and every pair was summed);
    ``bound_scale``: max(κ, mean |Ψ̄|), the scale every half-width is held to ``rel_error`` of;
    ``n_predicted`` / ``n_exact``: row predictions made, and those the exact matrix makes;
    ``n_sampled``: the entries whose first term came from a sample.
    """

    terms: StalenessTerms
    half_width: np.ndarray
    bound_scale: float
    n_predicted: int
    n_exact: int
    n_sampled: int = 0


def sampled_staleness_terms(Xs: Sequence, losses_of: Callable[[int, np.ndarray], np.ndarray],
                            own_losses: Callable[[int], np.ndarray], *, queries: Sequence, gamma: Gamma,
                            kappa: float, method: str = "auto", rel_error: float = DEFAULT_REL_ERROR, seed=0,
                            max_block_bytes: int = MAX_BLOCK_BYTES, group_rows: int | None = None,
                            group_queries: int | None = None) -> SampledTerms:
    """Both Ψ terms of every pair t' < t, the first ones from row samples (module docstring).

    ``Xs[t]``: batch t's rows in the kernel space; ``queries[t]``: Q_t. ``losses_of(t, rows)``:
    an ``(len(rows), t)`` array, the losses of every older model (column t') on those rows of batch
    t (sorted indices), where the predictions happen; ``own_losses(t)``: model t's losses on every
    row of its own batch. ``kappa``: the retrain cost in Ψ's units. ``method``: how a batch
    predicted whole and the second terms sum their kernels
    (:func:`~cara_mlflow.staleness.pair_sums`). Seeded by ``seed``.
    """
    T = len(Xs)
    g = resolve_gamma(gamma, stack_rows(list(Xs))) if isinstance(gamma, str) else resolve_gamma(gamma, Xs[0])
    approx = ("sample" if method == "auto" else method, rel_error, seed, max_block_bytes)
    own = [np.asarray(own_losses(t), dtype=np.float64) for t in range(T)]
    table = [[None] * t + [own[t]] for t in range(T)]
    psi_then = _second_terms([(X, None) for X in Xs], queries, table, g, method, approx)
    then_half = _estimated(method, queries, [np.count_nonzero(o) for o in own]) * rel_error * np.abs(psi_then)
    psi_now, half = np.full((T, T), np.nan), np.full((T, T), np.nan)
    upper = np.triu(np.ones((T, T), dtype=bool), 1)
    pilot, predicted = _pilot(Xs, losses_of, queries, g, seed, max_block_bytes)
    scale = max(float(kappa), float(np.mean(np.abs(pilot - psi_then)[upper])) if T > 1 else 0.0)
    todo, whole = list(range(1, T)), set()          # whole: predicted whole (a new sample cannot tighten it)
    for _ in range(MAX_PASSES):
        for t in todo:
            # sampled to 90% of the bound, so that a final mean a little below this one does not send it round again
            sample = sampled_first_term(queries[t], Xs[t], lambda rows, t=t: losses_of(t, rows), g,
                                        kappa=0.9 * scale, rel_error=rel_error, seed=_child_seed(seed, 3, t),
                                        group_rows=group_rows, group_queries=group_queries,
                                        max_block_bytes=max_block_bytes, relative_to_term=False)
            predicted += sample.n_predicted * t
            if sample.sampled:
                psi_now[:t, t], half[:t, t] = sample.value, sample.half_width
            else:
                psi_now[:t, t] = first_terms_of(Xs[t], queries[t], sample.losses, g, method, approx, t)
                whole.add(t)
                estimated = not _computes_exactly(method, queries[t].shape[0], Xs[t].shape[0])
                half[:t, t] = rel_error * np.abs(psi_now[:t, t]) if estimated else 0.0
        scale = max(float(kappa), float(np.mean(np.abs(psi_now - psi_then)[upper])) if T > 1 else 0.0)
        todo = [t for t in range(1, T) if t not in whole and (half[:t, t] > rel_error * scale).any()]
        if not todo:
            break
    n_rows = np.array([X.shape[0] for X in Xs])
    exact = int(sum(n_rows[tp:].sum() for tp in range(T)))
    n_sampled = sum(t for t in range(1, T) if t not in whole)
    return SampledTerms(StalenessTerms(psi_now, psi_then, g), half + then_half, scale,
                        predicted + int(n_rows.sum()), exact, n_sampled)


def _estimated(method: str, queries, wrong: list[int]) -> np.ndarray:
    """1.0 where ``_second_terms`` estimates the pair's sum (``auto`` above its switch: within
    ``rel_error`` of the term, 99%), else 0.0 — as it decides, per (t', t)."""
    T = len(queries)
    out = np.zeros((T, T))
    for tp in range(T - 1):
        for t in range(tp + 1, T):
            out[tp, t] = float(wrong[tp] > 0 and not _computes_exactly(method, queries[t].shape[0], wrong[tp]))
    return out


def _pilot(Xs, losses_of, queries, g: float, seed, max_block_bytes: int) -> tuple[np.ndarray, int]:
    """A rough first term of every pair from :data:`PILOT_ROWS` rows of each batch and up to
    :data:`~cara_mlflow.row_sample.GROUP_QUERIES` of its queries, and the row predictions it made."""
    T = len(Xs)
    pilot, predicted = np.full((T, T), np.nan), 0
    for t in range(1, T):
        rng = np.random.default_rng(_child_seed(seed, 4, t))
        n, Q = Xs[t].shape[0], queries[t]
        rows = np.sort(rng.choice(n, min(n, PILOT_ROWS), replace=False))
        picked = np.sort(rng.choice(Q.shape[0], min(Q.shape[0], GROUP_QUERIES), replace=False))
        L = np.asarray(losses_of(t, rows), dtype=np.float64).reshape(rows.size, t)
        weights = _weighted_kernel_sums(Xs[t][rows], Q[picked], None, g, max_block_bytes)
        pilot[:t, t] = (Q.shape[0] / picked.size) * (weights @ L) / rows.size
        predicted += rows.size * t
    return pilot, predicted
