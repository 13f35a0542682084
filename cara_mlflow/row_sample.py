"""Ψ's first term from a sample of the batch's rows: predictions on the sample only.

The first term of Ψ̄ (paper scale, Eq. 1–2) is an average over the batch's n rows::

    Ψ(Q, D, M) = (1/n) Σ_x ℓ(M, x) · K_Q(x),     K_Q(x) = Σ_q K(q, x)

and ℓ needs the model's prediction on x, which is what a large batch pays for. Here the rows
are drawn uniformly without replacement (seeded, a round at a time) in **random groups** of
``group_rows`` rows; each group is predicted, and its rows with a non-zero loss are summed
against an independent uniform sample of ``group_queries`` queries (every query when there are
no more), exactly. Each group's estimate

    Ψ̂_g = (n_Q / r) · Σ_{x ∈ g} ℓ(x) Σ_{q ∈ Q_g} K(q, x) / |g|

is unbiased for Ψ, and the groups are exchangeable, so Ψ̂ = mean_g Ψ̂_g with the Student-t
interval of the group estimates (level ``confidence``) carries both sources of error, the rows
drawn and the queries drawn, without a formula for either. Groups are added (at least
:data:`MIN_GROUPS`; a round asks for the groups the spread so far needs, at most twice those it
has) until the interval's half-width is at most ``rel_error`` × max(κ, |Ψ̂|) and
the sample holds :data:`MIN_ERRORS` rows with a non-zero loss (fewer, and the spread of mostly
empty groups says nothing: a 0-1 loss is then held to its error rate's upper bound): a bound
relative to the term alone is out of reach when errors are rare, and 1% of κ is what a decision
can notice. When the groups needed would predict more than :data:`MAX_FRACTION` of the rows,
every row is predicted instead (the rows already predicted are kept) and the caller computes
the term as it always has.

A test checks the estimate against the exact term on moderate batches (seeds, dense and sparse
features, rare and common errors); ``benchmarks/calibrate_rows.py`` measures the interval's
coverage.

>>> rng = np.random.default_rng(0)
>>> X, Q = rng.normal(size=(200_000, 3)), rng.normal(size=(500, 3))
>>> wrong = (rng.random(200_000) < 0.2).astype(float)          # the model's 0-1 losses
>>> exact = float(wrong @ _weighted_kernel_sums(X, Q, None, 0.5, 2**26)) / 200_000
>>> est = sampled_first_term(Q, X, lambda rows: wrong[rows], 0.5, kappa=5 * exact, seed=1, group_rows=2048)
>>> bool(abs(est.value - exact) <= est.half_width <= 0.01 * 5 * exact), est.n_predicted < 100_000, est.sampled
(True, True, True)
>>> sampled_first_term(Q, X, lambda rows: wrong[rows], 0.5, kappa=0.0, seed=1, group_rows=2048).sampled  # 1% of Ψ
False
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .staleness import (
    DEFAULT_CONFIDENCE,
    DEFAULT_REL_ERROR,
    MAX_BLOCK_BYTES,
    _student_t_quantile,
    _weighted_kernel_sums,
)

__all__ = ["RowSample", "sampled_first_term", "ROW_SAMPLE_MIN_ROWS", "GROUP_ROWS", "GROUP_QUERIES", "MIN_GROUPS",
           "MAX_FRACTION"]

#: ``auto`` (and ``sample``) estimate a step's first term from a row sample above this many rows;
#: at or below it every row is predicted, exactly as before.
ROW_SAMPLE_MIN_ROWS = 500_000
#: Rows of one random group, and the queries it is summed against (every query when fewer). Smaller
#: groups stop nearer the rows the bound needs: a step on 10⁶ rows at κ = 80 (bench_scale's stream)
#: predicted 192 512 rows with groups of 2 048 and 376 832 with 8 192, 0.76 s more.
GROUP_ROWS = 2048
GROUP_QUERIES = 1024
#: Groups before the first interval (15 degrees of freedom, as the pair blocks of ``staleness``).
MIN_GROUPS = 16
#: Past this fraction of the rows, every row is predicted instead.
MAX_FRACTION = 0.5
#: A round at most doubles the groups: a spread guessed high from the first 16 groups does not
#: send the sample far past the rows the bound needs (bench_scale's stream at κ = 80, 2·10⁶ rows,
#: 30 seeds: 172 236 rows predicted on average, at most 219 136; 196 061 and 350 208 uncapped).
MAX_GROWTH = 2.0
#: Rows with a non-zero loss a sample must hold (each loss column) before the spread of its groups
#: is trusted: with fewer the group estimates are mostly 0 (with none, a zero-width interval around
#: 0), and a 0-1 loss's term is bounded by its error rate's upper bound instead (:func:`_few_errors`).
MIN_ERRORS = 100


@dataclass(frozen=True)
class RowSample:
    """Result of :func:`sampled_first_term`.

    ``sampled``: the value is an estimate (``half_width`` its interval); otherwise every row's
    loss is in ``losses`` (``rows`` = all rows, in order) and the caller computes the term
    exactly. ``rows``/``losses``: the rows predicted and their losses.
    """

    value: float | np.ndarray             # one per loss column when losses_of gives several
    half_width: float | np.ndarray
    sampled: bool
    rows: np.ndarray
    losses: np.ndarray
    n_groups: int

    @property
    def n_predicted(self) -> int:
        return int(self.rows.size)


def _group_estimate(Q, X, rows: np.ndarray, losses: np.ndarray, gamma: float, rng, group_queries: int,
                    max_block_bytes: int) -> np.ndarray:
    """Ψ̂_g of one group, one per loss column: its wrong rows against a fresh sample of queries."""
    n_q = Q.shape[0]
    wrong = np.flatnonzero(losses.any(axis=1))
    if wrong.size == 0:
        return np.zeros(losses.shape[1])
    picked = np.sort(rng.choice(n_q, group_queries, replace=False)) if group_queries < n_q else slice(None)
    sums = _weighted_kernel_sums(X[rows[wrong]], Q[picked], None, gamma, max_block_bytes)
    return (n_q / min(group_queries, n_q)) * (losses[wrong].T @ sums) / rows.size


def sampled_first_term(queries, X, losses_of: Callable[[np.ndarray], np.ndarray], gamma: float, *, kappa: float,
                       rel_error: float = DEFAULT_REL_ERROR, confidence: float = DEFAULT_CONFIDENCE, seed=0,
                       group_rows: int | None = None, group_queries: int | None = None,
                       max_block_bytes: int = MAX_BLOCK_BYTES, relative_to_term: bool = True) -> RowSample:
    """Ψ(Q, D, M) = (1/n) Σ_x ℓ(x) Σ_q K(q, x) from the losses of a row sample (module docstring).

    ``X``: the batch's n rows in the kernel space (dense or sparse); ``losses_of(rows)``: the
    model's per-sample losses on those rows (sorted indices; one call per round of groups), where
    the predictions happen; an
    ``(m, k)`` array gives k terms on the same rows and queries (several models, paired: their
    errors are correlated, so their difference is estimated more closely than each term), every
    one held to the bound. ``kappa``: the retrain cost in Ψ's units (the bound is relative to
    max(κ, Ψ); with ``relative_to_term=False`` it is ``rel_error`` × ``kappa`` alone, for a caller
    whose scale is not the term's, as the offline matrix's max(κ, mean |Ψ̄|)). Seeded by ``seed``
    (anything ``numpy.random.default_rng`` takes): a rerun draws the same rows. ``group_rows`` and
    ``group_queries`` default to :data:`GROUP_ROWS` and :data:`GROUP_QUERIES`.
    """
    group_rows = GROUP_ROWS if group_rows is None else int(group_rows)
    group_queries = GROUP_QUERIES if group_queries is None else int(group_queries)
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    draws = _Draws(n, rng)
    size = min(group_rows, n)
    t_level = 0.5 + confidence / 2
    rows_seen, losses_seen, estimates = [], [], []
    if MIN_GROUPS * size > MAX_FRACTION * n:       # too few rows for a sample to pay
        return _every_row(draws, rows_seen, losses_seen, losses_of, n)
    want, tally = MIN_GROUPS, _Tally()
    while True:
        first = len(estimates)
        order = draws.next((want - first) * size)
        block = np.sort(order)                                      # one prediction call per round
        block_losses = np.asarray(losses_of(block), dtype=np.float64)
        tally.add(block_losses)
        for g in range(want - first):
            rows = np.sort(order[g * size:(g + 1) * size])
            loss = block_losses[np.searchsorted(block, rows)]
            rows_seen.append(rows)
            losses_seen.append(loss)
            estimates.append(_group_estimate(queries, X, rows, loss.reshape(rows.size, -1), gamma, rng,
                                             group_queries, max_block_bytes))
        groups = np.array(estimates)
        value = groups.mean(axis=0)
        half = _student_t_quantile(t_level, len(groups) - 1) * groups.std(axis=0, ddof=1) / np.sqrt(len(groups))
        target = rel_error * (np.maximum(float(kappa), np.abs(value)) if relative_to_term else float(kappa))
        held, errors = _few_errors(half, tally, queries.shape[0])
        if (held <= target).all():
            return _sampled(value, held, rows_seen, losses_seen, len(groups))
        need = _groups_needed(len(groups), half, held, target, errors, t_level)
        if not np.isfinite(need) or 1.1 * need * size > MAX_FRACTION * n:
            return _every_row(draws, rows_seen, losses_seen, losses_of, n)
        want = max(len(groups) + MIN_GROUPS // 4, int(min(np.ceil(1.1 * need), MAX_GROWTH * len(groups))))


def _groups_needed(n_groups: int, half: np.ndarray, held: np.ndarray, target: np.ndarray, errors: np.ndarray,
                   t_level: float) -> float:
    """Groups for the spread to meet the bound (the interval narrows as 1/√groups, and its
    Student-t quantile falls with the degrees of freedom gained), and for :data:`MIN_ERRORS`
    where too few were seen. Inf or NaN: no number of groups will do."""
    with np.errstate(divide="ignore", invalid="ignore"):
        short = (held > target) & (errors < MIN_ERRORS)
        ratio = (half / target) ** 2
        guess = float(np.nanmax(np.where(short, 0, n_groups * ratio), initial=n_groups))
        if np.isfinite(guess):     # the quantile at the groups the spread asks for, not at today's
            ratio = ratio * (_student_t_quantile(t_level, max(guess, n_groups) - 1)
                             / _student_t_quantile(t_level, n_groups - 1)) ** 2
        ratio = np.where(short, MIN_ERRORS / np.maximum(errors, 1), ratio)
        return float(np.max(n_groups * ratio))


class _Draws:
    """Rows drawn uniformly without replacement, a round at a time, in the order of a uniform random
    permutation of ``range(n)`` (each row uniform over those not drawn yet) without making the
    permutation: a round costs its own rows, not n. Uniform draws are kept at their first
    occurrence and where not drawn before; at most half the rows are ever drawn (MAX_FRACTION),
    so a round needs a few tries at most."""

    def __init__(self, n: int, rng: np.random.Generator):
        self.n, self.rng, self.taken, self.count = n, rng, np.zeros(n, dtype=bool), 0

    def next(self, k: int) -> np.ndarray:
        """The next ``k`` rows drawn (fewer if fewer are left)."""
        out, k = [], min(k, self.n - self.count)
        self.count += k
        while k > 0:
            tries = self.rng.integers(0, self.n, size=k + k // 8 + 16)
            _, first = np.unique(tries, return_index=True)
            fresh = tries[np.sort(first)]
            fresh = fresh[~self.taken[fresh]][:k]
            self.taken[fresh] = True
            out.append(fresh)
            k -= fresh.size
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    def rest(self) -> np.ndarray:
        """Every row not drawn yet, sorted."""
        return np.flatnonzero(~self.taken)


class _Tally:
    """Running counts over the rows predicted so far, per loss column: rows, non-zero losses, and
    whether every loss lies in [0, 1] (a 0-1 loss, whose error rate bounds the term)."""

    def __init__(self):
        self.rows, self.errors, self.bounded = 0, 0, True

    def add(self, losses: np.ndarray) -> None:
        losses = losses.reshape(losses.shape[0], -1)
        self.rows += losses.shape[0]
        self.errors = self.errors + (losses != 0).sum(axis=0)
        self.bounded = self.bounded & ((losses >= 0) & (losses <= 1)).all(axis=0)


def _few_errors(half: np.ndarray, tally: _Tally, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """The half-widths, widened where a loss column has fewer than :data:`MIN_ERRORS` non-zero rows
    in the sample (the groups' spread says nothing there): a 0-1 loss's term is then at most the
    error rate's 99% upper bound ((e + 4.6) / m, Poisson) × n_Q (every kernel ≤ 1), and so is the
    estimate's error; any other loss has no such bound (infinite: more rows, or every row).
    Returns the half-widths and each column's count of non-zero losses."""
    errors = np.asarray(tally.errors)
    ceiling = np.where(tally.bounded, (errors + 4.6) / tally.rows * n_queries, np.inf)
    return np.where(errors >= MIN_ERRORS, half, np.maximum(half, ceiling)), errors


def _sampled(value: np.ndarray, half: np.ndarray, rows_seen: list, losses_seen: list, n_groups: int) -> RowSample:
    one = losses_seen[0].ndim == 1
    return RowSample(float(value[0]) if one else value, float(half[0]) if one else half, True,
                     np.concatenate(rows_seen), np.concatenate(losses_seen), n_groups)


def _every_row(draws: _Draws, rows_seen: list, losses_seen: list, losses_of, n: int) -> RowSample:
    """Every row's loss, the rows already predicted kept (for the exact term)."""
    rest = draws.rest()
    fresh = np.asarray(losses_of(rest), dtype=np.float64) if rest.size else None
    shape = (fresh if fresh is not None else losses_seen[0]).shape[1:]
    losses = np.empty((n, *shape))
    for rows, loss in zip(rows_seen, losses_seen):
        losses[rows] = loss
    if fresh is not None:
        losses[rest] = fresh
    return RowSample(float("nan"), float("nan"), False, np.arange(n), losses, len(rows_seen))
