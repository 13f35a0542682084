"""The batch runs as the lifecycle's record: finding a batch's run, reading the committed state,
and tidying what a killed step left behind.

Every commit names its batch run in ``cara.last_run`` (``<batch>:<run_id>``); a batch processed in
order then moves ``cara.last_batch`` to its id, a late batch does not (the commit point never
moves back). So the committed state is on the run that ``cara.last_run`` names when that batch is
at or below ``cara.last_batch``; a hint naming a later batch is a step killed between its two
writes, after its state was stored: :func:`commit_point` finishes that commit.
"""

from __future__ import annotations

from ..errors import SetupError
from ..manager_state import STATE_FILE, ManagerState
from ..tracking import registry as reg
from ..tracking.runs import RunRecord

__all__ = ["finished_batch_run", "committed_run", "committed_state", "commit_point", "recover"]


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


def _hinted_run(registry: reg.Registry, last: int | None) -> RunRecord | None:
    """The batch run ``cara.last_run`` names, if it checks out and its batch is at most ``last``
    (``last`` None: any batch)."""
    hinted = registry.last_run_batch()
    if hinted is None or (last is not None and hinted > last):
        return None
    run = registry.committed_run(hinted)
    return run if run is not None and run.status in ("RUNNING", "FINISHED") else None


def committed_run(registry: reg.Registry, last: int) -> RunRecord | None:
    """The batch run holding the committed manager state: the last commit's (``cara.last_run``,
    maybe a late batch's), else — a history from before the hint — the FINISHED run of ``last``."""
    return _hinted_run(registry, last) or finished_batch_run(registry, last)


def committed_state(registry: reg.Registry, last: int) -> ManagerState:
    """The manager state stored by the last commit (commit point ``last``)."""
    run = committed_run(registry, last)
    if run is None:
        raise SetupError(f"batch {last} is committed but has no FINISHED batch run in "
                         f"{registry.where}; the history was edited by hand")
    return ManagerState.from_dict(registry.runs.load_json(run.run_id, STATE_FILE),
                                  f"{STATE_FILE} of batch run {run.run_id}", batch=run.batch)


def commit_point(registry: reg.Registry, *, write: bool = True) -> int | None:
    """``cara.last_batch``, after finishing a commit that a kill cut between its two writes.

    ``cara.last_run`` is written after the run's state and just before ``cara.last_batch``: a hint
    naming a later batch whose run holds its state is a commit that only lacks its last write.
    Finishing it (rather than redoing the batch) keeps what the last commit recorded — a late
    batch's cost, say — and every batch processed exactly once. ``write=False`` (a dry run)
    reports the point without moving it.
    """
    last = registry.last_batch()
    hinted = registry.last_run_batch()
    if hinted is None or (last is not None and hinted <= last):
        return last
    run = _hinted_run(registry, None)
    if run is None or STATE_FILE not in registry.runs.artifact_paths(run.run_id):
        return last
    if write:
        registry.commit(hinted)
    return hinted


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
    committed = _hinted_run(registry, last)
    if committed is not None:
        if committed.status == "RUNNING":
            registry.runs.end(committed.run_id, "FINISHED")
        return
    running = registry.runs.find("batch", batch=last, statuses=("RUNNING",))
    finished = registry.runs.find("batch", batch=last, statuses=("FINISHED",), max_results=1)
    for i, run in enumerate(running):
        keep = i == 0 and not finished
        registry.runs.end(run.run_id, "FINISHED" if keep else "KILLED")
