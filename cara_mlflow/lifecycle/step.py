"""``step``: the next batch after the commit point, as store → Ψ̄ → plan → apply → commit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from .. import validate
from ..batch import Batch
from ..errors import SetupError
from ..manager_state import ManagerState
from ..names import DEFAULT_COOLDOWN, DEFAULT_LOCK_TIMEOUT
from ..planner import Plan, Production, model_in_use, plan_step, settle
from ..policy_doc import PolicyDocument
from ..staleness import check_psi_method
from ..store import BatchStore, BatchStoreError
from ..tracking import registry as reg
from ..tracking.projects import resolve_project_uri
from .batch_run import batch_run, commit
from .executor import apply_retrain, log_decision, log_observation
from .frame import Phase, StepResult, active_policy, managed, no_phase
from .observe import PsiTerms, observe
from .records import committed_state, recover
from .timeline import write_timeline

__all__ = ["StepOptions", "step", "steps"]


@dataclass(frozen=True)
class StepOptions:
    """How a step runs (the ``step`` command's options).

    ``psi_method`` overrides the policy document's ``psi.method`` (tune's choice); ``gate`` off
    promotes a retrained model without comparing it with production; ``cooldown`` is the number
    of batches without a retrain attempt after a rejected challenger.
    """

    dry_run: bool = False
    force_retrain: bool = False
    gate: bool = True
    cooldown: int = DEFAULT_COOLDOWN
    project_uri: str | None = None
    psi_method: str | None = None

    def __post_init__(self):
        validate.count(self.cooldown, "cooldown")
        if self.psi_method is not None:
            check_psi_method(self.psi_method)
        if self.project_uri:       # checked before anything is read or written, as tune checks it
            object.__setattr__(self, "project_uri", resolve_project_uri(self.project_uri))


def step(store: BatchStore, registry: reg.Registry, options: StepOptions = StepOptions(), *,
         lock_timeout: float = DEFAULT_LOCK_TIMEOUT, on_phase: Phase = no_phase) -> StepResult:
    """Process the next batch after ``cara.last_batch`` (DESIGN.md "Batch store" order)."""
    with managed(store, registry, lock_timeout):
        return _step(store, registry, options, on_phase)


def steps(store: BatchStore, registry: reg.Registry, options: StepOptions = StepOptions(), *,
          lock_timeout: float = DEFAULT_LOCK_TIMEOUT, on_phase: Phase = no_phase) -> Iterator[StepResult]:
    """Every pending batch in order, under one lock: each result as soon as its batch is done.

    Ends after the first result that is not a processed batch (waiting, nothing to do, dry run).
    """
    with managed(store, registry, lock_timeout):
        while True:
            result = _step(store, registry, options, on_phase)
            yield result
            if result.status != "processed":
                return


def _step(store: BatchStore, registry: reg.Registry, options: StepOptions, on_phase: Phase) -> StepResult:
    doc = active_policy(registry)
    last = registry.last_batch()
    if last is None:
        raise SetupError(f"model {registry.name!r} is not initialised in {registry.where}: "
                         "run `cara-mlflow init --batch ID` first")
    info = store.next_after(last)
    if info is None:
        if not options.dry_run:
            recover(registry, last, None)
            write_timeline(registry, store, last)
        return StepResult("nothing", message=f"nothing to do: batch {last} is the last one in {store.batches_dir}")
    if not info.complete:
        return StepResult("waiting", info.id, message=f"waiting for batch {info.id} (no _SUCCESS yet)")
    try:
        batch = store.read(info.id, target=doc.target, space=doc.space)
    except BatchStoreError as exc:    # malformed: every run fails here, until fixed or skipped
        raise BatchStoreError(f"{exc}; fix the batch, or commit past it with "
                              f"`cara-mlflow skip --batch {info.id} --reason TEXT`") from None
    on_phase("after-read")
    if not options.dry_run:
        recover(registry, last, info.id)
        write_timeline(registry, store, last)
    state = committed_state(registry, last)
    serving = registry.production()
    production = Production(serving.version, serving.trained_on)
    in_use = model_in_use(state, production, info.id)
    version = registry.version(in_use.version) if in_use.resumed else serving
    method = options.psi_method or doc.psi.method
    obs, terms = observe(registry, version, batch, doc, method)
    on_phase("after-psi")
    plan = plan_step(doc, state, production, in_use, obs, force_retrain=options.force_retrain)
    if options.dry_run:
        return StepResult("dry-run", info.id, plan.psi_bar, plan.action, plan.reason, serving.version, None,
                          state.cumulative_cost)
    where = _Where(store, registry, doc, batch, version, method)
    return _apply(plan, state, terms, where, options, previous=last, on_phase=on_phase)


@dataclass(frozen=True)
class _Where:
    """What a plan is applied to: the store and registry, the policy, the batch, the model in use."""

    store: BatchStore
    registry: reg.Registry
    doc: PolicyDocument
    batch: Batch
    in_use: reg.VersionInfo
    psi_method: str


def _apply(plan: Plan, state: ManagerState, terms: PsiTerms, where: _Where, options: StepOptions, *,
           previous: int, on_phase: Phase) -> StepResult:
    """The plan applied on the batch's run, then the new state committed."""
    registry, store, batch = where.registry, where.store, where.batch
    with batch_run(registry, store, plan.batch, {reg.TAG_POLICY_VERSION: where.doc.version},
                   previous=previous) as run_id:
        log_observation(registry, run_id, terms, batch, plan.kappa)
        on_phase("after-batch-run")
        outcome = None
        if plan.retrain:
            outcome = apply_retrain(plan, store=store, registry=registry, doc=where.doc, batch=batch,
                                    in_use=where.in_use, gate_enabled=options.gate, psi_method=where.psi_method,
                                    project_uri=options.project_uri, on_phase=on_phase)
        after = settle(plan, state, outcome, cooldown=options.cooldown)
        log_decision(registry, run_id, plan, after, outcome)
        commit(registry, run_id, plan.batch, after, on_phase)
    return StepResult("processed", plan.batch, plan.psi_bar, plan.action, plan.reason, after.model_version,
                      None if outcome is None else outcome.gate, after.cumulative_cost)
