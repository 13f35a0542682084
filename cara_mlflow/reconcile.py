"""Decisions before labels, kept honest: what a provisional batch leaves in the manager state, and
how the state is corrected when its labels land. Pure: no I/O, no MLflow.

A step that decides a batch on an estimated Ψ̄ (:mod:`cara_mlflow.estimate`) records it as
:class:`~cara_mlflow.manager_state.Provisional`, and the policy's observations since its last
reset as :class:`~cara_mlflow.manager_state.Observed`, from the policy's state at that reset
(``policy_base``). When the batch's labels land, :func:`reconcile` puts the realized Ψ̄ in place
of the estimate: the cumulative cost (and the money spent) of a kept batch moves by the
difference, and the policy is replayed from its base over the observations with the realized
value — CARA-CT's accumulated staleness, say, becomes what it would have been. When the replay
asks for a retrain at that batch where the policy, on the estimate, did not, the retrain was
missed: the step takes it now (a *catch-up*).

>>> from cara_mlflow.policies import make_policy
>>> from cara_mlflow.manager_state import ManagerState
>>> state = ManagerState.fresh(make_policy("cara-ct", tau_cum=3.0), version=1, kappa=5.0, batch=0)
>>> state = decided(state, batch=1, t=1, psi_bar=0.5, kappa=5.0, estimated=True, wanted=False, version=1)
>>> state.cumulative_cost, [p.batch for p in state.provisional]
(5.5, [1])
>>> state, catchup = reconcile(state, 1, realized=4.0)
>>> state.cumulative_cost, catchup, state.provisional, state.observed
(9.0, True, (), ())
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from .guards import record_attempt
from .manager_state import LastRetrain, ManagerState, Observed, Provisional
from .money import record_seconds
from .policies import Observation, policy_from_dict

__all__ = ["ESTIMATE_ERRORS_KEPT", "remember", "decided", "reconcile", "replay", "caught_up", "estimate_error"]

#: How many reconciled batches' (estimate, realized) pairs the state keeps (``status`` shows them).
ESTIMATE_ERRORS_KEPT = 10


def replay(base: Mapping[str, Any], observed) -> tuple[dict, list[bool]]:
    """The policy rebuilt from ``base`` and fed ``observed`` again: its JSON, and its answers.

    >>> from cara_mlflow.policies import make_policy
    >>> seen = [Observed(1, 1, 2.0, 5.0, False, False), Observed(2, 2, 2.0, 5.0, False, True)]
    >>> policy, answers = replay(make_policy("cara-ct", tau_cum=3.0).to_dict(), seen)
    >>> answers
    [False, True]
    """
    policy = policy_from_dict(base)
    answers = [policy.decide(Observation(t=o.t, trained_on=o.t - 1, psi_bar=o.psi_bar, errors=None,
                                         kappa=o.kappa)).retrain for o in observed]
    return policy.to_dict(), answers


def _collapsed(state: ManagerState) -> ManagerState:
    """Observations are kept only while one of them is an estimate (a replay may still need them)."""
    if any(o.estimated for o in state.observed):
        return state
    return replace(state, policy_base=None, observed=())


def remember(before: ManagerState, after: ManagerState, *, batch: int, t: int, psi_bar: float, kappa: float,
             estimated: bool, wanted: bool, version: int, policy_before: Mapping[str, Any], retrained: bool,
             promoted: bool) -> ManagerState:
    """``after`` (a step's settled state) with the batch's observation remembered.

    ``policy_before``: the policy as it decided (after any reset or re-tune since ``before``);
    ``version``: the model in use at the batch; ``promoted``: production changed at this batch,
    so the policy restarts from ``after.policy``. A batch decided on an estimate
    (``estimated``) also waits for its labels as a :class:`Provisional`.
    """
    seen = Observed(batch, t, float(psi_bar), float(kappa), estimated, wanted)
    if promoted:
        base, observed = after.policy, ()
    elif before.observed and dict(policy_before) == dict(before.policy):
        base, observed = before.policy_base, before.observed + (seen,)
    else:                        # the policy restarted (a rollback, a re-tune) or nothing was kept
        base, observed = policy_before, (seen,)
    waiting = before.provisional + ((Provisional(batch, int(version), float(psi_bar), t, not retrained),)
                                    if estimated else ())
    return _collapsed(replace(after, policy_base=dict(base), observed=observed, provisional=waiting))


def decided(state: ManagerState, *, batch: int, t: int, psi_bar: float, kappa: float, estimated: bool,
            wanted: bool, version: int) -> ManagerState:
    """The state after the policy kept the model at ``batch`` (for examples and tests: a step
    goes through the planner's ``settle`` and :func:`remember`)."""
    policy = policy_from_dict(state.policy)
    before = policy.to_dict()
    policy.decide(Observation(t=t, trained_on=t - 1, psi_bar=psi_bar, errors=None, kappa=kappa))
    after = replace(state, policy=policy.to_dict(), cumulative_cost=state.cumulative_cost + psi_bar, position=t)
    return remember(state, after, batch=batch, t=t, psi_bar=psi_bar, kappa=kappa, estimated=estimated,
                    wanted=wanted, version=version, policy_before=before, retrained=False, promoted=False)


def reconcile(state: ManagerState, batch: int, realized: float, *,
              error_cost: float | None = None) -> tuple[ManagerState, bool]:
    """The state with provisional ``batch``'s realized Ψ̄ in place of its estimate, and whether the
    policy, replayed on it, asks for the retrain the estimate missed (a catch-up).

    Raises ``KeyError`` when ``batch`` is not provisional in ``state``.
    """
    entry = next((p for p in state.provisional if p.batch == batch), None)
    if entry is None:
        raise KeyError(f"batch {batch} is not waiting to be reconciled")
    diff = float(realized) - entry.estimate if entry.kept else 0.0
    spend = state.spend + (diff * error_cost if error_cost is not None else 0.0)
    errors = (state.estimate_errors + ((batch, entry.estimate, float(realized)),))[-ESTIMATE_ERRORS_KEPT:]
    state = replace(state, provisional=tuple(p for p in state.provisional if p.batch != batch),
                    cumulative_cost=state.cumulative_cost + diff, spend=spend, estimate_errors=errors)
    at = next((i for i, o in enumerate(state.observed) if o.batch == batch and o.estimated), None)
    if at is None:               # production changed since: the policy restarted without it
        return _collapsed(state), False
    observed = list(state.observed)
    observed[at] = replace(observed[at], psi_bar=float(realized), estimated=False)
    policy, answers = replay(state.policy_base, observed)
    catchup = answers[at] and not state.observed[at].wanted
    return _collapsed(replace(state, policy=policy, observed=tuple(observed))), catchup


def caught_up(state: ManagerState, *, batch: int, version: int, gate: str, promoted: bool, kappa: float,
              cooldown: int, error_cost: float | None = None, training_seconds: float | None = None,
              policy_version: int | None = None) -> ManagerState:
    """The state after a catch-up retrain for reconciled ``batch``, taken at the current position:
    κ is paid (and counts against the retrain budget) whether it landed or not; a promotion
    restarts the policy and the model's age from here, a rejection starts the cooldown.

    >>> from cara_mlflow.policies import make_policy
    >>> s = ManagerState.fresh(make_policy("cara-t", tau=1.0), version=1, kappa=5.0, batch=0, position=9)
    >>> after = caught_up(s, batch=7, version=2, gate="passed", promoted=True, kappa=5.0, cooldown=3)
    >>> after.cumulative_cost, after.model_version, after.last_retrain, after.model_position
    (10.0, 2, LastRetrain(batch=7, version=2, gate='passed'), 9)
    """
    state = replace(state, cumulative_cost=state.cumulative_cost + kappa,
                    spend=state.spend + (kappa * error_cost if error_cost is not None else 0.0),
                    retrain_attempts=record_attempt(state.retrain_attempts, state.position),
                    training_seconds=record_seconds(state.retrain_seconds(policy_version), training_seconds),
                    timed_policy=policy_version, last_retrain=LastRetrain(batch, version, gate))
    if not promoted:
        return replace(state, cooldown_left=cooldown)
    policy = policy_from_dict(state.policy)
    policy.reset(state.position)
    return replace(state, policy=policy.to_dict(), model_version=version, cooldown_left=0,
                   model_position=state.position, policy_base=None, observed=(), verify=None)


def estimate_error(state: ManagerState) -> dict | None:
    """How far the estimates were from the realized Ψ̄ on the last reconciled batches (``status``).

    >>> from cara_mlflow.policies import make_policy
    >>> s = ManagerState.fresh(make_policy("nr"), version=1, kappa=1.0, batch=0)
    >>> estimate_error(replace(s, estimate_errors=((3, 1.0, 2.0), (4, 0.5, 0.0))))
    {'batches': [3, 4], 'mean_abs_error': 0.75, 'mean_error': -0.25, 'mean_abs_realized': 1.0}
    """
    if not state.estimate_errors:
        return None
    diffs = [e - r for _, e, r in state.estimate_errors]
    return {"batches": [b for b, _, _ in state.estimate_errors],
            "mean_abs_error": sum(map(abs, diffs)) / len(diffs), "mean_error": sum(diffs) / len(diffs),
            "mean_abs_realized": sum(abs(r) for _, _, r in state.estimate_errors) / len(diffs)}
