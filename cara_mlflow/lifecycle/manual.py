"""The commands a person runs by hand: ``init`` (the first production model), ``skip`` (commit
past a batch) and ``rollback`` (production back to an earlier version)."""

from __future__ import annotations

import warnings

from .. import validate
from ..errors import InputError, SetupError
from ..manager_state import ManagerState
from ..money import record_seconds
from ..names import DEFAULT_LOCK_TIMEOUT
from ..planner import PROMOTED, advance
from ..policies import make_policy
from ..store import BatchStore
from ..tracking import registry as reg
from ..tracking.projects import resolve_project_uri
from .batch_run import batch_run, commit
from .frame import Phase, StepResult, active_policy, managed, no_phase
from .models import adopt, train_and_register
from .pending import Pending, late_batches, position_of, window_start
from .records import commit_point, committed_state, recover
from .timeline import write_timeline
from .training import training_seconds
from .verification import TAG_REVERTED

__all__ = ["init", "skip", "rollback"]


def init(store: BatchStore, registry: reg.Registry, *, batch_id: int, adopt_version: int | None = None,
         project_uri: str | None = None, lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
         on_phase: Phase = no_phase) -> StepResult:
    """Put the first production model in place (trained on ``batch_id`` or adopted) and commit the batch."""
    project_uri = resolve_project_uri(project_uri) if project_uri else None
    with managed(store, registry, lock_timeout):
        doc = active_policy(registry)
        last = registry.last_batch()
        if last is not None:
            raise InputError(f"batch: {registry.name!r} is already initialised (last batch {last}); "
                             "use `cara-mlflow step`, or `rollback` to change production")
        batch = store.read(batch_id, target=doc.target, space=doc.space)
        recover(registry, None, batch_id)
        tags = {reg.TAG_DECISION: "init", reg.TAG_POLICY_VERSION: doc.version, reg.TAG_GUARDS: doc.guards.describe(),
                "cara.reason": "the first production model"}
        with batch_run(registry, batch_id, tags) as run_id:
            if adopt_version is not None:
                version = adopt(registry, batch, doc, adopt_version, run_id)
            else:
                version = train_and_register(registry, batch, doc, project_uri, trigger="init", gate_tag="off",
                                             on_phase=on_phase, parent_run_id=run_id)
            registry.set_production(version.version)
            seconds = record_seconds((), training_seconds(registry, version.tags.get(reg.TAG_TRAINING_RUN)))
            state = ManagerState.fresh(make_policy(doc.policy, **doc.params), version=version.version,
                                       kappa=doc.kappa, batch=batch_id, position=position_of(store, doc, batch_id),
                                       training_seconds=seconds, timed_policy=doc.version,
                                       error_cost=doc.money.error_cost if doc.money else None)
            state = state.counted_from(window_start(doc), state.position)
            registry.runs.set_tags(run_id, {reg.TAG_MODEL_VERSION: version.version})
            how = ("adopted registered" if adopt_version is not None else "trained") + f" v{version.version}"
            registry.runs.set_description(run_id, f"Init: {how} as the first production model, on batch {batch_id}.")
            spend = {} if doc.money is None else {"spend": state.spend, "spend_batch": state.spend,
                                                  "error_cost": doc.money.error_cost}
            registry.runs.log_metrics(run_id, {"decision": 1.0, "kappa": doc.kappa, "cumulative_cost": doc.kappa,
                                               "n_data": batch.n_rows, "n_queries": len(batch.queries), **spend})
            commit(registry, run_id, batch_id, state, on_phase)
        write_timeline(registry, store, batch_id)
    return StepResult("processed", batch_id, None, "init", "first production model", version.version, "off",
                      doc.kappa)





