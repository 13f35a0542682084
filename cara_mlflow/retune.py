"""A threshold policy re-tuned on its growing history: Algorithm 1 whose θ* is found again every few
batches on every batch seen so far (issue 21, "beyond the paper").

At high κ a 25-batch offline window holds zero to two ORACLE retrains, and CARA-T's exact tuning
reduces to a tie-break inside a wide optimal interval. The batches that arrive online are more
history of the same kind: every ``every`` batches the threshold is tuned again, exactly
(:class:`~cara_mlflow.tuning.PolicyTuner`), on the offline window plus the online batches seen
*before* the one deciding (and any pooled windows), each window run from its own first batch.
Only past batches enter: the decision at batch ``t`` never reads a column ``>= t`` of the online
matrix except its own Ψ̄ and κ_t, as :func:`~cara_mlflow.simulate.run_policy`.

The policy's rule is unchanged (CARA-T: Retrain iff Ψ̄ ≥ τ·κ_t/κ̄, κ̄ the offline window's). A
re-tune that changes θ starts the policy afresh, as ``step`` does after a re-tune (CARA-CT's sum
restarts); one that finds the same θ keeps its state. In production this is
``cara-mlflow tune --offline all`` run again from cron, on one window of every batch so far (which
also holds the older models' Ψ̄ on the newer batches): each re-tune trains a model per batch of the
history and computes Ψ̄ for every pair, so its cost grows with the square of the history.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import validate
from .costs import check_cost_matrix
from .errors import InputError
from .policies import POLICIES, Observation, make_policy
from .tuning import PolicyTuner

__all__ = ["RetunedRun", "run_retuned"]


@dataclass(frozen=True)
class RetunedRun:
    """A re-tuned run: the local ``strategy``, its ``cost`` on the online matrix, and ``thresholds``,
    ``(t, θ)`` for each tuning, the batch from which it decided (0: the offline tuning)."""

    strategy: list[int]
    cost: float
    thresholds: list[tuple[int, float]]


def run_retuned(policy: str, C_off, C_on, *, every: int = 5, pool=(), start: int = 0) -> RetunedRun:
    """Run ``policy`` (``cara-t`` or ``cara-ct``) through ``C_on``, re-tuned every ``every`` batches.

    Parameters
    ----------
    policy
        A threshold policy's registry name.
    C_off
        The offline window's cost matrix: the first tuning's, and its κ̄ stays the reference.
    C_on
        The online window's cost matrix; its first batch trains the initial model.
    every
        Re-tune before deciding at local batches ``every, 2·every, …``; 0: never (CARA-T as tuned).
    pool
        Further windows' cost matrices (a user's other models of the same process), in every tuning.
    start
        Absolute index of the online window's first batch (the observations' ``t``).

    Examples
    --------
    >>> C_off = np.array([[4.0, 0.0, 0.0], [np.inf, 4.0, 0.0], [np.inf, np.inf, 4.0]])
    >>> C_on = np.full((10, 10), np.inf)
    >>> for s in range(10):                    # online, a model gets 0.5 staler every batch
    ...     C_on[s, s:] = [4.0] + [0.5 * (t - s) for t in range(s + 1, 10)]
    >>> run_retuned("cara-t", C_off, C_on, every=0)
    RetunedRun(strategy=[0, 0, 0, 0, 4, 4, 4, 4, 8, 8], cost=18.5, thresholds=[(0, 2.0)])
    >>> run_retuned("cara-t", C_off, C_on, every=3).thresholds
    [(0, 2.0), (3, 2.5), (6, 1.25), (9, 2.25)]
    """
    cls = POLICIES[validate.policy_name(policy)]
    C_off, C_on = check_cost_matrix(C_off), check_cost_matrix(C_on)
    if cls.offline_thresholds(C_off) is None:
        raise InputError(f"policy: re-tuning on the growing history tunes a threshold (cara-t, cara-ct), not {policy}")
    every = validate.count(every, "every")
    pool = list(pool)
    name = cls.tunable[0]
    params = PolicyTuner(policy).fit(C_off, pool=pool).best_params_
    p = make_policy(policy, **params)
    thresholds = [(0, float(params[name]))]
    tp, strategy = 0, [0]
    for t in range(1, C_on.shape[0]):
        if every and t % every == 0 and t >= 2:
            # Batches 0 … t−1 of the online window: everything seen before this one.
            params = PolicyTuner(policy).fit(C_off, pool=[*pool, C_on[:t, :t]]).best_params_
            retuned = make_policy(policy, **params)
            if retuned.get_params() == p.get_params():   # θ unchanged: the state carries on, as in step
                retuned.set_state(p.get_state())
            p = retuned
            thresholds.append((t, float(params[name])))
        obs = Observation(t=start + t, trained_on=start + tp, psi_bar=float(C_on[tp, t]), kappa=float(C_on[t, t]))
        if p.decide(obs).retrain:
            tp = t
            p.reset(start + t)
        strategy.append(tp)
    cost = float(C_on[strategy, np.arange(C_on.shape[0])].sum())
    return RetunedRun(strategy, cost, thresholds)
