"""Batch ids as a stream's clock: gaps between processed ids, kept as ranges, and dates as ids.

Ids are non-negative integers with gaps allowed (DESIGN.md "Batch store"). When a step passes
from one processed id to the next, the ids in between had no batch: they are *missing*, kept in
the manager state as ``[start, end]`` ranges (never expanded one by one), so a batch that lands
there later is found as *late* without listing the history — even one whose id is a producer's
typo. Where every id is a valid ``YYYYMMDD`` date, the impossible dates (20261032 …) are not
*shown* as missing: a range is shown between the real dates it holds, and not at all if none.

>>> gap(20261029, 20261102), gap(7, 8)
((20261030, 20261101), None)
>>> ranges = add_range([], gap(3, 9))
>>> ranges, contains(ranges, 5), contains(ranges, 9)
([[4, 8]], True, False)
>>> remove_id(ranges, 6), remove_id([[4, 4]], 4)
([[4, 5], [7, 8]], [])
>>> show_range([4, 8]), show_range([20261103, 20261103], dated=True)
('4–8', '20261103')
>>> show_range([20261101, 20261201], dated=True), show_range([20261032, 20261100], dated=True)
('20261101–20261201', None)
"""

from __future__ import annotations

import datetime as dt

__all__ = ["is_date_id", "date_ms", "gap", "add_range", "remove_id", "contains", "show_range"]

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


def date_ms(batch_id: int) -> int | None:
    """Midnight UTC of a ``YYYYMMDD`` id in milliseconds since the epoch (None if not a date).

    >>> date_ms(19700102), date_ms(25)
    (86400000, None)
    """
    day = _as_date(batch_id)
    if day is None:
        return None
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp() * 1000)


def _month_start(year: int, month: int) -> dt.date:
    """The first day of ``month`` of ``year``, the month allowed to run over (0, 13)."""
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return dt.date(year, month, 1)


def _first_date_from(batch_id: int) -> int:
    """The first valid date at or after an 8-digit id (itself, if it is one)."""
    if is_date_id(batch_id):
        return batch_id
    year, month, day = batch_id // 10000, batch_id // 100 % 100, batch_id % 100
    if month < 1:
        return _as_id(dt.date(year, 1, 1))
    if month > 12:
        return _as_id(_month_start(year, 13))
    return _as_id(_month_start(year, month) if day < 1 else _month_start(year, month + 1))


def _last_date_to(batch_id: int) -> int:
    """The last valid date at or before an 8-digit id (itself, if it is one)."""
    if is_date_id(batch_id):
        return batch_id
    year, month, day = batch_id // 10000, batch_id // 100 % 100, batch_id % 100
    if month < 1:
        return _as_id(dt.date(year - 1, 12, 31))
    if month > 12:
        return _as_id(dt.date(year, 12, 31))
    return _as_id(_month_start(year, month) - _ONE_DAY if day < 1 else _month_start(year, month + 1) - _ONE_DAY)


def gap(previous: int, current: int) -> tuple[int, int] | None:
    """The ids strictly between two consecutive processed ids, as ``(first, last)``, or None."""
    return (previous + 1, current - 1) if previous + 1 <= current - 1 else None


def add_range(ranges: list[list[int]], span: tuple[int, int] | None) -> list[list[int]]:
    """``ranges`` with ``span`` appended (a new list; spans arrive in increasing order)."""
    return [list(r) for r in ranges] + ([list(span)] if span is not None else [])


def contains(ranges: list[list[int]], batch_id: int) -> bool:
    """Whether ``batch_id`` lies in one of the ranges (ends included)."""
    return any(start <= batch_id <= end for start, end in ranges)


def remove_id(ranges: list[list[int]], batch_id: int) -> list[list[int]]:
    """The ranges without ``batch_id`` (a late batch found there): its range split in two."""
    out = []
    for start, end in ranges:
        if not start <= batch_id <= end:
            out.append([start, end])
            continue
        out += [span for span in ([start, batch_id - 1], [batch_id + 1, end]) if span[0] <= span[1]]
    return out


def show_range(span, *, dated: bool = False) -> str | None:
    """``START–END`` (one id alone when the range holds one id); with ``dated``, bounded by the
    real dates in the range, and None when it holds none (20261032–20261100)."""
    start, end = span
    if dated and len(str(start)) == len(str(end)) == 8 and 1000 <= start // 10000 <= end // 10000 <= 9998:
        start, end = _first_date_from(start), _last_date_to(end)
        if start > end:
            return None
    return str(start) if start == end else f"{start}–{end}"
