"""ORACLE: the optimal retraining strategy in hindsight (§6, Eq. 12–14).

With ``v*(t)`` the cheapest cost of batches ``0..t`` and ``R[p, t] = Σ_{j=p}^{t} C[p, j]``
the cost of training at ``p`` and keeping that model through ``t``::

    v*(t) = min_{p ≤ t} R[p, t] + v*(p − 1),   v*(−1) = 0,

which is Eq. 13–14 with the DP table of Algorithm 2 folded into row prefix sums.
O(T²) time and memory. The first model is always trained at batch 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .costs import check_cost_matrix, strategy_cost, strategy_from_retrains

__all__ = ["OracleResult", "solve"]


@dataclass(frozen=True)
class OracleResult:
    """The optimal strategy: its ``cost``, the batches ``retrain_at`` where a model is
    trained (starting with 0, the initial model, which is not a Retrain decision), and
    the ``strategy`` (one model index per batch)."""

    cost: float
    retrain_at: list[int]
    strategy: list[int]

    @property
    def n_retrains(self) -> int:
        """Retrain decisions: trainings after the initial model."""
        return len(self.retrain_at) - 1


def solve(C) -> OracleResult:
    """Optimal strategy for the cost matrix ``C`` (DESIGN.md contract).

    Ties are broken towards the earliest last retrain, i.e. fewer retrains.

    >>> C = np.array([[1.0, 5.0, 5.0],
    ...               [np.inf, 1.0, 0.0],
    ...               [np.inf, np.inf, 1.0]])
    >>> r = solve(C)
    >>> r.cost, r.retrain_at, r.strategy
    (2.0, [0, 1], [0, 1, 1])
    """
    C = check_cost_matrix(C)
    T = C.shape[0]
    # R[p, t] = Σ_{j=p}^{t} C[p, j]; below the diagonal stays inf (cumsum of inf is inf).
    upper = np.triu(C)
    R = np.cumsum(upper, axis=1)
    R[np.tril_indices(T, -1)] = np.inf
    v = np.empty(T)          # v*(t)
    last = np.empty(T, dtype=np.int64)  # argmin p: the last training of the best strategy through t
    prev = np.concatenate([[0.0], v[:-1]])  # v*(p − 1), filled in as v grows
    for t in range(T):
        totals = R[: t + 1, t] + prev[: t + 1]
        p = int(np.argmin(totals))
        v[t], last[t] = totals[p], p
        if t + 1 < T:
            prev[t + 1] = v[t]
    retrain_at = []
    t = T - 1
    while t >= 0:
        p = int(last[t])
        retrain_at.append(p)
        t = p - 1
    retrain_at.sort()
    strategy = strategy_from_retrains(retrain_at, T)
    # Report the cost summed along the strategy, exactly as strategy_cost does for any
    # policy, so that SCPE(ORACLE) is 0 and comparisons are free of rounding noise.
    return OracleResult(cost=strategy_cost(C, strategy), retrain_at=retrain_at, strategy=strategy.tolist())
