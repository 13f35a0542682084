"""Batch ids as a stream's clock: gaps between processed ids, kept as ranges, and dates as ids.

Ids are non-negative integers with gaps allowed (DESIGN.md "Batch store"). When a step passes
from one processed id to the next, the ids in between had no batch: they are *missing*, kept in
the manager state as ``[start, end]`` ranges (never expanded one by one), so a batch that lands
there later is found as *late* without listing the history. Where every id is a valid
``YYYYMMDD`` date, the impossible dates between two ids (20261032 …) are not missing.

>>> gap(20261029, 20261102, dated=True)
(20261030, 20261101)
>>> gap(20261031, 20261101, dated=True) is None, gap(7, 8, dated=False) is None
(True, True)
>>> ranges = add_range([], gap(3, 9, dated=False))
>>> ranges, contains(ranges, 5), contains(ranges, 9)
([[4, 8]], True, False)
>>> remove_id(ranges, 6), remove_id([[4, 4]], 4)
([[4, 5], [7, 8]], [])
>>> show_range([4, 8]), show_range([20261103, 20261103])
('4–8', '20261103')
"""

from __future__ import annotations

import datetime as dt

__all__ = ["is_date_id", "gap", "add_range", "remove_id", "contains", "show_range"]

_ONE_DAY = dt.timedelta(days=1)


def _as_date(batch_id: int) -> dt.date | None:
    text = str(batch_id)
    if len(text) != 8:
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _as_id(day: dt.date) -> int:
    return int(day.strftime("%Y%m%d"))


def is_date_id(batch_id: int) -> bool:
    """Whether ``batch_id`` reads as a valid ``YYYYMMDD`` date.

    >>> is_date_id(20261130), is_date_id(20261131), is_date_id(25)
    (True, False, False)
    """
    return _as_date(batch_id) is not None


def gap(previous: int, current: int, *, dated: bool) -> tuple[int, int] | None:
    """The ids strictly between two consecutive processed ids, as ``(first, last)``, or None.

    With ``dated`` (every id so far is a date, these two included), only real dates count.
    """
    if dated and is_date_id(previous) and is_date_id(current):
        first, last = _as_date(previous) + _ONE_DAY, _as_date(current) - _ONE_DAY
        return (_as_id(first), _as_id(last)) if first <= last else None
    return (previous + 1, current - 1) if previous + 1 <= current - 1 else None


def add_range(ranges: list[list[int]], span: tuple[int, int] | None) -> list[list[int]]:
    """``ranges`` with ``span`` appended (a new list; spans arrive in increasing order)."""
    return [list(r) for r in ranges] + ([list(span)] if span is not None else [])


def contains(ranges: list[list[int]], batch_id: int) -> bool:
    """Whether ``batch_id`` lies in one of the ranges (ends included)."""
    return any(start <= batch_id <= end for start, end in ranges)


def _next_id(batch_id: int, dated: bool) -> int:
    return _as_id(_as_date(batch_id) + _ONE_DAY) if dated else batch_id + 1


def _previous_id(batch_id: int, dated: bool) -> int:
    return _as_id(_as_date(batch_id) - _ONE_DAY) if dated else batch_id - 1


def remove_id(ranges: list[list[int]], batch_id: int) -> list[list[int]]:
    """The ranges without ``batch_id`` (a late batch found there): its range split in two."""
    out = []
    for start, end in ranges:
        if not start <= batch_id <= end:
            out.append([start, end])
            continue
        dated = is_date_id(start) and is_date_id(end) and is_date_id(batch_id)
        if batch_id > start:
            out.append([start, _previous_id(batch_id, dated)])
        if batch_id < end:
            out.append([_next_id(batch_id, dated), end])
    return out


def show_range(span) -> str:
    """``START–END`` (one id alone when the range holds one id)."""
    start, end = span
    return str(start) if start == end else f"{start}–{end}"
