"""The check after a promotion: is the new production model worse than the one it replaced?

The gate compares a challenger with production on held-out rows of the batch it was trained on;
a mislabelled export, a bad join or an unrepresentative batch passes that check. So at the first
labelled batch after a promotion both models answer that batch, and each row's loss is weighted
as Ψ weights it (the query-weighted loss of the gate, :func:`~cara_mlflow.staleness.point_weights`).
With λ = Σ w ℓ / Σ w, the query-weighted mean loss of each model, the new model is reverted when

    λ_new − (1 + margin) · λ_old  >  half-width + floor

that is, when it is worse by more than ``margin`` (a fraction of the replaced model's loss) with
99% confidence, and by more than ``floor`` in absolute terms. The half-width is that of the
per-row quantity ℓ_new − (1 + margin) · ℓ_old (so the replaced model's loss, an estimate too, is
inside the interval), the larger of two estimates: rows as independent draws, and 30 contiguous
blocks of rows (batch means), since a real batch's rows come in time order and are correlated.
Both models are judged on the same rows and queries (the same samples when the batch is large),
so most of the noise cancels.

The margin (:data:`VERIFY_MARGIN`) and the floor (:data:`VERIFY_FLOOR`, for losses in [0, 1])
were chosen on the paper's streams (``benchmarks/verify_margin.py``; figures in
``benchmarks/README.md``): over 36 507 promotions that passed the gate on the synthetic streams
no revert was false (the new model truly worse by less than the margin, measured on a fresh draw
of the batch), while 10 555 of 11 760 models trained on inverted labels were reverted (most of
the rest where inverting does not hurt: the concept flipped, or the old model was at chance).

>>> rng = np.random.default_rng(0)
>>> Q, X = rng.normal(size=(200, 2)), rng.normal(size=(1000, 2))
>>> old = (rng.random(1000) < 0.1).astype(float)          # 10% wrong
>>> compare_models(Q, X, 1 - old, old, 0.5, seed=1).revert    # the inverted model: reverted
True
>>> compare_models(Q, X, old, old, 0.5, seed=1).revert        # the same answers: kept
False
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from .errors import InputError
from .staleness import DEFAULT_PSI_SCALE, _student_t_quantile, point_weights

__all__ = ["VERIFY_MARGIN", "VERIFY_FLOOR", "VERIFY_CONFIDENCE", "VERIFY_BLOCKS", "VERIFY_ROWS", "VERIFY_QUERIES",
           "Verdict", "PairedLosses", "paired_losses", "compare_models", "check_margin", "parse_margin"]

#: How much worse (relative to the replaced model's query-weighted loss) the new model must be, at
#: the lower end of its 99% interval, to be reverted. Chosen on the paper's streams (module docstring).
VERIFY_MARGIN = 0.25
#: And by how much in absolute terms, for a loss in [0, 1] (0-1: one percentage point of the
#: query-weighted error rate); a loss without a scale (squared, absolute, a user's) has none.
VERIFY_FLOOR = 0.01
VERIFY_CONFIDENCE = 0.99
VERIFY_BLOCKS = 30
#: Above these sizes the rows and the queries are sampled (uniformly, seeded, the same for both models).
VERIFY_ROWS = 20_000
VERIFY_QUERIES = 5_000


@dataclass(frozen=True)
class Verdict:
    """What the check after a promotion found: the two models' query-weighted mean losses on the
    batch, the 99% half-width of λ_new − (1 + margin) λ_old, and whether the new model is reverted."""

    revert: bool
    loss_new: float
    loss_old: float
    half_width: float
    margin: float
    rows: int                     # rows compared (all of them, or the sample)
    queries: int
    floor: float = 0.0

    @property
    def difference(self) -> float:
        return self.loss_new - self.loss_old

    @property
    def excess(self) -> float:
        """How far past the margin and the interval the new model's loss is (> floor: reverted)."""
        return self.loss_new - (1 + self.margin) * self.loss_old - self.half_width

    def describe(self, new: int, old: int) -> str:
        """One clause for the batch run's reason.

        >>> print(Verdict(True, 0.41, 0.12, 0.03, 0.25, 1000, 200).describe(5, 4))
        v5 worse than v4 on this batch (query-weighted loss 0.41 vs 0.12, ± 0.03; margin 25%): reverted to v4
        >>> print(Verdict(False, 0.1, 0.12, 0.01, 0.25, 1000, 200).describe(5, 4))
        v5 verified against v4 on this batch (query-weighted loss 0.1 vs 0.12, ± 0.01)
        """
        figures = f"query-weighted loss {self.loss_new:.3g} vs {self.loss_old:.3g}, ± {self.half_width:.2g}"
        if self.revert:
            floor = f", floor {self.floor:.2g}" if self.floor else ""
            return (f"v{new} worse than v{old} on this batch ({figures}; margin {self.margin:.0%}{floor}): "
                    f"reverted to v{old}")
        return f"v{new} verified against v{old} on this batch ({figures})"


