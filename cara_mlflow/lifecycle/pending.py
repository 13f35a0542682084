"""What a step does next: a late batch, or the next batch in id order after the commit point.

A *late* batch is one whose id lies in a range the stream passed with no batch (the manager
state's ``missing``): it landed after a later batch was processed. It is processed as soon as it
is complete, before the batches in order — unless a promotion of the next batch in order is
being resumed after a crash, which is finished first. An incomplete late batch blocks nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..batch_ids import contains
from ..manager_state import ManagerState
from ..store import BatchInfo, BatchStore

__all__ = ["Pending", "late_batches", "next_pending"]


@dataclass(frozen=True)
class Pending:
    """The batch a step takes next, and whether it is late."""

    info: BatchInfo
    late: bool


def late_batches(store: BatchStore, state: ManagerState) -> list[BatchInfo]:
    """The store's batches, complete or not, whose ids lie in the state's missing ranges."""
    if not state.missing or not store.exists():
        return []
    ranges = [list(r) for r in state.missing]
    return [info for info in store.list() if contains(ranges, info.id)]


def next_pending(store: BatchStore, state: ManagerState, last: int, *, in_order_first: bool = False) -> Pending | None:
    """The complete late batch with the lowest id, else the next batch after ``last`` (complete or
    not: the caller waits for it); ``in_order_first`` puts the batch after ``last`` first."""
    following = store.next_after(last)
    late = next((info for info in late_batches(store, state) if info.complete), None)
    if late is not None and not (in_order_first and following is not None):
        return Pending(late, True)
    return None if following is None else Pending(following, False)
