"""The batch runs as the lifecycle's record: finding a batch's run, reading the committed state,
and tidying what a killed step left behind."""

from __future__ import annotations

from ..errors import SetupError
from ..manager_state import STATE_FILE, ManagerState
from ..tracking import registry as reg
from ..tracking.runs import RunRecord

__all__ = ["finished_batch_run", "committed_state", "recover"]


def finished_batch_run(registry: reg.Registry, batch_id: int) -> RunRecord | None:
    """The FINISHED batch run of a batch, or None: by id through ``cara.last_run`` when it is the
    committed batch, else by a search on the run's name (neither grows with the history's tags)."""
    run = registry.committed_run(batch_id)
    if run is not None and run.status == "FINISHED":
        return run
    runs = registry.runs.find("batch", batch=batch_id, statuses=("FINISHED",), max_results=1,
                              run_name=f"batch-{batch_id}")
    if not runs:   # a run renamed by hand, or a store written before names were relied on
        runs = registry.runs.find("batch", batch=batch_id, statuses=("FINISHED",), max_results=1)
    return runs[0] if runs else None


def committed_state(registry: reg.Registry, last: int) -> ManagerState:
    """The manager state stored by the run that committed batch ``last``."""
    run = finished_batch_run(registry, last)
    if run is None:
        raise SetupError(f"batch {last} is committed but has no FINISHED batch run in "
                         f"{registry.where}; the history was edited by hand")
    return ManagerState.from_dict(registry.runs.load_json(run.run_id, STATE_FILE),
                                  f"{STATE_FILE} of batch run {run.run_id}")


def recover(registry: reg.Registry, last: int | None, pending: int | None) -> None:
    """Tidy what a killed step left: a committed batch's run is FINISHED, a pending one's KILLED.

    The committed batch's run is found by id (``cara.last_run``): under the store lock, the only
    batch run of a committed batch that can still be RUNNING is the one that committed it (a
    step killed after its commit point); the others were KILLED before it started. Without a
    usable hint (an older history, a crash between hint and commit) the runs are searched.
    """
    if last is not None:
        _finish_committed(registry, last)
    if pending is not None:
        for run in registry.runs.find("batch", batch=pending, statuses=("RUNNING",), run_name=f"batch-{pending}"):
            registry.runs.end(run.run_id, "KILLED")


def _finish_committed(registry: reg.Registry, last: int) -> None:
    committed = registry.committed_run(last)
    if committed is not None and committed.status in ("RUNNING", "FINISHED"):
        if committed.status == "RUNNING":
            registry.runs.end(committed.run_id, "FINISHED")
        return
    running = registry.runs.find("batch", batch=last, statuses=("RUNNING",))
    finished = registry.runs.find("batch", batch=last, statuses=("FINISHED",), max_results=1)
    for i, run in enumerate(running):
        keep = i == 0 and not finished
        registry.runs.end(run.run_id, "FINISHED" if keep else "KILLED")
