"""Offline tuning of a policy's parameters θ* on an offline cost matrix (Eq. 7).

θ* minimises the offline strategy cost of Algorithm 1 run from the first batch of
the window (its model is the initial one) to the last. The decision rules and their
vectorised offline evaluation live with the policy classes
(:meth:`~cara_mlflow.policies.Policy.offline_costs`); this module holds the searches,
chosen by what the class says, never by its name:

* A threshold (CARA-T, CARA-CT: ``offline_thresholds`` is not None), ``method="exact"``,
  the default: the strategy, and so its cost, is piecewise constant in the threshold
  and changes only where the threshold crosses one of the finitely many values the
  policy compares it with (the Ψ̄ entries for CARA-T, the running sums of Ψ̄ along
  each row for CARA-CT). Evaluating one threshold per interval finds the global
  optimum; the paper's dual annealing does not guarantee it (``method="dual_annealing"``
  reproduces the paper). Inside the optimal intervals we return the **midpoint of the
  widest one** (ties: the lowest), the point farthest from a change of strategy. The
  two outer intervals are unbounded; like a bounded optimiser we close them at
  ``pad = 10%`` of the range of the candidate values (10% of the mean κ if they
  are all equal) beyond the extreme values, and the top one at least at the largest
  κ, so a "never retrain" optimum still gives a finite threshold (between the largest
  offline value and κ) and the policy can react online to staleness beyond anything
  seen offline without retraining for trifles when κ is large.
  The threshold is tuned **relative to κ̄**, the mean κ of the window's diagonal
  (``offline_params``; ``kappa_relative=True``, the default): the policy retrains iff
  its score reaches ``τ·κ_t/κ̄`` (:class:`~cara_mlflow.policies.CaraT`), offline as
  online, and ``best_params_`` holds ``kappa: κ̄`` beside τ. The candidate values are
  then the largest τ each score reaches at its batch's κ_t/κ̄, the top bound at least
  κ̄. With a constant κ, κ_t/κ̄ is exactly 1: the candidates, the search and θ* are
  bit for bit the κ-blind ones (``kappa_relative=False``: τ whatever κ_t is).
* A finite grid (``offline_grid``), searched exhaustively: CARA-P's every period
  φ ∈ [1, T_offline] and offset a ∈ [0, φ) with the absolute batch index ``t``; ties
  broken by fewer offline retrains, then the grid's order (the longer period, then the
  smaller offset). An empty grid is one evaluation with nothing tuned: NR, and MARKOV,
  whose κ is read off the diagonal when it is constant (``offline_params``).
* Their own paths, said once in :meth:`PolicyTuner.fit`: the drift detectors
  (``needs_errors``) keep their defaults and have no offline cost; the ORACLE
  follower (``follows_oracle``) gets the ORACLE's retrain set of the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import validate
from .costs import check_cost_matrix
from .errors import InputError
from .names import TUNING_METHODS
from .policies import POLICIES, Policy

__all__ = ["TUNING_METHODS", "TuningResult", "PolicyTuner"]

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


class PolicyTuner:
    """Find θ* for a policy on an offline cost matrix (scikit-learn style: ``fit`` then ``best_params_``).

    The tuner knows search methods, not policies: it asks the policy's class
    (:data:`~cara_mlflow.policies.POLICIES`) for its offline evaluation
    (:meth:`~cara_mlflow.policies.Policy.offline_costs`) and for what to search
    (:meth:`~cara_mlflow.policies.Policy.offline_thresholds`,
    :meth:`~cara_mlflow.policies.Policy.offline_grid`).

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
    kappa_relative
        Tune thresholds relative to κ̄ (the default; see the module doc), or κ-blind (False:
        τ alone, as before κ-relative thresholds; a baseline under a changing κ).

    Examples
    --------
    >>> C = np.array([[1.0, 0.5, 2.0], [np.inf, 1.0, 0.1], [np.inf, np.inf, 1.0]])
    >>> tuner = PolicyTuner("cara-t").fit(C)
    >>> tuner.best_params_, tuner.best_cost_, tuner.best_strategy_
    ({'tau': 0.3, 'kappa': 1.0}, 2.1, [0, 1, 1])
    >>> PolicyTuner("cara-t", kappa_relative=False).fit(C).best_params_
    {'tau': 0.3}
    """

    def __init__(self, policy: str, *, method: str = "exact", start: int = 0, seed: int = 0,
                 kappa_relative: bool = True):
        self.policy = policy
        self.method = method
        self.start = start
        self.seed = seed
        self.kappa_relative = kappa_relative

    def fit(self, C, *, pool=()) -> "PolicyTuner":
        """Tune on the offline matrix ``C``; ``pool``: further windows' cost matrices (pooled history).

        With a pool, a threshold's offline cost is summed over ``C`` and every pooled window, each
        run from its own first batch, and the threshold stays relative to ``C``'s κ̄: the same
        exact search over the union of the windows' candidate values. ``best_cost_`` is the
        summed cost, ``best_strategy_`` the one on ``C``; ``result_.details["own_cost"]`` the
        cost on ``C`` alone.

        >>> C = np.array([[1.0, 0.5, 2.0], [np.inf, 1.0, 0.1], [np.inf, np.inf, 1.0]])
        >>> D = np.array([[1.0, 0.2, 0.3], [np.inf, 1.0, 0.1], [np.inf, np.inf, 1.0]])
        >>> t = PolicyTuner("cara-t").fit(C, pool=[D])
        >>> t.best_params_, t.best_cost_, t.best_strategy_, t.result_.details["own_cost"]
        ({'tau': 0.4, 'kappa': 1.0}, 3.6, [0, 1, 1], 2.1)
        """
        cls = POLICIES[validate.policy_name(self.policy)]
        if self.method not in TUNING_METHODS:
            raise InputError(f"method: unknown tuning method {self.method!r}: "
                             f"expected one of {', '.join(TUNING_METHODS)}")
        C = check_cost_matrix(C)
        if C.shape[0] < 2:
            raise InputError("C: the offline window needs at least 2 batches to tune a policy")
        pool = [check_cost_matrix(W) for W in pool]
        if pool and not cls.tunes_a_threshold():
            raise InputError(f"pool: pooled history tunes a threshold (cara-t, cara-ct), not the {cls.name} policy")
        if cls.follows_oracle:
            result = self._fit_oracle(C)
        elif cls.needs_errors:
            # Nothing tuned (river's defaults), and the offline strategy needs per-sample errors
            # that a cost matrix does not hold.
            result = TuningResult(self.policy, {}, float("nan"), [], "none",
                                  details={"note": "drift detector: default parameters, nothing tuned"})
        elif cls.offline_thresholds(C) is None:
            result = self._fit_grid(cls, C)
        else:
            result = self._fit_threshold(cls, [C, *pool], cls.offline_params(C) if self.kappa_relative else {})
        self.result_ = result
        self.best_params_ = result.params
        self.best_cost_ = result.cost
        self.best_strategy_ = result.strategy
        return self

    # -- a threshold: one representative per interval, or dual annealing ----
    def _fit_threshold(self, cls: type[Policy], windows: list[np.ndarray], fixed: dict) -> TuningResult:
        """``windows``: the offline matrix, then any pooled ones; ``fixed``: the parameters read off
        the first that the threshold is relative to (κ̄), or none."""
        name = cls.tunable[0]
        C = windows[0]
        values = np.unique(np.concatenate([cls.offline_thresholds(W, **fixed) for W in windows]))

        def evaluate(taus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # Summed left to right over the windows; the strategies are the first window's.
            own, strategies = cls._offline_costs(C, {name: taus, **fixed}, self.start)
            cost = own
            for W in windows[1:]:
                cost = cost + cls._offline_costs(W, {name: taus, **fixed}, 0)[0]
            return cost, strategies, own

        spread = float(values[-1] - values[0])
        pad = _PAD_FRACTION * (spread if spread > 0 else float(np.mean(np.diag(C))))
        # The top interval ("never retrain offline") reaches at least κ: a batch whose staleness
        # alone costs a retrain is a reason to retrain whatever the history said. Relative to κ̄,
        # τ = κ̄ is a threshold of κ_t at every batch (κ̄ is the constant κ when there is one).
        top = fixed["kappa"] if "kappa" in fixed else float(np.max(np.diag(C)))
        lo, hi = values[0] - pad, max(values[-1] + pad, top)
        if self.method == "dual_annealing":
            from scipy.optimize import dual_annealing

            found = dual_annealing(lambda x: float(evaluate(x)[0][0]), bounds=[(lo, hi)], seed=self.seed)
            tau = float(found.x[0])
            cost, strategies, own = evaluate(np.array([tau]))
            return TuningResult(self.policy, {name: tau, **fixed}, float(cost[0]), strategies[0].tolist(),
                                self.method, details={"bounds": [lo, hi], "evaluations": int(found.nfev),
                                                      "own_cost": float(own[0]), "n_windows": len(windows)})
        # One representative per interval (v_k, v_{k+1}]: its right end (see the module doc).
        costs, strategies, own = evaluate(np.concatenate([values, [np.inf]]))
        best = costs.min()
        left = np.concatenate([[lo], values])
        right = np.concatenate([values, [hi]])
        width = right - left
        optimal = np.flatnonzero(costs == best)
        k = int(optimal[np.argmax(width[optimal])])  # argmax takes the first (lowest) of ties
        tau = float(0.5 * (left[k] + right[k]))
        return TuningResult(self.policy, {name: tau, **fixed}, float(best), strategies[k].tolist(), self.method,
                            interval=(float(left[k]), float(right[k])),
                            details={"n_candidates": int(values.size), "n_optimal_intervals": int(optimal.size),
                                     "bounds": [float(lo), float(hi)], "own_cost": float(own[k]),
                                     "n_windows": len(windows)})

    # -- a finite grid (CARA-P), or nothing to tune (MARKOV, NR) -------------
    def _fit_grid(self, cls: type[Policy], C: np.ndarray) -> TuningResult:
        grid = cls.offline_grid(C)
        costs, strategies = cls._offline_costs(C, grid, self.start)
        n_retrains = (strategies[:, 1:] == np.arange(1, C.shape[0])).sum(axis=1)
        k = int(np.lexsort((n_retrains, costs))[0])  # a stable sort: ties keep the grid's order
        params = {**cls.offline_params(C), **{n: v[k].item() for n, v in grid.items()}}
        return TuningResult(self.policy, params, float(costs[k]), strategies[k].tolist(),
                            "exact" if grid else "none", details={"n_candidates": int(costs.size)} if grid else {})

    # -- the ORACLE follower: its retrain batches are the ORACLE's ------------
    def _fit_oracle(self, C: np.ndarray) -> TuningResult:
        from .oracle import solve

        sol = solve(C)
        strategy = np.asarray(sol.strategy)
        cost = float(C[strategy, np.arange(C.shape[0])].sum())
        return TuningResult(self.policy, {"retrain_at": [self.start + t for t in sol.retrain_at[1:]]}, cost,
                            [int(s) for s in strategy], "none")
