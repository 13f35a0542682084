"""Apply a step's plan through the adapter: the batch run's record, and a retrain's train →
register → gate → promote. Every write here comes before the commit point, and each is re-doable
(a rerun reuses a finished retrain and a registered version)."""

from __future__ import annotations

from typing import Mapping

from ..manager_state import ManagerState
from ..planner import PROMOTED, Plan, RetrainOutcome
from ..policy_doc import PolicyDocument
from ..store import BatchStore
from ..tracking import registry as reg
from ..tracking.runs import TAG_NOTE, one_line
from .frame import Phase, no_phase
from .models import gate, train_and_register
from .observe import PsiTerms
from .training import training_seconds

__all__ = ["log_observation", "log_estimate", "apply_retrain", "log_decision", "describe", "ESTIMATOR_FILE"]

#: The loss estimator behind a provisional batch's Ψ̄, with its provenance, on the batch run.
ESTIMATOR_FILE = "estimator.json"


def log_observation(registry: reg.Registry, run_id: str, terms: PsiTerms, batch, kappa: float) -> None:
    """What was measured on the batch, logged on its run before anything is decided (for a first
    term estimated from a row sample, also its interval's half-width and the rows predicted)."""
    sampled = {} if terms.n_predicted is None else {"psi_now_half_width": terms.now_half_width,
                                                    "n_predicted": terms.n_predicted}
    registry.runs.log_metrics(run_id, {"psi_bar": terms.psi_bar, "psi_now": terms.now, "psi_then": terms.then,
                                       "kappa": kappa, "n_data": batch.n_rows, "n_queries": len(batch.queries),
                                       **sampled})


def log_estimate(registry: reg.Registry, run_id: str, estimate, queries, kappa: float) -> None:
    """What was estimated on a batch before its labels (``psi_bar`` is the estimate until the
    batch is reconciled, so the charts draw it), and the estimator, on the batch's run."""
    registry.runs.log_metrics(run_id, {"psi_bar": estimate.psi_bar, "psi_bar_estimated": estimate.psi_bar,
                                       "psi_now_estimated": estimate.now, "psi_then": estimate.then, "kappa": kappa,
                                       "n_queries": queries.n_queries, "provisional": 1.0,
                                       "estimator_fit_error": estimate.estimator.provenance["fit_error"]})
    registry.runs.log_dict(run_id, estimate.estimator.to_dict(), ESTIMATOR_FILE)


def apply_retrain(plan: Plan, *, store: BatchStore, registry: reg.Registry, doc: PolicyDocument, batch,
                  in_use: reg.VersionInfo, gate_enabled: bool, psi_method: str, project_uri: str | None,
                  on_phase: Phase = no_phase, parent_run_id: str | None = None,
                  decided_at: int | None = None) -> RetrainOutcome:
    """Train (or reuse) the challenger of ``plan``, gate it against the model in use, promote it if
    it passed. A gate outcome already on the version (a killed step's) is kept, not re-judged.
    ``parent_run_id``: the batch run, under which the UI nests the retrain run; ``decided_at``: the
    batch that decided it, when ``batch`` (the one it trains on) is an earlier, labelled one."""
    challenger = train_and_register(registry, batch, doc, project_uri, trigger=plan.trigger, on_phase=on_phase,
                                    parent_run_id=parent_run_id, decided_at=decided_at)
    outcome = challenger.tags.get(reg.TAG_GATE) or gate(registry, challenger, in_use, batch, doc,
                                                        enabled=gate_enabled, method=psi_method, kappa=plan.kappa)
    registry.tag_version(challenger.version, reg.TAG_GATE, outcome)
    on_phase("after-gate")
    if outcome in PROMOTED:
        registry.set_production(challenger.version)
        on_phase("after-alias")
    seconds = training_seconds(registry, challenger.tags.get(reg.TAG_TRAINING_RUN))
    return RetrainOutcome(challenger.version, outcome, seconds)


