"""A batch's run and the commit point: ``cara.last_batch`` moves past the batch only after its
state is stored on the run (a late batch commits by ``cara.last_run`` alone)."""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

from ..errors import RetryLater
from ..manager_state import STATE_FILE, ManagerState
from ..tracking import registry as reg
from .frame import Phase, no_phase

__all__ = ["batch_run", "commit"]


@contextlib.contextmanager
def batch_run(registry: reg.Registry, batch_id: int | None, tags: Mapping[str, object], *, run_type: str = "batch",
              run_name: str | None = None) -> Iterator[str]:
    """The batch run of one batch: FAILED (with the error) if the block raises (KILLED for a
    temporary condition, exit 75: a retrain still running, an outage); else, once the
    block has committed, FINISHED (the caller then draws it on the timeline). Another kind of run
    recorded the same way (``run_type``, ``run_name``; ``batch_id`` None: no batch)."""
    batch_tag = {} if batch_id is None else {reg.TAG_BATCH: batch_id}
    run_id = registry.runs.start(run_type, run_name=run_name or f"batch-{batch_id}", tags={**batch_tag, **tags})
    try:
        yield run_id
    except BaseException as exc:
        message = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
        # once cara.last_run names this run, its state is the committed one: it must stay readable
        # (FINISHED), even if what failed came after (the cara.last_batch write, a later hook)
        status = "FINISHED" if registry.names_last_run(run_id) else "KILLED" if isinstance(exc, RetryLater) \
            else "FAILED"
        with contextlib.suppress(Exception):      # the tracking server may be what failed:
            registry.runs.set_tags(run_id, {"cara.error": message})
            registry.runs.end(run_id, status)     # else the next step's recovery closes the run
        raise
    registry.runs.end(run_id, "FINISHED")


def commit(registry: reg.Registry, run_id: str, batch_id: int, state: ManagerState,
           on_phase: Phase = no_phase, *, late: bool = False) -> None:
    """Store the manager state on the batch run, then move the commit point past the batch."""
    registry.runs.log_dict(run_id, state.to_dict(), STATE_FILE)
    registry.commit(batch_id, run_id, late=late)
    on_phase("after-commit")
