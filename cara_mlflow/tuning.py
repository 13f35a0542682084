"""Offline tuning of a policy's parameters θ* on an offline cost matrix (Eq. 7).

θ* minimises the offline strategy cost of Algorithm 1 run from the first batch of
the window (its model is the initial one) to the last.

* CARA-T and CARA-CT (``method="exact"``, the default): the strategy, and so its
  cost, is piecewise constant in the threshold and changes only where the
  threshold crosses one of the finitely many values the policy compares it with
  (the Ψ̄ entries for CARA-T, the running sums of Ψ̄ along each row for CARA-CT).
  Evaluating one threshold per interval finds the global optimum; the paper's
  dual annealing does not guarantee it (``method="dual_annealing"`` reproduces the
  paper). Inside the optimal intervals we return the **midpoint of the widest one**
  (ties: the lowest), the point farthest from a change of strategy. The two
  outer intervals are unbounded; like a bounded optimiser we close them at
  ``pad = 10%`` of the range of the candidate values (10% of the mean κ if they
  are all equal) beyond the extreme values, and the top one at least at the largest
  κ, so a "never retrain" optimum still gives a finite threshold (between the largest
  offline value and κ) and the policy can react online to staleness beyond anything
  seen offline without retraining for trifles when κ is large.
* CARA-P: every period φ ∈ [1, T_offline] and offset a ∈ [0, φ) with the absolute
  batch index ``t``; ties broken by fewer offline retrains, then the longer period,
  then the smaller offset.
* MARKOV uses κ, NR and the drift detectors have nothing tuned (defaults), and the
  ORACLE follower is given its retrain set by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import validate
from .costs import check_cost_matrix, strategy_from_retrains
from .errors import InputError
from .names import TUNING_METHODS

__all__ = ["TUNING_METHODS", "TuningResult", "PolicyTuner", "threshold_costs"]

_PAD_FRACTION = 0.1


@dataclass(frozen=True)
class TuningResult:
    """What a tuning found: ``params`` (θ*), the offline ``cost``, the offline
    ``strategy`` (local indices) and, for thresholds, the optimal ``interval``."""

    policy: str
    params: dict
    cost: float
    strategy: list[int]
    method: str
    interval: tuple[float, float] | None = None
    details: dict = field(default_factory=dict)

    @property
    def n_retrains(self) -> int:
        s = np.asarray(self.strategy)
        return int((s[1:] == np.arange(1, s.size)).sum())


def threshold_costs(C: np.ndarray, taus: np.ndarray, *, cumulative: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Offline strategy cost and strategy of CARA-T (or CARA-CT) for many thresholds at once.

    Runs Algorithm 1 from batch 0 with every threshold in ``taus`` side by side
    (a loop over batches, vectorised over thresholds). Decisions are exactly the
    policies': Retrain iff Ψ̄ (or the running sum, accumulated left to right) ≥ τ.
    Returns ``(costs, strategies)`` with shapes ``(m,)`` and ``(m, T)``.

    >>> C = np.array([[1.0, 0.5, 2.0], [np.inf, 1.0, 0.1], [np.inf, np.inf, 1.0]])
    >>> costs, strategies = threshold_costs(C, np.array([0.4, 0.6, 9.0]))
    >>> costs.tolist(), strategies.tolist()
    ([2.1, 2.5, 3.5], [[0, 1, 1], [0, 0, 2], [0, 0, 0]])
    """
    T = C.shape[0]
    taus = np.asarray(taus, dtype=np.float64)
    tp = np.zeros(taus.shape[0], dtype=np.int64)
    cost = np.full(taus.shape[0], C[0, 0])
    cum = np.zeros(taus.shape[0])
    strategies = np.zeros((taus.shape[0], T), dtype=np.int64)
    for t in range(1, T):
        psi = C[tp, t]
        if cumulative:
            cum = cum + psi
            retrain = cum >= taus
            cum = np.where(retrain, 0.0, cum)
        else:
            retrain = psi >= taus
        cost += np.where(retrain, C[t, t], psi)
        tp = np.where(retrain, t, tp)
        strategies[:, t] = tp
    return cost, strategies


def _threshold_candidates(C: np.ndarray, cumulative: bool) -> np.ndarray:
    T = C.shape[0]
    if cumulative:
        values = [np.cumsum(C[tp, tp + 1:]) for tp in range(T - 1)]
        values = np.concatenate(values)
    else:
        values = C[np.triu_indices(T, 1)]
    return np.unique(values)


