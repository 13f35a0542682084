"""The ``timeline`` run: one point per committed batch (step = batch id), drawn as charts by the UI.

Batches processed in order are drawn up to the tag ``cara.timeline_through``; late batches, at
their own (lower) ids, are found by id in the manager state's list of late batches, of which the
tag ``cara.timeline_late`` counts those drawn. So a crash between a commit and its point is
repaired by the next step, and no point is drawn twice.
"""

from __future__ import annotations

from ..batch_ids import date_ms
from ..store import BatchStore
from ..tracking import registry as reg
from .records import finished_batch_run

__all__ = ["write_timeline", "draw_realized"]

_METRICS = ("psi_bar", "decision", "cumulative_cost", "kappa", "spend", "model_age")
TAG_TIMELINE_LATE = "cara.timeline_late"


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


def _draw(registry: reg.Registry, run_id: str, batch_id: int) -> None:
    run = finished_batch_run(registry, batch_id)
    if run is None:
        return
    point = {k: run.metrics[k] for k in _METRICS if k in run.metrics}
    version = run.tags.get(reg.TAG_MODEL_VERSION)
    if version:
        point["production_version"] = float(version)
    # a dated id's point is stamped with its date: the UI's "Time (wall)" axis is then a calendar,
    # where the step axis puts 71 units between 20261130 and 20261201
    registry.runs.log_metrics(run_id, point, step=batch_id, timestamp_ms=date_ms(batch_id))


def draw_realized(registry: reg.Registry, batch_id: int, psi_bar: float) -> None:
    """The realized Ψ̄ of a reconciled batch (decided before its labels), as its own metric
    ``psi_bar_realized`` at the batch's id: its ``psi_bar`` point stays the estimate it was decided on."""
    registry.runs.log_metrics(_timeline_run(registry), {"psi_bar_realized": psi_bar}, step=batch_id,
                              timestamp_ms=date_ms(batch_id))


def write_timeline(registry: reg.Registry, store: BatchStore, last: int, previous: int | None = None,
                   late: tuple[int, ...] = ()) -> None:
    """Timeline points for every committed batch not yet drawn — in order through ``last``, and
    the ``late`` batches processed (the manager state's list) — never twice."""
    run_id = _timeline_run(registry)
    tags = registry.runs.get(run_id).tags
    through, drawn_late = int(tags.get(reg.TAG_TIMELINE_THROUGH, -1)), int(tags.get(TAG_TIMELINE_LATE, 0))
    if through < last:
        for batch_id in sorted(set(_missing(store, through, last, previous)) - set(late)):   # late: below
            _draw(registry, run_id, batch_id)
        registry.runs.set_tags(run_id, {reg.TAG_TIMELINE_THROUGH: last})
    if drawn_late < len(late):
        for batch_id in late[drawn_late:]:
            _draw(registry, run_id, batch_id)
        registry.runs.set_tags(run_id, {TAG_TIMELINE_LATE: len(late)})
