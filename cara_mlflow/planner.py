"""The pure planner of a step: (policy document, manager state, observation) → plan; no I/O, no MLflow.

A step reads its batch, computes Ψ̄ of the model in use, asks :func:`plan_step` what to do,
applies the plan through the adapter (:mod:`cara_mlflow.lifecycle.executor`), and commits the
state :func:`settle` returns. Every rule of a step — the cooldown after a rejected challenger,
a forced retrain, a promotion resumed after a crash, a policy re-tuned since the last batch, a
rollback by hand, a late batch — is decided here, in small functions over plain values.

Batches are counted, never their ids subtracted: a batch processed in order is one tick of the
stream's clock (CARA-P's ``t``, the cooldown), whatever the gap between its id and the last
(DESIGN.md "Batches and streams"). A late batch — one that landed in an id range the stream had
passed with no batch — is scored, paid and fed to the policy, but it is not a tick and never a
retrain.

>>> from cara_mlflow.policies import make_policy
>>> state = ManagerState.fresh(make_policy("cara-t", tau=1.0), version=1, kappa=5.0, batch=4)
>>> production = Production(version=1, trained_on=4)
>>> in_use = model_in_use(state, production, batch=5)
>>> plan = plan_step(_doc("cara-t", {"tau": 1.0}), state, production, in_use,
...                  BatchObservation(batch=5, psi_bar=2.5, n_classes=2, previous=4))
>>> plan.action, plan.reason
('retrain', 'Ψ̄=2.5 ≥ τ=1')
>>> after = settle(plan, state, RetrainOutcome(challenger=2, gate="passed"), cooldown=3)
>>> after.model_version, after.cumulative_cost, after.last_retrain, after.position
(2, 10.0, LastRetrain(batch=5, version=2, gate='passed'), 5)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .batch_ids import add_range, gap, is_date_id, remove_id
from .errors import InputError
from .explain import kappa_to_flip
from .guards import Guards, record_attempt
from .manager_state import LastRetrain, ManagerState, PendingCheck
from .money import record_seconds, record_spend
from .policies import Decision, Observation, Policy, make_policy
from .policy_doc import PolicyDocument
from .reconcile import remember

__all__ = ["Production", "InUse", "SchemaChange", "BatchObservation", "Plan", "RetrainOutcome", "model_in_use",
           "plan_step", "settle", "advance", "after_revert", "PROMOTED", "SCHEMA_SKIP", "NO_NEW_LABELS"]

#: Gate outcomes that put the challenger in production.
PROMOTED = ("passed", "off")
#: The guard of a provisional Retrain with no labelled batch newer than production's (tag cara.deferred).
NO_NEW_LABELS = "no-new-labels"
#: Why a schema promotion is not checked at the next batch.
SCHEMA_SKIP = "a schema promotion: reverting it would bring back the features the re-tune dropped"


@dataclass(frozen=True)
class Production:
    """What the production alias points at now."""

    version: int
    trained_on: int | None
    trained_at: int | None = None    # the position of its training batch, when known (after a rollback)
    decided_at: int | None = None    # the batch whose step asked for it, when later than trained_on

    @property
    def landed_at(self) -> int | None:
        """The batch at which this version became production's: the one that decided it."""
        return self.trained_on if self.decided_at is None else self.decided_at


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
class SchemaChange:
    """The policy's features differ from those the model in use was trained on (a re-tune).

    >>> SchemaChange.between(("a", "b"), ("b", "c")).describe()
    'features changed at re-tune (added c; removed a)'
    >>> SchemaChange.between(("a", "b"), ("b", "a")) is None
    True
    """

    added: tuple[str, ...]
    removed: tuple[str, ...]

    @classmethod
    def between(cls, trained: tuple[str, ...], policy: tuple[str, ...]) -> "SchemaChange | None":
        """The change from ``trained`` to ``policy`` features; None when they are the same set."""
        if not trained or set(trained) == set(policy):
            return None
        return cls(tuple(f for f in policy if f not in trained), tuple(f for f in trained if f not in policy))

    def describe(self) -> str:
        parts = [f"{word} {', '.join(names)}" for word, names in (("added", self.added), ("removed", self.removed))
                 if names]
        return f"features changed at re-tune ({'; '.join(parts)})"


