"""The pure planner of a step: (policy document, manager state, observation) → plan; no I/O, no MLflow.

A step reads its batch, computes Ψ̄ of the model in use, asks :func:`plan_step` what to do,
applies the plan through the adapter (:mod:`cara_mlflow.lifecycle.executor`), and commits the
state :func:`settle` returns. Every rule of a step — the cooldown after a rejected challenger,
a forced retrain, a promotion resumed after a crash, a policy re-tuned since the last batch, a
rollback by hand — is decided here, in small functions over plain values.

>>> from cara_mlflow.policies import make_policy
>>> state = ManagerState.fresh(make_policy("cara-t", tau=1.0), version=1, kappa=5.0, batch=4)
>>> production = Production(version=1, trained_on=4)
>>> in_use = model_in_use(state, production, batch=5)
>>> plan = plan_step(_doc("cara-t", {"tau": 1.0}), state, production, in_use,
...                  BatchObservation(batch=5, psi_bar=2.5, n_classes=2))
>>> plan.action, plan.reason
('retrain', 'Ψ̄=2.5 ≥ τ=1')
>>> after = settle(plan, state, RetrainOutcome(challenger=2, gate="passed"), cooldown=3)
>>> after.model_version, after.cumulative_cost, after.last_retrain
(2, 10.0, LastRetrain(batch=5, version=2, gate='passed'))
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .errors import InputError
from .manager_state import LastRetrain, ManagerState
from .policies import Decision, Observation, Policy, make_policy
from .policy_doc import PolicyDocument

__all__ = ["Production", "InUse", "BatchObservation", "Plan", "RetrainOutcome", "model_in_use", "plan_step",
           "settle", "PROMOTED"]

#: Gate outcomes that put the challenger in production.
PROMOTED = ("passed", "off")


@dataclass(frozen=True)
class Production:
    """What the production alias points at now."""

    version: int
    trained_on: int | None


@dataclass(frozen=True)
class InUse:
    """The model a batch is judged against, and whether a promotion is being resumed.

    ``resumed``: production was already trained on this batch (or later), so a step killed after
    moving the alias and before its commit is being finished; the batch is judged against the
    version that served before (the state's), and the retrain is not redone.
    """

    version: int
    resumed: bool


@dataclass(frozen=True)
class BatchObservation:
    """What a step measured on its batch with the model in use."""

    batch: int
    psi_bar: float
    n_classes: int
    trained_on: int | None = None          # the batch the model in use was trained on
    errors: np.ndarray | None = None       # its per-sample 0/1 errors (drift detectors)
    late: bool = False                     # a batch that arrived after a later one was processed


@dataclass(frozen=True)
class Plan:
    """What a step will do with its batch, decided before anything is written."""

    batch: int
    action: str                  # "keep" | "retrain"
    reason: str
    resumed: bool
    trigger: str | None          # the version tag cara.trigger of a retrain: "manual" or the policy's name
    policy: dict[str, Any]       # the policy's JSON after deciding (before any reset by a promotion)
    score: float
    psi_bar: float
    kappa: float
    serving: int                 # the production version when the plan was made

    @property
    def retrain(self) -> bool:
        return self.action == "retrain"


@dataclass(frozen=True)
class RetrainOutcome:
    """What applying a retrain gave: the version registered and its gate outcome."""

    challenger: int
    gate: str


def model_in_use(state: ManagerState, production: Production, batch: int) -> InUse:
    """Which version judges ``batch``: production, unless a promotion to a model trained on this
    batch (or later) already landed, in which case the version before it (the state's)."""
    resumed = production.trained_on is not None and production.trained_on >= batch
    return InUse(state.model_version if resumed else production.version, resumed)


def _current_policy(doc: PolicyDocument, state: ManagerState, production: Production, in_use: InUse,
                    batch: int) -> Policy:
    """The policy as the last step left it; fresh if it was re-tuned since, reset if production
    was moved by hand (a rollback) — a policy restarts whenever production changes."""
    saved = state.make_policy()
    if (state.policy.get("policy"), state.policy.get("params")) != (doc.policy, dict(doc.params)):
        return make_policy(doc.policy, **doc.params)
    if not in_use.resumed and state.model_version != production.version:
        saved.reset(batch)
    return saved


def _trained_on(obs: BatchObservation) -> int:
    """The policies' ``t'``: the model's training batch, or the batch before (an adopted model
    or one trained on this very batch)."""
    t = obs.trained_on
    return t if t is not None and t < obs.batch else obs.batch - 1


def _reason(decision: Decision, state: ManagerState, in_use: InUse, force: bool, cooling: bool) -> str:
    if in_use.resumed:
        return "resuming a promotion that landed before a crash"
    if force:
        return "forced by --force-retrain"
    if decision.retrain and cooling:
        return f"{decision.reason}; cooling down until batch {state.cooldown_until}"
    return decision.reason


def plan_step(doc: PolicyDocument, state: ManagerState, production: Production, in_use: InUse,
              obs: BatchObservation, *, force_retrain: bool = False) -> Plan:
    """Keep or retrain ``obs.batch``, and why.

    The policy decides; a forced retrain or a resumed promotion overrides it; a retrain it asks
    for during the cooldown after a rejected challenger is not attempted. A retrain on a batch
    holding one class is refused (:class:`InputError`): the model would answer that class always.
    """
    policy = _current_policy(doc, state, production, in_use, obs.batch)
    # the drift detectors watch 0/1 errors: a per-sample loss (squared, a user's) counts as an error when > 0
    errors = None if obs.errors is None else (np.asarray(obs.errors) > 0).astype(np.int8)
    decision = policy.decide(Observation(t=obs.batch, trained_on=_trained_on(obs), psi_bar=obs.psi_bar,
                                         errors=errors, kappa=doc.kappa))
    cooling = state.cooldown_until is not None and obs.batch <= state.cooldown_until
    retrain = in_use.resumed or force_retrain or (decision.retrain and not cooling)
    if retrain and not in_use.resumed and obs.n_classes < 2:
        raise InputError(f"batch {obs.batch}: column {doc.target!r} holds one class only: a model retrained on it "
                         "would predict that label for everything; fix the batch, or skip it with "
                         f"`cara-mlflow skip --batch {obs.batch}`")
    return Plan(batch=obs.batch, action="retrain" if retrain else "keep",
                reason=_reason(decision, state, in_use, force_retrain, cooling), resumed=in_use.resumed,
                trigger=("manual" if force_retrain else doc.policy) if retrain else None,
                policy=policy.to_dict(), score=decision.score, psi_bar=obs.psi_bar, kappa=doc.kappa,
                serving=production.version)


def settle(plan: Plan, state: ManagerState, outcome: RetrainOutcome | None, *, cooldown: int) -> ManagerState:
    """The state after the plan was applied.

    Keep: Ψ̄ is paid. Retrain: κ is paid whether the challenger landed or not; a promotion resets
    the policy (production changed) and ends any cooldown; a rejection starts ``cooldown``
    batches without a retrain attempt and leaves the policy's accumulated staleness as it was.
    The version in use from then on is the one serving (the challenger, if it was promoted).
    """
    if not plan.retrain:
        return replace(state, policy=plan.policy, cumulative_cost=state.cumulative_cost + plan.psi_bar,
                       model_version=plan.serving)
    if outcome is None:
        raise ValueError("settle: a retrain plan needs its outcome")
    last = LastRetrain(plan.batch, outcome.challenger, outcome.gate)
    paid = state.cumulative_cost + plan.kappa
    if outcome.gate in PROMOTED:
        policy = Policy.from_dict(plan.policy)
        policy.reset(plan.batch)
        return ManagerState(policy=policy.to_dict(), cumulative_cost=paid, model_version=outcome.challenger,
                            cooldown_until=None, last_retrain=last)
    return replace(state, policy=plan.policy, cumulative_cost=paid, cooldown_until=plan.batch + cooldown,
                   last_retrain=last, model_version=plan.serving)


def _doc(policy: str, params: dict, kappa: float = 5.0) -> PolicyDocument:
    """A minimal document, for the examples above."""
    return PolicyDocument.from_dict({"format": 1, "name": "m", "policy": policy, "params": params, "kappa": kappa,
                                     "psi": {"gamma": 1.0}, "target": "label", "features": ["x"],
                                     "trainer": {"model": "lr"}})
