"""The ``timeline`` run: one point per committed batch (step = batch id), drawn as charts by the UI."""

from __future__ import annotations

from ..store import BatchStore
from ..tracking import registry as reg
from .records import finished_batch_run

__all__ = ["write_timeline"]

_METRICS = ("psi_bar", "decision", "cumulative_cost", "kappa")


def _timeline_run(registry: reg.Registry) -> str:
    runs = (registry.runs.find("timeline", max_results=1, run_name="timeline")
            or registry.runs.find("timeline", max_results=1))     # renamed by hand: before creating one
    if runs:
        return runs[0].run_id
    run_id = registry.runs.start("timeline", run_name="timeline")
    registry.runs.set_tags(run_id, {reg.TAG_TIMELINE_THROUGH: -1})
    return run_id


def _missing(store: BatchStore, through: int, last: int, previous: int | None) -> list[int]:
    """The batches to draw after ``through``, up to ``last``.

    When the timeline is drawn through ``previous`` (the batch committed before ``last``, which
    is the next after it) only ``last`` is missing: the store is listed only to catch up after a
    crash, so a step's cost does not grow with the number of batches kept in the store.
    """
    if through == last - 1 or (previous is not None and previous < last and through >= previous):
        return [last]
    return [b.id for b in store.list() if through < b.id <= last] if store.exists() else [last]


def write_timeline(registry: reg.Registry, store: BatchStore, last: int, previous: int | None = None) -> None:
    """Timeline points for every committed batch not yet drawn, through ``last``; never twice."""
    run_id = _timeline_run(registry)
    through = int(registry.runs.get(run_id).tags.get(reg.TAG_TIMELINE_THROUGH, -1))
    if through >= last:
        return
    for batch_id in _missing(store, through, last, previous):
        run = finished_batch_run(registry, batch_id)
        if run is None:
            continue
        point = {k: run.metrics[k] for k in _METRICS if k in run.metrics}
        version = run.tags.get(reg.TAG_MODEL_VERSION)
        if version:
            point["production_version"] = float(version)
        registry.runs.log_metrics(run_id, point, step=batch_id)
    registry.runs.set_tags(run_id, {reg.TAG_TIMELINE_THROUGH: last})