def skip(store: BatchStore, registry: reg.Registry, *, batch_id: int, reason: str,
         lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> StepResult:
    """Record the next pending batch as skipped (decision ``skip``) and commit past it."""
    validate.reason(reason, "the batch is skipped")
    with managed(store, registry, lock_timeout):
        doc = active_policy(registry)          # first: an unknown --name is named as such
        last = commit_point(registry)
        if last is None:
            raise SetupError(f"model {registry.name!r} is not initialised: run `cara-mlflow init` first")
        recover(registry, last, None)
        state = committed_state(registry, last)
        work = _skippable(store, state, last, batch_id)
        recover(registry, None, batch_id)
        tags = {reg.TAG_DECISION: "skip", reg.TAG_MODEL_VERSION: state.model_version, "cara.reason": reason[:500],
                reg.TAG_POLICY_VERSION: doc.version, **({reg.TAG_LATE: "true"} if work.late else {})}
        after = advance(state, batch_id, None if work.late else last, late=work.late)
        with batch_run(registry, batch_id, tags) as run_id:
            registry.runs.set_description(run_id, f"Skipped by hand{' (late batch)' if work.late else ''}, "
                                                  f"v{state.model_version} still serves: {reason}")
            registry.runs.log_metrics(run_id, {"cumulative_cost": state.cumulative_cost, "decision": 0.0,
                                               "kappa": doc.kappa})
            commit(registry, run_id, batch_id, after, late=work.late)
        write_timeline(registry, store, max(batch_id, last), previous=last, late=after.late)
    return StepResult("processed", batch_id, None, "skip", reason, state.model_version, None, state.cumulative_cost,
                      late=work.late)


def _skippable(store: BatchStore, state: ManagerState, last: int, batch_id: int) -> Pending:
    """``batch_id`` if it is pending: the next batch in order, or a late one (complete or not) —
    whichever a step is stuck on, so a skip can always unblock it."""
    late = [info for info in late_batches(store, state) if info.id == batch_id]
    if late:
        return Pending(late[0], True)
    following = store.next_after(last)
    if following is not None and following.id == batch_id:
        return Pending(following, False)
    pending = [info.id for info in late_batches(store, state)] + ([] if following is None else [following.id])
    expected = "none is pending" if not pending else f"pending: {', '.join(map(str, sorted(pending)))}"
    raise InputError(f"batch: only a pending batch (the next in order, or a late one) can be skipped; "
                     f"{expected}; got {batch_id}")


def rollback(store: BatchStore, registry: reg.Registry, *, reason: str, to_version: int | None = None,
             lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> tuple[int | None, int]:
    """Move production back (default: the previous version that passed its gate); returns (from, to).

    With ``to_version`` it also puts back a production alias that was deleted by hand (from = None).
    The policy restarts at the next step, as for any change of production.
    """
    validate.reason(reason, "production is rolled back")
    with managed(store, registry, lock_timeout):
        current = _current_production(registry, required=to_version is None)
        target = _rollback_target(registry, current, to_version)
        if TAG_REVERTED in target.tags:
            warnings.warn(f"rollback: v{target.version} was reverted automatically "
                          f"({target.tags[TAG_REVERTED][:200]}); it serves again, as asked", UserWarning, stacklevel=2)
        # the production history's record of the move: a run of type rollback, FINISHED once it is made
        tags = {reg.TAG_PRODUCTION_FROM: "" if current is None else current.version, reg.TAG_MODEL_VERSION:
                target.version, "cara.reason": reason[:500]}
        with batch_run(registry, None, tags, run_type="rollback", run_name="rollback") as run_id:
            registry.runs.set_description(run_id, f"Rolled back by hand: v{target.version} serves, "
                                                  f"{'no alias' if current is None else f'v{current.version}'} "
                                                  f"before: {reason}")
            registry.set_production(target.version)
        before = f"v{current.version}" if current is not None else "no alias"
        registry.set_model_tag(reg.TAG_ROLLBACK, f"{before} -> v{target.version}: {reason}"[:5000])
        if current is not None:
            registry.tag_version(current.version, "cara.rolled_back", reason[:500])
    return (current.version if current is not None else None), target.version


def _current_production(registry: reg.Registry, *, required: bool) -> reg.VersionInfo | None:
    try:
        return registry.production()
    except SetupError:
        if required:
            raise
        return None


def _rollback_target(registry: reg.Registry, current: reg.VersionInfo | None,
                     to_version: int | None) -> reg.VersionInfo:
    if to_version is None:
        # Only versions that were fit to serve: gated and passed, or promoted without a gate
        # (init, adopt, --no-gate). A version a killed step registered but never gated is not one.
        # A version the check after its promotion reverted (cara.reverted) never serves again by default.
        candidates = [v for v in registry.versions() if v.version < current.version
                      and v.tags.get(reg.TAG_GATE) in PROMOTED and v.trained_on is not None
                      and TAG_REVERTED not in v.tags]
        if not candidates:
            raise InputError(f"to: no version before v{current.version} to roll back to; pass --to VERSION")
        target = candidates[0]
    else:
        target = registry.version(to_version)
        if target.trained_on is None:
            raise InputError(f"to: version {to_version} was not trained or adopted by cara-mlflow "
                             f"(no {reg.TAG_TRAINED_ON} tag); adopt it with `init --adopt-version`")
    if current is not None and target.version == current.version:
        raise InputError(f"to: version {target.version} is already in production")
    return target