def describe(plan: Plan, state: ManagerState, outcome: RetrainOutcome | None) -> str:
    """One sentence for the batch run's description in the MLflow UI: the decision, what became
    of a challenger, then why. ``state`` is the state after the batch. The outcome comes before
    the reason because the runs table's Description column shows only the first ~50 characters.

    >>> from cara_mlflow.planner import _doc, Production, InUse, BatchObservation, plan_step, settle
    >>> from cara_mlflow.policies import make_policy
    >>> state = ManagerState.fresh(make_policy("cara-t", tau=1.0), version=3, kappa=5.0, batch=56)
    >>> doc, prod = _doc("cara-t", {"tau": 1.0}), Production(3, 56)
    >>> def plan(psi): return plan_step(doc, state, prod, InUse(3, False), BatchObservation(57, psi, 2))
    >>> describe(plan(0.41), settle(plan(0.41), state, None, cooldown=3), None)
    'Kept v3: Ψ̄=0.41 < τ=1.'
    >>> won = RetrainOutcome(4, "passed")
    >>> describe(plan(2.5), settle(plan(2.5), state, won, cooldown=3), won)
    'Retrained: v4 passed the gate and serves from batch 57 (Ψ̄=2.5 ≥ τ=1).'
    >>> lost = RetrainOutcome(4, "rejected")
    >>> describe(plan(2.5), settle(plan(2.5), state, lost, cooldown=3), lost)
    'Retrained: v4 was rejected by the gate, v3 still serves (Ψ̄=2.5 ≥ τ=1); no retrain attempt for the next 3 batches.'
    """
    why = plan.reason.rstrip(". ")
    if not plan.retrain or outcome is None:
        return f"Kept v{state.model_version}: {why}."
    new = f"v{outcome.challenger}"
    if outcome.gate == "passed":
        return f"Retrained: {new} passed the gate and serves from batch {plan.batch} ({why})."
    if outcome.gate in PROMOTED:                 # promoted with the gate off
        return f"Retrained: {new} serves from batch {plan.batch}, gate off ({why})."
    n = state.cooldown_left
    after = f"; no retrain attempt for the next {n} batch{'es' if n != 1 else ''}" if n else ""
    return f"Retrained: {new} was rejected by the gate, v{state.model_version} still serves ({why}){after}."


def log_decision(registry: reg.Registry, run_id: str, plan: Plan, state: ManagerState,
                 outcome: RetrainOutcome | None, guards_text: str = "none", *, extra_tags: Mapping = {},
                 extra_metrics: Mapping = {}, reverted: Mapping | None = None) -> None:
    """The decision and its consequences on the batch run (tags and metrics of DESIGN.md), what
    ``explain`` shows (the threshold, the κ that flips the answer, the guard rails in force as
    ``guards_text``), the money spent when κ comes from money (the batch's own ``spend_batch``
    and the running ``spend``), and :func:`describe`'s sentence as the run's
    description in the UI (after the revert, when the check of a promotion ``reverted`` one:
    ``{"from": V, "to": W}``). ``extra_tags`` and ``extra_metrics`` go in the same requests."""
    tags = {reg.TAG_DECISION: plan.action, reg.TAG_MODEL_VERSION: state.model_version, "cara.reason": plan.reason[:500]}
    if outcome is not None:
        tags[reg.TAG_GATE] = outcome.gate
    if plan.guard is not None:
        tags[reg.TAG_GUARD] = plan.guard
    if plan.deferred is not None:
        tags[reg.TAG_DEFERRED] = plan.deferred
    if plan.trigger is not None:
        tags[reg.TAG_TRIGGER] = plan.trigger
    tags[reg.TAG_GUARDS] = guards_text
    sentence = describe(plan, state, outcome)
    if plan.provisional:
        sentence = f"{sentence.rstrip('.')}, on Ψ̄ estimated before the labels."
    if reverted:
        sentence = f"Auto-reverted v{reverted['from']} -> v{reverted['to']}, then {sentence[0].lower()}{sentence[1:]}"
    tags[TAG_NOTE] = one_line(sentence, 300)     # the UI's description, same request
    tags.update(extra_tags)
    registry.runs.set_tags(run_id, tags)
    metrics = {"decision": float(plan.retrain), "cumulative_cost": state.cumulative_cost, "score": plan.score,
               **extra_metrics}
    if not plan.late:
        metrics["model_age"] = plan.age
    if plan.error_cost is not None:
        metrics.update(error_cost=plan.error_cost, spend=state.spend,
                       spend_batch=plan.error_cost * (plan.kappa if plan.retrain else plan.psi_bar))
    for key in ("threshold", "kappa_to_flip"):
        value = getattr(plan, key)
        if value is not None:
            metrics[key] = value
    registry.runs.log_metrics(run_id, metrics)