@dataclass(frozen=True)
class PairedLosses:
    """Two models' losses on the same rows, and each row's weight near the queries: what a verdict
    at any margin is made from (:meth:`verdict`)."""

    weights: np.ndarray
    new: np.ndarray
    old: np.ndarray
    queries: int

    def verdict(self, margin: float = VERIFY_MARGIN, floor: float = 0.0) -> Verdict:
        """Revert iff λ_new − (1 + margin) λ_old − half-width > floor (module docstring)."""
        w = self.weights
        loss_new, loss_old = float(w @ self.new / w.sum()), float(w @ self.old / w.sum())
        d = self.new - (1 + margin) * self.old
        z = w * (d - (loss_new - (1 + margin) * loss_old)) / w.mean()      # each row's part, linearised
        half = _half_width(z)
        revert = loss_new - (1 + margin) * loss_old - half > floor
        return Verdict(bool(revert), loss_new, loss_old, half, margin, int(w.size), self.queries, floor)


def _half_width(z: np.ndarray) -> float:
    """99% half-width of mean(z) (Σ z = 0): rows independent, or correlated within contiguous blocks."""
    n = z.size
    rows = NormalDist().inv_cdf(0.5 + VERIFY_CONFIDENCE / 2) * float(z.std(ddof=1)) / np.sqrt(n)
    k = min(VERIFY_BLOCKS, n // 2)
    if k < 15:           # too few rows for batch means (and for the t quantile's expansion)
        return rows
    sums = np.array([block.sum() for block in np.array_split(z, k)])
    blocks = float(np.sqrt(k / (k - 1) * (sums ** 2).sum())) / n
    return max(rows, _student_t_quantile(0.5 + VERIFY_CONFIDENCE / 2, k - 1) * blocks)


def check_margin(margin) -> float:
    """A verification margin: a finite number ≥ 0 (a fraction of the replaced model's loss).

    >>> check_margin(0.5)
    0.5
    """
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not np.isfinite(margin) or margin < 0:
        raise InputError(f"verify margin: expected a number >= 0 (a fraction: 0.25 = 25% worse), got {margin!r}")
    return float(margin)


def parse_margin(text: str) -> float | None:
    """``--verify-margin``: a fraction ≥ 0, or ``off`` (None: no check after a promotion).

    >>> parse_margin("0.5"), parse_margin("off")
    (0.5, None)
    """
    if text.strip().lower() == "off":
        return None
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not np.isfinite(value) or value < 0:
        raise InputError(f"verify-margin: expected a fraction >= 0 (0.25: reverted when 25% worse) or off, "
                         f"got {text!r}")
    return value


def _sample(n: int, most: int, rng: np.random.Generator) -> np.ndarray | slice:
    return slice(None) if n <= most else np.sort(rng.choice(n, most, replace=False))


def checked_rows(n: int, seed=0, max_rows: int = VERIFY_ROWS) -> np.ndarray:
    """The rows :func:`paired_losses` reads of a batch of ``n`` rows with ``seed``: every row up to
    ``max_rows``, else that many drawn uniformly. Only these rows' losses are needed, so a caller
    predicts them alone.

    >>> checked_rows(5, seed=1)
    array([0, 1, 2, 3, 4])
    >>> rows = checked_rows(10**6, seed=(57, 3))
    >>> rows.size, bool((np.diff(rows) > 0).all())
    (20000, True)
    """
    rows = _sample(n, max_rows, np.random.default_rng(seed))
    return np.arange(n) if isinstance(rows, slice) else rows


def paired_losses(queries, X, losses_new, losses_old, gamma: float, *, scale: str = DEFAULT_PSI_SCALE, seed=0,
                  max_rows: int = VERIFY_ROWS, max_queries: int = VERIFY_QUERIES) -> PairedLosses | None:
    """Both models' per-row losses (one per row of ``X``) with each row's weight near ``queries``;
    rows and queries beyond ``max_rows`` / ``max_queries`` sampled uniformly with ``seed`` (rows
    kept in their order; :func:`checked_rows`: the losses of other rows are never read). The
    interval of a verdict covers the sampled rows; sampled queries judge both models alike and
    are not in it. None when the batch cannot tell: fewer than two rows, or
    rows that carry no query weight at all."""
    for name, losses in (("losses_new", losses_new), ("losses_old", losses_old)):
        if np.shape(losses) != (X.shape[0],):
            raise InputError(f"{name}: expected one loss per row ({X.shape[0]}), got shape {np.shape(losses)}")
    rng = np.random.default_rng(seed)
    rows = _sample(X.shape[0], max_rows, rng)
    picked = _sample(np.shape(queries)[0], max_queries, rng)
    w = point_weights(queries[picked], X[rows], gamma, scale=scale)
    if w.size < 2 or not w.sum() > 0:
        return None
    new, old = (np.asarray(v, dtype=np.float64)[rows] for v in (losses_new, losses_old))
    return PairedLosses(w, new, old, int(np.shape(queries[picked])[0]))


def compare_models(queries, X, losses_new, losses_old, gamma: float, *, scale: str = DEFAULT_PSI_SCALE,
                   seed=0, margin: float = VERIFY_MARGIN, floor: float = 0.0, max_rows: int = VERIFY_ROWS,
                   max_queries: int = VERIFY_QUERIES) -> Verdict | None:
    """The verdict on a new model (``losses_new``, one per row of ``X``) against the model it
    replaced (``losses_old``), at ``queries`` (:func:`paired_losses`, then :meth:`PairedLosses.verdict`);
    None when the batch cannot tell."""
    paired = paired_losses(queries, X, losses_new, losses_old, gamma, scale=scale, seed=seed, max_rows=max_rows,
                           max_queries=max_queries)
    return None if paired is None else paired.verdict(margin, floor)
