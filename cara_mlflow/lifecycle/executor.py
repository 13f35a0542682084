"""Apply a step's plan through the adapter: the batch run's record, and a retrain's train →
register → gate → promote. Every write here comes before the commit point, and each is re-doable
(a rerun reuses a finished retrain and a registered version)."""

from __future__ import annotations

from ..manager_state import ManagerState
from ..planner import PROMOTED, Plan, RetrainOutcome
from ..policy_doc import PolicyDocument
from ..store import BatchStore
from ..tracking import registry as reg
from .frame import Phase, no_phase
from .models import gate, train_and_register
from .observe import PsiTerms

__all__ = ["log_observation", "apply_retrain", "log_decision"]


def log_observation(registry: reg.Registry, run_id: str, terms: PsiTerms, batch, kappa: float) -> None:
    """What was measured on the batch, logged on its run before anything is decided."""
    registry.runs.log_metrics(run_id, {"psi_bar": terms.psi_bar, "psi_now": terms.now, "psi_then": terms.then,
                                       "kappa": kappa, "n_data": batch.n_rows, "n_queries": len(batch.queries)})


def apply_retrain(plan: Plan, *, store: BatchStore, registry: reg.Registry, doc: PolicyDocument, batch,
                  in_use: reg.VersionInfo, gate_enabled: bool, psi_method: str, project_uri: str | None,
                  on_phase: Phase = no_phase) -> RetrainOutcome:
    """Train (or reuse) the challenger of ``plan``, gate it against the model in use, promote it if
    it passed. A gate outcome already on the version (a killed step's) is kept, not re-judged."""
    challenger = train_and_register(registry, batch, doc, project_uri, trigger=plan.trigger, on_phase=on_phase)
    outcome = challenger.tags.get(reg.TAG_GATE) or gate(registry, challenger, in_use, batch, doc,
                                                        enabled=gate_enabled, method=psi_method)
    registry.tag_version(challenger.version, reg.TAG_GATE, outcome)
    on_phase("after-gate")
    if outcome in PROMOTED:
        registry.set_production(challenger.version)
        on_phase("after-alias")
    return RetrainOutcome(challenger.version, outcome)


def log_decision(registry: reg.Registry, run_id: str, plan: Plan, state: ManagerState,
                 outcome: RetrainOutcome | None) -> None:
    """The decision and its consequences on the batch run (tags and metrics of DESIGN.md)."""
    tags = {reg.TAG_DECISION: plan.action, reg.TAG_MODEL_VERSION: state.model_version, "cara.reason": plan.reason[:500]}
    if outcome is not None:
        tags[reg.TAG_GATE] = outcome.gate
    registry.runs.set_tags(run_id, tags)
    registry.runs.log_metrics(run_id, {"decision": float(plan.retrain), "cumulative_cost": state.cumulative_cost,
                                       "score": plan.score})
