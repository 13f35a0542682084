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

__all__ = ["Pending", "late_batches", "next_pending", "window_start", "position_of", "counted_from_window"]


@dataclass(frozen=True)
class Pending:
    """The batch a step takes next, and whether it is late."""

    info: BatchInfo
    late: bool


def window_start(doc) -> int:
    """The first id of the policy's offline window: CARA-P's t is 0 there (as ``tune`` counts)."""
    return doc.offline[0] if doc.offline else 0


def position_of(store: BatchStore, doc, batch_id: int, state: ManagerState | None = None) -> int:
    """``batch_id``'s count in the stream as ``tune`` counts: the complete batches from the offline
    window's first up to it; with ``state``, without the late ones (late batches are no tick)."""
    first = window_start(doc)
    ranges = [] if state is None else [list(r) for r in state.missing]
    late = set() if state is None else set(state.late)
    return sum(1 for info in store.list() if info.complete and first <= info.id < batch_id
               and info.id not in late and not contains(ranges, info.id))


def counted_from_window(store: BatchStore, doc, state: ManagerState, last: int) -> ManagerState:
    """The state with its position counted from the active policy's offline window: a re-tune on
    another window re-bases CARA-P's t, as its tuned phase is counted from that window."""
    if state.position_from == window_start(doc):
        return state
    return state.counted_from(window_start(doc), position_of(store, doc, last, state))


def late_batches(store: BatchStore, state: ManagerState) -> list[BatchInfo]:
    """The store's batches, complete or not, whose ids lie in the state's missing ranges."""
    if not state.missing or not store.exists():
        return []
    ranges = [list(r) for r in state.missing]
    return [info for info in store.list() if contains(ranges, info.id)]


def next_pending(store: BatchStore, state: ManagerState, last: int, *, in_order_first: bool = False) -> Pending | None:
    """The complete late batch with the lowest id, else the next batch after ``last`` (complete or
    not: the caller waits for it); ``in_order_first`` puts the batch after ``last`` first."""
    listed = store.list()                        # once: the next in order and the late ones from it
    following = next((info for info in listed if info.id > last), None)
    ranges = [list(r) for r in state.missing]
    late = next((info for info in listed if info.complete and contains(ranges, info.id)), None)
    if late is not None and not (in_order_first and following is not None):
        return Pending(late, True)
    return None if following is None else Pending(following, False)