@dataclass(frozen=True)
class BatchObservation:
    """What a step measured on its batch with the model in use."""

    batch: int
    psi_bar: float
    n_classes: int
    errors: np.ndarray | None = None       # the model's per-sample losses (the drift detectors' errors)
    late: bool = False                     # a batch that arrived after a later one was processed
    previous: int | None = None            # the batch processed in order before this one (its gap)
    schema: SchemaChange | None = None     # the model in use cannot be scored: Ψ̄ was not measured
    provisional: bool = False              # Ψ̄ estimated from the queries alone (the labels are not in)
    labelled: int | None = None            # provisional: the labelled batch a retrain trains on (None: none new)


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
    t: int = 0                   # the batch's position in the stream (CARA-P's t)
    late: bool = False
    previous: int | None = None  # the batch processed in order before this one
    guard: str | None = None     # the guard rail that changed the policy's answer: max-age, cooldown, budget
    model_position: int = 0      # the position of the batch the model in use was trained on
    policy_version: int | None = None   # the policy document's version (whose trainer retrains are timed under)
    error_cost: float | None = None     # the cost of one wrong answer, when κ comes from money
    threshold: float | None = None   # what the policy compared its score with (None: nothing comparable)
    kappa_to_flip: float | None = None   # the κ at which the policy's answer flips (None: no κ, or overridden)
    provisional: bool = False    # decided on an estimated Ψ̄, before the batch's labels
    train_on: int | None = None  # the batch a retrain trains on, when not this one (a provisional batch's)
    in_use: int | None = None    # the version the batch was judged with
    wanted: bool = False         # the policy itself asked for a retrain (before any guard)
    policy_before: dict | None = None   # the policy as it decided (after any restart)
    track: bool = False          # keep the policy's observations for reconciling (decisions before labels)

    @property
    def deferred(self) -> str | None:
        """Why a Retrain became a Keep (the tag ``cara.deferred``): ``"budget"`` (the retrain budget) or
        ``"no-new-labels"`` (decided before labels, and no labelled batch newer than production's)."""
        return self.guard if self.guard in ("budget", NO_NEW_LABELS) else None

    @property
    def age(self) -> int:
        """The model in use's age at this batch: batches processed in order since its own."""
        return self.t - self.model_position

    @property
    def retrain(self) -> bool:
        return self.action == "retrain"

    @property
    def schema(self) -> bool:
        """A retrain onto the policy's new features: no gate (the old model cannot be scored on them)."""
        return self.trigger == "schema"


@dataclass(frozen=True)
class RetrainOutcome:
    """What applying a retrain gave: the version registered and its gate outcome."""

    challenger: int
    gate: str
    training_seconds: float | None = None   # the challenger's training wall time, when it was timed


def model_in_use(state: ManagerState, production: Production, batch: int) -> InUse:
    """Which version judges ``batch``: production, unless a promotion to a model trained on this
    batch (or later; or decided at it, before its labels) already landed, in which case the
    version before it (the state's)."""
    resumed = production.landed_at is not None and production.landed_at >= batch
    return InUse(state.model_version if resumed else production.version, resumed)


def _current_policy(doc: PolicyDocument, state: ManagerState, production: Production, in_use: InUse,
                    batch: int) -> Policy:
    """The policy as the last step left it; fresh if it was re-tuned since, reset if production
    was moved by hand (a rollback) — a policy restarts whenever production changes."""
    saved = state.make_policy()
    tuned = make_policy(doc.policy, **doc.params)
    # compared with defaults filled in: a document may leave out a parameter at its default
    if (saved.name, saved.get_params()) != (tuned.name, tuned.get_params()):
        return tuned
    if not in_use.resumed and state.model_version != production.version:
        saved.reset(batch)
    return saved