class PolicyTuner:
    """Find θ* for a policy on an offline cost matrix (scikit-learn style: ``fit`` then ``best_params_``).

    Parameters
    ----------
    policy
        A registered policy name (``cara-t``, ``cara-ct``, ``cara-p``, ``markov``,
        ``nr``, ``oracle``, ``adwin``, ``ddm``).
    method
        ``"exact"`` (default) or ``"dual_annealing"`` (SciPy, as the paper) for
        the thresholds of CARA-T / CARA-CT.
    start
        Absolute index of the window's first batch (CARA-P's ``t`` is absolute).
    seed
        Seed of the dual-annealing search.

    Examples
    --------
    >>> C = np.array([[1.0, 0.5, 2.0], [np.inf, 1.0, 0.1], [np.inf, np.inf, 1.0]])
    >>> tuner = PolicyTuner("cara-t").fit(C)
    >>> tuner.best_params_, tuner.best_cost_, tuner.best_strategy_
    ({'tau': 0.3}, 2.1, [0, 1, 1])
    """

    def __init__(self, policy: str, *, method: str = "exact", start: int = 0, seed: int = 0):
        self.policy = policy
        self.method = method
        self.start = start
        self.seed = seed

    def fit(self, C) -> "PolicyTuner":
        validate.policy_name(self.policy)
        if self.method not in TUNING_METHODS:
            raise InputError(f"method: unknown tuning method {self.method!r}: "
                             f"expected one of {', '.join(TUNING_METHODS)}")
        C = check_cost_matrix(C)
        if C.shape[0] < 2:
            raise InputError("C: the offline window needs at least 2 batches to tune a policy")
        if self.policy in ("cara-t", "cara-ct"):
            result = self._fit_threshold(C, cumulative=self.policy == "cara-ct")
        elif self.policy == "cara-p":
            result = self._fit_periodic(C)
        else:
            result = self._fit_untuned(C)
        self.result_ = result
        self.best_params_ = result.params
        self.best_cost_ = result.cost
        self.best_strategy_ = result.strategy
        return self

    # -- CARA-T / CARA-CT --------------------------------------------------
    def _fit_threshold(self, C: np.ndarray, cumulative: bool) -> TuningResult:
        name = "tau_cum" if cumulative else "tau"
        values = _threshold_candidates(C, cumulative)
        spread = float(values[-1] - values[0])
        pad = _PAD_FRACTION * (spread if spread > 0 else float(np.mean(np.diag(C))))
        # The top interval ("never retrain offline") reaches at least κ: a batch whose staleness
        # alone costs a retrain is a reason to retrain whatever the history said.
        lo, hi = values[0] - pad, max(values[-1] + pad, float(np.max(np.diag(C))))
        if self.method == "dual_annealing":
            from scipy.optimize import dual_annealing

            def objective(x):
                return float(threshold_costs(C, x, cumulative=cumulative)[0][0])

            found = dual_annealing(objective, bounds=[(lo, hi)], seed=self.seed)
            tau = float(found.x[0])
            cost, strategies = threshold_costs(C, np.array([tau]), cumulative=cumulative)
            return TuningResult(self.policy, {name: tau}, float(cost[0]), strategies[0].tolist(),
                                self.method, details={"bounds": [lo, hi], "evaluations": int(found.nfev)})
        # One representative per interval (v_k, v_{k+1}]: its right end (see the module doc).
        reps = np.concatenate([values, [np.inf]])
        costs, strategies = threshold_costs(C, reps, cumulative=cumulative)
        best = costs.min()
        left = np.concatenate([[lo], values])
        right = np.concatenate([values, [hi]])
        width = right - left
        optimal = np.flatnonzero(costs == best)
        k = int(optimal[np.argmax(width[optimal])])  # argmax takes the first (lowest) of ties
        tau = float(0.5 * (left[k] + right[k]))
        return TuningResult(self.policy, {name: tau}, float(best), strategies[k].tolist(), self.method,
                            interval=(float(left[k]), float(right[k])),
                            details={"n_candidates": int(values.size), "n_optimal_intervals": int(optimal.size),
                                     "bounds": [float(lo), float(hi)]})

    # -- CARA-P -------------------------------------------------------------
    def _fit_periodic(self, C: np.ndarray) -> TuningResult:
        T = C.shape[0]
        pairs = np.array([(phi, a) for phi in range(1, T + 1) for a in range(phi)], dtype=np.int64)
        t_abs = self.start + np.arange(T)
        mark = (t_abs[None, :] - pairs[:, 1:2]) % pairs[:, 0:1] == 0
        mark[:, 0] = True  # the initial model, not a decision
        local = np.arange(T)
        strategies = np.maximum.accumulate(np.where(mark, local, 0), axis=1)
        costs = C[strategies, local].sum(axis=1)
        n_retrains = mark[:, 1:].sum(axis=1)
        order = np.lexsort((pairs[:, 1], -pairs[:, 0], n_retrains, costs))
        k = int(order[0])
        phi, a = int(pairs[k, 0]), int(pairs[k, 1])
        return TuningResult(self.policy, {"phi": phi, "offset": a}, float(costs[k]),
                            strategies[k].tolist(), "exact", details={"n_candidates": int(len(pairs))})

    # -- nothing to tune ----------------------------------------------------
    def _fit_untuned(self, C: np.ndarray) -> TuningResult:
        T = C.shape[0]
        params: dict = {}
        if self.policy == "markov":
            kappa = np.diag(C)
            params = {"kappa": float(kappa[0])} if np.all(kappa == kappa[0]) else {}
            retrain = np.zeros(T, dtype=bool)
            tp = 0
            for t in range(1, T):
                if C[tp, t] >= C[t, t]:
                    retrain[t], tp = True, t
            strategy = strategy_from_retrains(np.flatnonzero(retrain), T)
        elif self.policy == "oracle":
            from .oracle import solve

            sol = solve(C)
            params = {"retrain_at": [self.start + t for t in sol.retrain_at[1:]]}
            strategy = np.asarray(sol.strategy)
        elif self.policy == "nr":
            strategy = np.zeros(T, dtype=np.int64)
        else:
            # ADWIN / DDM: nothing tuned (river's defaults), and their offline strategy
            # needs per-sample errors that a cost matrix does not hold.
            return TuningResult(self.policy, params, float("nan"), [], "none",
                                details={"note": "drift detector: default parameters, nothing tuned"})
        cost = float(C[strategy, np.arange(T)].sum())
        return TuningResult(self.policy, params, cost, [int(s) for s in strategy], "none")
