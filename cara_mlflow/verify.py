"""The check after a promotion: is the new production model worse than the one it replaced?

The gate compares a challenger with production on held-out rows of the batch it was trained on;
a mislabelled export, a bad join or an unrepresentative batch passes that check. So at the first
labelled batch after a promotion both models answer that batch, and each row's loss is weighted
as Ψ weights it (the query-weighted loss of the gate, :func:`~cara_mlflow.staleness.point_weights`).
The query-weighted mean losses λ = Σ w ℓ / Σ w are compared; the paired difference
Δ = λ_new − λ_old gets a 99% interval from the rows (each row's weighted difference, by the delta
method for a ratio), and the new model is reverted when

    Δ − half-width > margin · λ_old

that is, when it is worse by more than ``margin`` (relative to the replaced model's loss) with
99% confidence. Both models are judged on the same rows and queries (common random samples when
the batch is large), so most of the noise cancels in Δ.

The margin (:data:`VERIFY_MARGIN`) was chosen on the paper's streams: on every one, no promotion
that passed the gate came near it, while a model trained on inverted labels exceeds it many times
over (``benchmarks/verify_margin.py``; figures in ``benchmarks/README.md``).

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
from .staleness import DEFAULT_PSI_SCALE, point_weights

__all__ = ["VERIFY_MARGIN", "VERIFY_CONFIDENCE", "VERIFY_ROWS", "VERIFY_QUERIES", "Verdict", "compare_models",
           "check_margin", "parse_margin"]

#: How much worse (relative to the replaced model's query-weighted loss) the new model must be, at
#: the lower end of its 99% interval, to be reverted. Chosen on the paper's streams (module docstring).
VERIFY_MARGIN = 0.25
VERIFY_CONFIDENCE = 0.99
#: Above these sizes the rows and the queries are sampled (uniformly, seeded, the same for both models).
VERIFY_ROWS = 20_000
VERIFY_QUERIES = 5_000


@dataclass(frozen=True)
class Verdict:
    """What the check after a promotion found: the two models' query-weighted mean losses on the
    batch, the 99% half-width of their difference, and whether the new model is reverted."""

    revert: bool
    loss_new: float
    loss_old: float
    half_width: float
    margin: float
    rows: int                     # rows compared (all of them, or the sample)
    queries: int

    @property
    def difference(self) -> float:
        return self.loss_new - self.loss_old

    def describe(self, new: int, old: int) -> str:
        """One clause for the batch run's reason.

        >>> print(Verdict(True, 0.41, 0.12, 0.03, 0.25, 1000, 200).describe(5, 4))
        v5 worse than v4 on this batch (query-weighted loss 0.41 vs 0.12, difference ± 0.03; margin 25%): reverted to v4
        >>> Verdict(False, 0.1, 0.12, 0.01, 0.25, 1000, 200).describe(5, 4)
        'v5 verified against v4 on this batch (query-weighted loss 0.1 vs 0.12, difference ± 0.01)'
        """
        figures = (f"query-weighted loss {self.loss_new:.3g} vs {self.loss_old:.3g}, "
                   f"difference ± {self.half_width:.2g}")
        if self.revert:
            return f"v{new} worse than v{old} on this batch ({figures}; margin {self.margin:.0%}): reverted to v{old}"
        return f"v{new} verified against v{old} on this batch ({figures})"


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


def compare_models(queries, X, losses_new, losses_old, gamma: float, *, scale: str = DEFAULT_PSI_SCALE,
                   seed=0, margin: float = VERIFY_MARGIN, max_rows: int = VERIFY_ROWS,
                   max_queries: int = VERIFY_QUERIES) -> Verdict | None:
    """The verdict on a new model (``losses_new``, one per row of ``X``) against the model it
    replaced (``losses_old``), at ``queries``; None when the batch cannot tell (fewer than two
    rows, or rows that carry no query weight at all).

    Rows and queries beyond ``max_rows`` / ``max_queries`` are sampled uniformly with ``seed``;
    the interval then covers the sampling too.
    """
    new, old = np.asarray(losses_new, dtype=np.float64), np.asarray(losses_old, dtype=np.float64)
    rng = np.random.default_rng(seed)
    rows = _sample(X.shape[0], max_rows, rng)
    picked = _sample(np.shape(queries)[0], max_queries, rng)
    w = point_weights(queries[picked], X[rows], gamma, scale=scale)
    new, old = new[rows], old[rows]
    if w.size < 2 or not w.sum() > 0:
        return None
    mean_w = w.mean()
    loss_new, loss_old = float(w @ new / w.sum()), float(w @ old / w.sum())
    delta = loss_new - loss_old
    z = w * ((new - old) - delta) / mean_w               # each row's part of Δ, linearised
    half = NormalDist().inv_cdf(0.5 + VERIFY_CONFIDENCE / 2) * float(z.std(ddof=1)) / np.sqrt(w.size)
    revert = delta - half > margin * loss_old
    return Verdict(bool(revert), loss_new, loss_old, half, margin, int(w.size), int(np.shape(queries[picked])[0]))