def _reason(decision: Decision, state: ManagerState, in_use: InUse, force: bool, guard: str | None,
            late: bool, guards: Guards, age: int) -> str:
    if late:
        return f"late batch, scored and paid but never retrained on; {decision.reason}"
    if in_use.resumed:
        return "resuming a promotion that landed before a crash"
    if force:
        return "forced by --force-retrain"
    why = decision.reason
    if not decision.retrain and guards.too_old(age=age):
        why = f"{why}; the model is {age} batches old, more than the maximum age {guards.max_model_age}"
    if guard == "cooldown":
        more = state.cooldown_left - 1
        return f"{why}; cooling down ({more} more batch{'es' if more != 1 else ''} after this one)"
    if guard == "budget":
        n, w = guards.retrain_budget
        return f"{why}; deferred: the retrain budget allows {n} attempt{'s' if n != 1 else ''} in any {w} batches"
    if guard == NO_NEW_LABELS:
        return f"{why}; deferred: no new labels (no labelled batch is newer than the one production was trained on)"
    return why


def _error_cost(doc: PolicyDocument) -> float | None:
    return None if doc.money is None else doc.money.error_cost


def _model_position(state: ManagerState, production: Production, in_use: InUse) -> int:
    """Where the model in use was trained, as a position: the state's; after a rollback by hand,
    production's own training batch (or, when unknown, the rollback itself)."""
    if not in_use.resumed and state.model_version != production.version:
        return production.trained_at if production.trained_at is not None else state.position
    return state.position if state.model_position is None else state.model_position


def _guard(decision: Decision, state: ManagerState, guards: Guards, t: int, age: int) -> tuple[bool, str | None]:
    """Whether the guard rails retrain, and which one changed the policy's answer (in the order of
    :mod:`cara_mlflow.guards`: max age, cooldown, budget)."""
    aged = not decision.retrain and guards.too_old(age=age)
    wants = decision.retrain or aged
    if wants and state.cooldown_left > 0:
        return False, "cooldown"
    if wants and guards.over_budget(attempts=state.retrain_attempts, t=t):
        return False, "budget"
    return wants, "max-age" if aged else None


def plan_step(doc: PolicyDocument, state: ManagerState, production: Production, in_use: InUse,
              obs: BatchObservation, *, force_retrain: bool = False, guards: Guards | None = None) -> Plan:
    """Keep or retrain ``obs.batch``, and why.

    The policy decides; then the guard rails (``guards``, default the document's; see
    :mod:`cara_mlflow.guards`): a model past its maximum age is retrained, the cooldown after a
    rejected challenger blocks any retrain attempt, the retrain budget defers one. A forced
    retrain or a resumed promotion overrides them all. A late batch is always kept (the policy
    still sees its Ψ̄). A retrain on a batch holding one class is refused (:class:`InputError`):
    the model would answer that class always.
    """
    if obs.schema is not None:
        return _schema_plan(doc, state, production, in_use, obs)
    guards = doc.guards if guards is None else guards
    policy = _current_policy(doc, state, production, in_use, obs.batch)
    t = max(1, state.position if obs.late else state.position + 1)
    # the drift detectors watch 0/1 errors: a per-sample loss (squared, a user's) counts as an error when > 0
    errors = None if obs.errors is None else (np.asarray(obs.errors) > 0).astype(np.int8)
    kappa = doc.kappa_at(state.retrain_seconds(doc.version))
    seen = Observation(t=t, trained_on=t - 1, psi_bar=obs.psi_bar, errors=errors, kappa=kappa)
    before = policy.to_dict()
    decision = policy.decide(seen)
    position = _model_position(state, production, in_use)
    force_retrain = force_retrain and not obs.late
    wants, guard = _guard(decision, state, guards, t, t - position)
    if obs.late or in_use.resumed or force_retrain:
        guard = None
    retrain = not obs.late and (in_use.resumed or force_retrain or wants)
    if retrain and obs.provisional and obs.labelled is None and not in_use.resumed:
        retrain, guard = False, NO_NEW_LABELS     # one labelled batch never trains two versions
    if retrain and not in_use.resumed and obs.n_classes < 2:
        raise InputError(f"batch {obs.batch}: column {doc.target!r} holds one class only: a model retrained on it "
                         "would predict that label for everything; fix the batch, or skip it with "
                         f"`cara-mlflow skip --batch {obs.batch}`")
    trigger = "manual" if force_retrain else "max-age" if guard == "max-age" else doc.policy
    policy_decided = not (obs.late or in_use.resumed or force_retrain or guard is not None)
    return Plan(batch=obs.batch, action="retrain" if retrain else "keep",
                reason=_reason(decision, state, in_use, force_retrain, guard, obs.late, guards, t - position),
                resumed=in_use.resumed, trigger=trigger if retrain else None,
                policy=policy.to_dict(), score=decision.score, psi_bar=obs.psi_bar, kappa=kappa,
                serving=production.version, t=t, late=obs.late, previous=obs.previous, guard=guard,
                model_position=position, policy_version=doc.version, error_cost=_error_cost(doc),
                threshold=getattr(decision, "threshold", None),
                kappa_to_flip=kappa_to_flip(before, seen) if policy_decided else None,
                provisional=obs.provisional, train_on=obs.labelled if obs.provisional and retrain else None,
                in_use=in_use.version, wanted=decision.retrain, policy_before=before, track=doc.decide_before_labels)


