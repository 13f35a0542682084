"""``step``: the next batch after the commit point, as store → Ψ̄ → plan → apply → commit."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np

from .. import validate
from ..backends import DEFAULT_RETRAIN_TIMEOUT, Backend, check_retrain_timeout, parse_backend_config
from ..batch import Batch, QueryBatch
from ..batch_ids import is_date_id
from ..errors import SetupError
from ..guards import Guards
from ..manager_state import ManagerState
from ..names import DEFAULT_COOLDOWN, DEFAULT_LOCK_TIMEOUT
from ..notify import check_command, check_timeout
from ..planner import (
    PROMOTED,
    BatchObservation,
    InUse,
    Plan,
    Production,
    SchemaChange,
    after_revert,
    model_in_use,
    plan_step,
    settle,
)
from ..policy_doc import PolicyDocument
from ..staleness import check_psi_method
from ..store import BatchStore, BatchStoreError, BatchStoreWarning
from ..tracking import registry as reg
from ..tracking.projects import TAG_BACKEND, check_backend, resolve_project_uri
from ..verify import parse_margin
from .batch_run import batch_run, commit
from .events import Notifier, outcome_events, reporting_failure, revert_event
from .executor import apply_retrain, log_decision, log_estimate, log_observation
from .frame import Phase, StepResult, active_policy, managed, no_phase
from .observe import PsiTerms, observe
from .pending import Pending, counted_from_window, next_pending, position_of
from .provisional import Estimate, estimate, labelled_batch
from .reconciliation import Reconciled, reconcile_ready
from .records import commit_point, committed_state, recover
from .timeline import write_timeline
from .verification import Check, check_promotion, revert

__all__ = ["StepOptions", "step", "steps"]


@dataclass(frozen=True)
class StepOptions:
    """How a step runs (the ``step`` command's options).

    ``psi_method`` overrides the policy document's ``psi.method`` (tune's choice); ``gate`` off
    promotes a retrained model without comparing it with production; ``cooldown`` is the number
    of batches without a retrain attempt after a rejected challenger. ``max_model_age`` and
    ``retrain_budget`` override the policy's guard rails (:class:`~cara_mlflow.guards.Guards`:
    ``"off"`` switches one off, ``None`` keeps the policy's). ``notify`` and ``notify_timeout``
    override the policy's notification command (:mod:`cara_mlflow.lifecycle.events`),
    ``verify_margin`` its margin for the check after a promotion (``"off"``: no check).
    ``backend`` and ``backend_config`` override where the policy's retrains run
    (:mod:`cara_mlflow.backends`); ``retrain_timeout`` is how long a step waits for a detached one.
    """

    dry_run: bool = False
    force_retrain: bool = False
    gate: bool = True
    cooldown: int = DEFAULT_COOLDOWN
    project_uri: str | None = None
    psi_method: str | None = None
    max_model_age: str | None = None
    retrain_budget: str | None = None
    notify: str | None = None               # a command per event (None: the policy's; "off": none)
    notify_timeout: float | None = None     # seconds (None: the policy's, else 10)
    verify_margin: str | None = None        # the check after a promotion: a fraction, or "off" (None: the policy's)
    backend: str | None = None              # where a retrain runs (None: the policy's)
    backend_config: str | None = None       # JSON or a .json file (None: the policy's, for its backend)
    retrain_timeout: float = DEFAULT_RETRAIN_TIMEOUT   # seconds a step waits for a detached retrain

    def __post_init__(self):
        validate.count(self.cooldown, "cooldown")
        check_command(self.notify)
        if self.verify_margin is not None:
            parse_margin(self.verify_margin)
        if self.notify_timeout is not None:
            check_timeout(self.notify_timeout)
        self.guards(Guards())           # checked before anything is read or written
        if self.psi_method is not None:
            check_psi_method(self.psi_method)
        if self.project_uri:       # checked before anything is read or written, as tune checks it
            object.__setattr__(self, "project_uri", resolve_project_uri(self.project_uri))
        check_retrain_timeout(self.retrain_timeout)
        if self.backend is not None or self.backend_config is not None:
            check_backend(self.retrain_backend(Backend()))

    def retrain_backend(self, stored: Backend) -> Backend:
        """Where this step's retrains run: the policy's ``stored`` backend, with the options' overrides
        (a new backend name without a configuration starts from none)."""
        name = self.backend or stored.name
        config = (parse_backend_config(self.backend_config) if self.backend_config is not None
                  else stored.config if name == stored.name else {})
        return Backend(name, config, self.retrain_timeout)

    def guards(self, stored: Guards) -> Guards:
        """The guard rails of this step: the policy's ``stored`` ones, with the options' overrides."""
        return stored.override(max_model_age=self.max_model_age, retrain_budget=self.retrain_budget)


def step(store: BatchStore, registry: reg.Registry, options: StepOptions = StepOptions(), *,
         lock_timeout: float = DEFAULT_LOCK_TIMEOUT, on_phase: Phase = no_phase) -> StepResult:
    """Process the next batch after ``cara.last_batch`` (DESIGN.md "Batch store" order)."""
    notifier = Notifier(registry.name, options.notify, options.notify_timeout)
    with reporting_failure(notifier), managed(store, registry, lock_timeout):
        return _step(store, registry, options, on_phase, notifier)


def steps(store: BatchStore, registry: reg.Registry, options: StepOptions = StepOptions(), *,
          lock_timeout: float = DEFAULT_LOCK_TIMEOUT, on_phase: Phase = no_phase) -> Iterator[StepResult]:
    """Every pending batch in order, under one lock: each result as soon as its batch is done.

    Ends after the first result that is not a processed batch (waiting, nothing to do, dry run).
    """
    notifier = Notifier(registry.name, options.notify, options.notify_timeout)
    with reporting_failure(notifier), managed(store, registry, lock_timeout):
        while True:
            notifier.begin(None)
            result = _step(store, registry, options, on_phase, notifier)
            yield result
            if result.status != "processed":
                return


def _step(store: BatchStore, registry: reg.Registry, options: StepOptions, on_phase: Phase,
          notifier: Notifier) -> StepResult:
    doc = active_policy(registry)
    doc = replace(doc, backend=check_backend(options.retrain_backend(doc.backend)))   # before anything is written
    notifier.configure(doc)
    last, state = _committed(store, registry, doc, options)
    state, reconciled = _reconcile(store, registry, doc, state, last, options, on_phase)
    result = _step_batch(store, registry, options, on_phase, notifier, doc, last, state)
    return replace(result, reconciled=tuple(r.to_dict() for r in reconciled)) if reconciled else result


def _reconcile(store: BatchStore, registry: reg.Registry, doc: PolicyDocument, state: ManagerState, last: int,
               options: StepOptions, on_phase: Phase) -> tuple[ManagerState, list[Reconciled]]:
    """The provisional batches whose labels landed, reconciled first (not in a dry run)."""
    if options.dry_run or not state.provisional:
        return state, []
    return reconcile_ready(store, registry, doc, state, last=last, method=options.psi_method or doc.psi.method,
                           guards=options.guards(doc.guards), cooldown=options.cooldown, gate=options.gate,
                           project_uri=options.project_uri, on_phase=on_phase)


def _step_batch(store: BatchStore, registry: reg.Registry, options: StepOptions, on_phase: Phase,
                notifier: Notifier, doc: PolicyDocument, last: int, state: ManagerState) -> StepResult:
    serving = registry.production()
    production = _production(store, doc, state, serving)
    resuming = production.landed_at is not None and production.landed_at > last
    # a resumed promotion, or a retrain forced by hand, is for the batch in order: before late ones
    work = next_pending(store, state, last, in_order_first=resuming or options.force_retrain)
    if work is None:
        if not options.dry_run:
            write_timeline(registry, store, last, late=state.late)
        return StepResult("nothing", message=f"nothing to do: batch {last} is the last one in {store.batches_dir}")
    if not work.info.complete:
        if doc.decide_before_labels and not work.late and work.info.queries_ready:
            where = _Where(store, registry, doc, None, serving, options.psi_method or doc.psi.method,
                           options.guards(doc.guards), notifier=notifier)
            return _provisional(where, state, production, work, options, last, on_phase)
        return _waiting(work.info.id)
    return _labelled(store, registry, options, on_phase, notifier, doc, (last, state), (serving, production), work)


def _labelled(store: BatchStore, registry: reg.Registry, options: StepOptions, on_phase: Phase, notifier: Notifier,
              doc: PolicyDocument, committed: tuple[int, ManagerState], serves: tuple[reg.VersionInfo, Production],
              work: Pending) -> StepResult:
    """A batch whose labels are in: read, measured (after the check of a promotion before it), planned,
    applied."""
    (last, state), (serving, production) = committed, serves
    if state.dated and not is_date_id(work.info.id):
        warnings.warn(f"batch {work.info.id}: not a YYYYMMDD date, while every id processed so far is one; "
                      "processed anyway (check the producer's ids)", BatchStoreWarning, stacklevel=2)
    notifier.begin(work.info.id)
    batch = _read(store, doc, work.info.id, late=work.late)
    on_phase("after-read")
    if not options.dry_run:
        recover(registry, None, work.info.id)
        write_timeline(registry, store, last, late=state.late)
    method = options.psi_method or doc.psi.method
    in_use, version, obs, terms = _measure(registry, doc, state, production, serving, work, batch, method)
    if work.late and obs.schema is not None:
        instead = _in_order_first(store, registry, doc, options, last, serving, work, obs)
        if isinstance(instead, StepResult):
            return instead
        work, batch = instead
        notifier.begin(work.info.id)
        in_use, version, obs, terms = _measure(registry, doc, state, production, serving, work, batch, method)
    check = None
    if not work.late and not in_use.resumed:
        margin = doc.verify_margin if options.verify_margin is None else parse_margin(options.verify_margin)
        check = check_promotion(registry, doc, state, version, batch, None if terms is None else terms.errors,
                                margin=margin)
    if check is not None and check.reverted:
        # the restored model serves from here: the batch is measured and decided with it
        if not options.dry_run:
            _revert_now(registry, check, batch.id, notifier, on_phase)
        serving = registry.version(check.old)
        production = _production(store, doc, state, serving)
        state = after_revert(state)
        in_use, version, obs, terms = _measure(registry, doc, state, production, serving, work, batch, method)
    obs = replace(obs, late=work.late, previous=None if work.late else last)
    on_phase("after-psi")
    guards = options.guards(doc.guards)
    plan = plan_step(doc, state, production, in_use, obs, force_retrain=options.force_retrain, guards=guards)
    if check is not None and check.reverted:
        plan = replace(plan, reason=f"{check.reason}; {plan.reason}")
    if options.dry_run:
        return StepResult("dry-run", batch.id, None if plan.schema else plan.psi_bar, plan.action, plan.reason,
                          serving.version, None, state.cumulative_cost, late=plan.late, deferred=plan.deferred,
                          revert=_revert_of(check))
    where = _Where(store, registry, doc, batch, version, method, guards, check, notifier)
    return _apply(plan, state, terms, where, options, previous=last, on_phase=on_phase)


def _provisional(where: _Where, state: ManagerState, production: Production, work: Pending, options: StepOptions,
                 last: int, on_phase: Phase) -> StepResult:
    """A batch whose queries are in and whose labels are not (``_QUERIES``), decided on an estimated
    Ψ̄; a retrain trains on the latest labelled batch (:mod:`.provisional`)."""
    store, registry, doc, serving = where.store, where.registry, where.doc, where.in_use
    where.notifier.begin(work.info.id)
    queries = _read_queries(store, doc, work.info.id)
    on_phase("after-read")
    if not options.dry_run:
        recover(registry, None, work.info.id)
        write_timeline(registry, store, last, late=state.late)
    in_use = model_in_use(state, production, work.info.id)
    version = registry.version(in_use.version) if in_use.resumed else serving
    guess = estimate(registry, store, doc, version, queries, where.psi_method)
    if isinstance(guess, SchemaChange):
        return StepResult("waiting", work.info.id, message=(
            f"waiting for batch {work.info.id}'s labels: production v{version.version} cannot be scored on the "
            f"policy's features ({guess.describe()}); the retrain onto them needs labelled rows"))
    train_on = labelled_batch(store, registry, serving, work.info.id)
    batch = None if train_on is None else _read(store, doc, train_on)
    obs = BatchObservation(batch=work.info.id, psi_bar=guess.psi_bar, previous=last, provisional=True,
                           labelled=train_on, n_classes=2 if batch is None else int(np.unique(batch.y).size))
    on_phase("after-psi")
    plan = plan_step(doc, state, production, in_use, obs, force_retrain=options.force_retrain, guards=where.guards)
    if options.dry_run:
        return StepResult("dry-run", plan.batch, plan.psi_bar, plan.action, plan.reason, serving.version, None,
                          state.cumulative_cost, deferred=plan.deferred, provisional=True)
    pending = None if in_use.resumed else state.verify     # recorded as skipped: it needs labelled rows
    check = None if pending is None else Check("skipped", "the batch has no labels yet (decided before them)",
                                               pending.version, pending.replaced)
    where = replace(where, batch=batch, in_use=version, estimate=guess, queries=queries, check=check)
    return _apply(plan, state, None, where, options, previous=last, on_phase=on_phase)


def _read_queries(store: BatchStore, doc: PolicyDocument, batch_id: int) -> QueryBatch:
    try:
        return store.read_queries(batch_id, space=doc.space)
    except BatchStoreError as exc:    # malformed: every run fails here, until fixed or skipped
        raise BatchStoreError(f"{exc}; fix the batch's queries, or commit past it with "
                              f"`cara-mlflow skip --batch {batch_id} --reason TEXT`") from None


def _revert_now(registry: reg.Registry, check: Check, batch_id: int, notifier: Notifier, on_phase: Phase) -> None:
    """Move production back, and say so at once (a killed step's move, recognised by its rerun, is
    said after that rerun's commit)."""
    revert(registry, check, batch_id, on_phase)
    if not check.done:
        kind, batch, text, fields = revert_event(batch_id, check.new, check.old, check.reason)
        notifier.send(kind, batch, text, **fields)


def _committed(store: BatchStore, registry: reg.Registry, doc: PolicyDocument,
               options: StepOptions) -> tuple[int, ManagerState]:
    """The commit point (a commit a kill cut short finished first) and the state committed there."""
    last = commit_point(registry, write=not options.dry_run)
    if last is None:
        raise SetupError(f"model {registry.name!r} is not initialised in {registry.where}: "
                         "run `cara-mlflow init --batch ID` first")
    if not options.dry_run:
        recover(registry, last, None)
    return last, counted_from_window(store, doc, committed_state(registry, last), last)


def _in_order_first(store: BatchStore, registry: reg.Registry, doc: PolicyDocument, options: StepOptions, last: int,
                    serving: reg.VersionInfo, work: Pending, obs) -> "StepResult | tuple[Pending, Batch]":
    """A late batch that production cannot score (it predates the re-tuned features) waits: a late
    batch never retrains, so the batch in order goes first, and retrains on them."""
    following = store.next_after(last)
    if following is None or not following.complete:
        return StepResult("waiting", work.info.id, message=(
            f"waiting: late batch {work.info.id} cannot be scored by production v{serving.version} "
            f"({obs.schema.describe()}); it is processed after the next batch in order retrains on them"))
    batch = _read(store, doc, following.id)
    if not options.dry_run:
        recover(registry, None, following.id)
    return Pending(following, False), batch


def _announce(where: _Where, plan: Plan) -> None:
    """The ``retrain`` event, as a retrain starts (not when a crashed one is resumed, nor when a
    detached one submitted by an earlier step is still running: it was announced then)."""
    if where.notifier is None or plan.resumed:
        return
    if where.doc.backend.detached and any(run.status in ("RUNNING", "FINISHED") and TAG_BACKEND in run.tags
                                          for run in where.registry.runs.find("retrain", batch=plan.batch)):
        return
    psi = "" if plan.schema else f"Ψ̄={plan.psi_bar:.4g}, "
    where.notifier.send("retrain", plan.batch, f"Batch {plan.batch}: retraining {where.registry.name} "
                                               f"({psi}κ={plan.kappa:.4g}; {plan.reason})",
                        trigger=plan.trigger, serving=where.in_use.version, reason=plan.reason,
                        psi_bar=None if plan.schema else plan.psi_bar, kappa=plan.kappa)


def _revert_of(check: Check | None) -> dict | None:
    """``{"from": V, "to": W}`` when the check reverted production (``history --json``'s ``revert``)."""
    return {"from": check.new, "to": check.old} if check is not None and check.reverted else None


def _production(store: BatchStore, doc: PolicyDocument, state: ManagerState, serving: reg.VersionInfo) -> Production:
    """What serves; after a rollback by hand, with its training batch's position (the model's age)."""
    moved = serving.version != state.model_version and serving.trained_on is not None
    at = position_of(store, doc, serving.trained_on, state) if moved else None
    decided = serving.decided_at if serving.decided_at != serving.trained_on else None
    return Production(serving.version, serving.trained_on, at, decided)


def _measure(registry: reg.Registry, doc: PolicyDocument, state: ManagerState, production: Production,
             serving: reg.VersionInfo, work: Pending, batch: Batch, method: str):
    """The model that judges the batch (and whether a promotion is resumed), and what it measured.

    A late batch is judged by production as it is: it never retrains, so it resumes nothing.
    """
    in_use = InUse(production.version, False) if work.late else model_in_use(state, production, work.info.id)
    version = registry.version(in_use.version) if in_use.resumed else serving
    obs, terms = observe(registry, version, batch, doc, method, kappa=doc.kappa_at(state.retrain_seconds(doc.version)))
    return in_use, version, obs, terms


def _waiting(batch_id: int) -> StepResult:
    return StepResult("waiting", batch_id, message=f"waiting for batch {batch_id} (no _SUCCESS yet)")


def _read(store: BatchStore, doc: PolicyDocument, batch_id: int, *, late: bool = False) -> Batch:
    try:
        return store.read(batch_id, target=doc.target, space=doc.space)
    except BatchStoreError as exc:    # malformed: every run fails here, until fixed or skipped
        what = (f"late batch {batch_id} (it landed after a later batch was processed; it is read with the "
                f"active policy's features, policy v{doc.version}): ") if late else ""
        raise BatchStoreError(f"{what}{exc}; fix the batch, or commit past it with "
                              f"`cara-mlflow skip --batch {batch_id} --reason TEXT`") from None


@dataclass(frozen=True)
class _Where:
    """What a plan is applied to: the store and registry, the policy, the batch, the model in use."""

    store: BatchStore
    registry: reg.Registry
    doc: PolicyDocument
    batch: Batch | None
    in_use: reg.VersionInfo
    psi_method: str
    guards: Guards
    check: Check | None = None       # the check of the promotion before this batch, if one was due
    notifier: Notifier | None = None
    estimate: Estimate | None = None   # a provisional batch's Ψ̄ (``batch`` is then the one a retrain trains on)
    queries: QueryBatch | None = None  # a provisional batch's queries


def _check_record(check: Check | None, plan: Plan, outcome, in_use: reg.VersionInfo) -> tuple[dict, dict]:
    """The tags and metrics of the batch run that record the check, a revert, and the version a
    promotion replaced (``cara.production_from``: the production history's ``from``)."""
    tags, metrics = {}, {}
    if outcome is not None and outcome.gate in PROMOTED:
        tags[reg.TAG_PRODUCTION_FROM] = in_use.version
    if check is None:
        return tags, metrics
    tags[reg.TAG_VERIFY] = check.tag
    if check.reverted:
        tags.update({reg.TAG_REVERT_FROM: check.new, reg.TAG_REVERT_TO: check.old,
                     reg.TAG_REVERT_REASON: check.reason[:500]})
    if check.verdict is not None:
        metrics = {"verify_loss_new": check.verdict.loss_new, "verify_loss_old": check.verdict.loss_old,
                   "verify_half_width": check.verdict.half_width}
    return tags, metrics


def _apply(plan: Plan, state: ManagerState, terms: PsiTerms | None, where: _Where, options: StepOptions, *,
           previous: int, on_phase: Phase) -> StepResult:
    """The plan applied on the batch's run, then the new state committed."""
    registry, store, batch = where.registry, where.store, where.batch
    tags = {reg.TAG_POLICY_VERSION: where.doc.version, **({reg.TAG_LATE: "true"} if plan.late else {}),
            **({reg.TAG_PROVISIONAL: "true"} if plan.provisional else {})}
    with batch_run(registry, plan.batch, tags) as run_id:
        if where.estimate is not None:
            log_estimate(registry, run_id, where.estimate, where.queries, plan.kappa)
        elif terms is None:          # a schema retrain: the model in use could not be scored
            registry.runs.log_metrics(run_id, {"kappa": plan.kappa, "n_data": batch.n_rows,
                                               "n_queries": len(batch.queries)})
        else:
            log_observation(registry, run_id, terms, batch, plan.kappa)
        on_phase("after-batch-run")
        outcome = None
        if plan.retrain:
            _announce(where, plan)
            outcome = apply_retrain(plan, store=store, registry=registry, doc=where.doc, batch=batch,
                                    in_use=where.in_use, gate_enabled=options.gate and not plan.schema,
                                    psi_method=where.psi_method,
                                    project_uri=options.project_uri, on_phase=on_phase, parent_run_id=run_id,
                                    decided_at=plan.batch if plan.provisional else None)
        after = settle(plan, state, outcome, cooldown=options.cooldown)
        tags, metrics = _check_record(where.check, plan, outcome, where.in_use)
        log_decision(registry, run_id, plan, after, outcome,
                     f"{where.guards.describe()}; cooldown {options.cooldown} after a rejected challenger",
                     extra_tags=tags, extra_metrics=metrics, reverted=_revert_of(where.check))
        commit(registry, run_id, plan.batch, after, on_phase, late=plan.late)
    write_timeline(registry, store, max(plan.batch, previous), previous=previous, late=after.late)
    if where.notifier is not None:
        check = where.check
        resumed_revert = _revert_of(check) if check is not None and check.done else None
        where.notifier.send_all(registry, run_id, outcome_events(
            plan, outcome, resumed_revert, serving=where.in_use.version,
            reason_of_revert="" if check is None else check.reason))
    return StepResult("processed", plan.batch, None if plan.schema else plan.psi_bar, plan.action, plan.reason,
                      after.model_version, None if outcome is None else outcome.gate, after.cumulative_cost,
                      late=plan.late, deferred=plan.deferred, revert=_revert_of(where.check),
                      provisional=plan.provisional)