def _schema_plan(doc: PolicyDocument, state: ManagerState, production: Production, in_use: InUse,
                 obs: BatchObservation) -> Plan:
    """Retrain on the policy's features (trigger ``schema``): the model in use was trained on
    others, so neither Ψ̄ nor a gate can compare it. The policy starts afresh from the new model."""
    if obs.late:
        raise ValueError("plan_step: a late batch is never retrained on; process the batch in order first")
    if obs.n_classes < 2 and not in_use.resumed:
        raise InputError(f"batch {obs.batch}: column {doc.target!r} holds one class only: the model for the new "
                         f"features cannot be trained on it; fix the batch, or skip it with "
                         f"`cara-mlflow skip --batch {obs.batch}`")
    reason = f"{obs.schema.describe()}: retrain on the new features, without a gate"
    if in_use.resumed:
        reason = f"resuming a promotion that landed before a crash; {reason}"
    return Plan(batch=obs.batch, action="retrain", reason=reason, resumed=in_use.resumed, trigger="schema",
                policy=make_policy(doc.policy, **doc.params).to_dict(), score=float("nan"), psi_bar=0.0,
                kappa=doc.kappa_at(state.retrain_seconds(doc.version)), serving=production.version,
                t=max(1, state.position + 1), previous=obs.previous,
                model_position=_model_position(state, production, in_use), policy_version=doc.version,
                error_cost=_error_cost(doc), track=doc.decide_before_labels)


def advance(state: ManagerState, batch: int, previous: int | None, *, late: bool = False) -> ManagerState:
    """The stream's clock after ``batch``: in order, one tick (position, cooldown) and the ids
    passed over since ``previous`` recorded as missing; late, the batch taken out of the missing.

    >>> from cara_mlflow.policies import make_policy
    >>> s = ManagerState.fresh(make_policy("nr"), version=1, kappa=1.0, batch=20261029, position=25)
    >>> s = advance(s, 20261102, 20261029)
    >>> s.position, s.missing, s.dated
    (26, ((20261030, 20261101),), True)
    >>> s = advance(s, 20261031, None, late=True)
    >>> s.position, s.missing, s.late
    (26, ((20261030, 20261030), (20261032, 20261101)), (20261031,))
    """
    if late:
        missing = remove_id([list(r) for r in state.missing], batch)
        return replace(state, missing=tuple(map(tuple, missing)), late=state.late + (batch,))
    dated = state.dated and is_date_id(batch)
    span = None if previous is None else gap(previous, batch)
    return replace(state, position=state.position + 1, cooldown_left=max(0, state.cooldown_left - 1),
                   missing=tuple(map(tuple, add_range([list(r) for r in state.missing], span))), dated=dated)


def _spent(plan: Plan, state: ManagerState) -> dict:
    """The money a batch decided with an error cost spent: Ψ̄ × error cost kept, κ_t × error cost
    (the retrain's cost) retrained; nothing for a policy whose κ is not money."""
    if plan.error_cost is None:
        return {}
    staleness, retrain = (0.0, plan.kappa) if plan.retrain else (plan.psi_bar, 0.0)
    staleness, retrain = staleness * plan.error_cost, retrain * plan.error_cost
    return {"spend": state.spend + staleness + retrain,
            "recent_spend": record_spend(state.recent_spend, staleness, retrain)}


def after_revert(state: ManagerState) -> ManagerState:
    """The state a batch is planned from once its check reverted the promotion before it: the
    check is done. The policy restarts (production changed) and decides the batch with the
    restored model as it would any batch: it may retrain on it at once, since the revert says the
    last training batch misled, not this one (a source that keeps misleading is capped by the
    retrain budget, and every revert is an event)."""
    return replace(state, verify=None)


def _pending_check(plan: Plan, state: ManagerState, outcome: RetrainOutcome | None) -> PendingCheck | None:
    """What the next batch in order checks: a promotion made now; a late batch leaves a pending
    check for the batch in order; any other batch in order has done it."""
    if outcome is not None and outcome.gate in PROMOTED:
        replaced = state.model_version if plan.resumed else plan.serving
        return PendingCheck(outcome.challenger, replaced, plan.batch, SCHEMA_SKIP if plan.schema else None)
    return state.verify if plan.late else None


def settle(plan: Plan, state: ManagerState, outcome: RetrainOutcome | None, *, cooldown: int) -> ManagerState:
    """The state after the plan was applied.

    Keep: Ψ̄ is paid. Retrain: κ is paid whether the challenger landed or not, and the attempt
    counts against the retrain budget; a promotion resets the policy (production changed), the
    model's age and any cooldown, and is checked at the next batch in order (``verify``); a
    rejection starts ``cooldown`` batches without a retrain attempt and leaves the policy's
    accumulated staleness as it was. The version in use from then on is the one serving (the
    challenger, if it was promoted). Under decisions before labels (``plan.track``) the batch's
    observation is remembered for reconciling (:func:`cara_mlflow.reconcile.remember`).
    """
    after = _settled(plan, state, outcome, cooldown)
    if not plan.track:
        return after
    return remember(state, after, batch=plan.batch, t=plan.t, psi_bar=plan.psi_bar, kappa=plan.kappa,
                    estimated=plan.provisional, wanted=plan.wanted,
                    version=plan.serving if plan.in_use is None else plan.in_use,
                    policy_before=plan.policy_before or plan.policy, retrained=plan.retrain,
                    promoted=plan.retrain and outcome is not None and outcome.gate in PROMOTED)


def _settled(plan: Plan, state: ManagerState, outcome: RetrainOutcome | None, cooldown: int) -> ManagerState:

    state = replace(state, verify=_pending_check(plan, state, outcome))
    state = advance(state, plan.batch, plan.previous, late=plan.late)
    state = replace(state, model_position=plan.model_position, **_spent(plan, state))
    if not plan.retrain:
        return replace(state, policy=plan.policy, cumulative_cost=state.cumulative_cost + plan.psi_bar,
                       model_version=plan.serving)
    if outcome is None:
        raise ValueError("settle: a retrain plan needs its outcome")
    last = LastRetrain(plan.batch, outcome.challenger, outcome.gate)
    paid = state.cumulative_cost + plan.kappa
    state = replace(state, retrain_attempts=record_attempt(state.retrain_attempts, plan.t),
                    training_seconds=record_seconds(state.retrain_seconds(plan.policy_version),
                                                    outcome.training_seconds),
                    timed_policy=plan.policy_version)
    if outcome.gate in PROMOTED:
        policy = Policy.from_dict(plan.policy)
        policy.reset(plan.t)
        return replace(state, policy=policy.to_dict(), cumulative_cost=paid, model_version=outcome.challenger,
                       cooldown_left=0, last_retrain=last, model_position=plan.t)
    return replace(state, policy=plan.policy, cumulative_cost=paid, cooldown_left=cooldown,
                   last_retrain=last, model_version=plan.serving)


def _doc(policy: str, params: dict, kappa: float = 5.0) -> PolicyDocument:
    """A minimal document, for the examples above."""
    return PolicyDocument.from_dict({"format": 1, "name": "m", "policy": policy, "params": params, "kappa": kappa,
                                     "psi": {"gamma": 1.0}, "target": "label", "features": ["x"],
                                     "trainer": {"model": "lr"}})
