"""κ schedules: a retraining cost that changes from batch to batch (the paper's §9, "non-static κ").

Compute prices change between day and night, training times grow with the data: κ_t, the cost
of a retrain at batch ``t``, need not be constant. The cost matrix carries it on its diagonal
(``C[t, t] = κ_t``, DESIGN.md), the ORACLE solves with it, and the policies read it from
``Observation.kappa``. ``simulate`` and ``compare`` take it as ``--kappa-schedule SPEC``:

``day-night:HIGH:LOW:PERIOD``
    Alternating blocks of PERIOD batches at HIGH and at LOW, HIGH first (the stream's first
    batch opens a "day"): ``day-night:1.5:0.5:5`` prices 5 batches at 1.5, 5 at 0.5, and so on,
    HIGH ÷ LOW = 3 apart and 1 on average over a whole period.
``ramp:START:END``
    Linear from START at the stream's first batch to END at its last: ``ramp:1:2`` doubles the
    retraining cost over the stream.
``PATH`` (a CSV file)
    Columns ``batch,kappa`` (a header row, then one row per batch id; other columns are
    ignored): every batch of the stream must have one.

A schedule's values are **multiples of** ``--kappa``: ``κ_t = κ × value_t``, so one schedule
applies to a whole κ sweep (``compare --kappa 5,10,20``). For a CSV of absolute costs, give
``--kappa 1``. A named pattern counts batches in the stream's order (its position, as CARA-P and
the cooldown count them, DESIGN.md), a CSV names them by batch id (on a paper stream the same;
on a ``--store`` its directory ids).

Examples
--------
>>> s = parse_kappa_schedule("day-night:1.5:0.5:2")
>>> s.values(6).tolist()
[1.5, 1.5, 0.5, 0.5, 1.5, 1.5]
>>> kappa_per_batch(10.0, parse_kappa_schedule("ramp:1:2"), 5).tolist()
[10.0, 12.5, 15.0, 17.5, 20.0]
>>> parse_kappa_schedule("night-day:1:2:3")
Traceback (most recent call last):
...
cara_mlflow.errors.InputError: kappa-schedule: no CSV file 'night-day:1:2:3' and not a pattern: expected a CSV file
(columns batch,kappa), day-night:HIGH:LOW:PERIOD or ramp:START:END
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import InputError

__all__ = ["PATTERNS", "SCHEDULE_HELP", "KappaSchedule", "parse_kappa_schedule", "kappa_per_batch"]


def _day_night(positions: np.ndarray, high: float, low: float, period: int) -> np.ndarray:
    return np.where((positions // period) % 2 == 0, high, low)


def _ramp(positions: np.ndarray, start: float, end: float) -> np.ndarray:
    T = positions.size
    if T == 1:
        return np.full(1, start)
    return start + (end - start) * (positions / (T - 1))


@dataclass(frozen=True)
class _Pattern:
    """A named pattern: its parameter names (the last may be an integer count) and its values."""

    params: tuple[str, ...]
    integer: tuple[str, ...]
    values: Callable[..., np.ndarray]
    help: str

    def syntax(self, name: str) -> str:
        return ":".join([name, *self.params])


#: The named patterns by name; feeds the parser, its errors and ``--help``.
PATTERNS: dict[str, _Pattern] = {
    "day-night": _Pattern(("HIGH", "LOW", "PERIOD"), ("PERIOD",), _day_night,
                          "alternating blocks of PERIOD batches at HIGH and LOW, HIGH first (day-night:1.5:0.5:12)"),
    "ramp": _Pattern(("START", "END"), (), _ramp,
                     "linear from START at the stream's first batch to END at its last (ramp:1:2)"),
}

_EXPECTED = ("a CSV file (columns batch,kappa), " + " or ".join(p.syntax(n) for n, p in PATTERNS.items()))

SCHEDULE_HELP = ("Retraining cost per batch, as multiples of --kappa (κ_t = κ × value): "
                 + "; ".join(f"{p.syntax(n)}: {p.help}" for n, p in PATTERNS.items())
                 + "; or a CSV file with columns batch,kappa covering every batch (absolute costs: --kappa 1). "
                 "The offline and online cost matrices get κ_t on their diagonal; the ORACLE solves with it.")
"""The option's help text, said once."""


@dataclass(frozen=True)
class KappaSchedule:
    """A parsed ``--kappa-schedule``: a named pattern with its parameters, or a CSV's table.

    Use :func:`parse_kappa_schedule` to build one; :meth:`values` gives the multiples of κ.
    """

    spec: str
    """The text it was parsed from."""
    pattern: str | None = None
    """``day-night`` or ``ramp``; None for a CSV file."""
    params: tuple[float, ...] = ()
    table: dict[int, float] = field(default_factory=dict, repr=False)
    """A CSV's values by batch id."""

    def values(self, batches: int | Sequence[int]) -> np.ndarray:
        """The multiple of κ at each batch of a stream: ``batches`` is its length (ids 0…T−1) or its
        batch ids in order. A CSV without one of those ids raises an :class:`InputError` naming it.

        >>> parse_kappa_schedule("ramp:2:1").values([0, 5, 7]).tolist()
        [2.0, 1.5, 1.0]
        """
        ids = list(range(batches)) if isinstance(batches, int) else [int(b) for b in batches]
        if not ids:
            raise InputError("kappa-schedule: the stream has no batches")
        if self.pattern is not None:
            return np.asarray(PATTERNS[self.pattern].values(np.arange(len(ids)), *self.params), dtype=np.float64)
        missing = [b for b in ids if b not in self.table]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise InputError(f"kappa-schedule: batch {missing[0]}{more} is missing from {self.spec}: every batch of "
                             f"the stream ({ids[0]} … {ids[-1]}) needs a row batch,kappa")
        return np.array([self.table[b] for b in ids], dtype=np.float64)

    def describe(self) -> str:
        """How a report names it: the pattern as typed, or the CSV's file name."""
        return self.spec if self.pattern is not None else Path(self.spec).name


def parse_kappa_schedule(text: str | KappaSchedule) -> KappaSchedule:
    """Parse ``day-night:HIGH:LOW:PERIOD``, ``ramp:START:END`` or a CSV path (see the module doc).

    Bad input raises a one-line :class:`InputError` that says what was expected; a CSV is read
    and checked here (header, numbers, one row per batch), its coverage of a stream by
    :meth:`KappaSchedule.values`.

    >>> parse_kappa_schedule("day-night:3:1:12")
    KappaSchedule(spec='day-night:3:1:12', pattern='day-night', params=(3.0, 1.0, 12))
    >>> parse_kappa_schedule("ramp:1:0")
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: kappa-schedule: END in ramp:START:END: expected a finite number > 0, got '0'
    """
    if isinstance(text, KappaSchedule):
        return text
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"kappa-schedule: expected {_EXPECTED}, got {text!r}")
    text = text.strip()
    name, _, rest = text.partition(":")
    if name in PATTERNS and not Path(text).is_file():
        return _parse_pattern(text, name, rest.split(":") if rest else [])
    path = Path(text)
    if not path.is_file():
        raise InputError(f"kappa-schedule: no CSV file {text!r} and not a pattern: expected {_EXPECTED}")
    return KappaSchedule(spec=text, table=_read_csv(path))


def _parse_pattern(text: str, name: str, parts: list[str]) -> KappaSchedule:
    pattern = PATTERNS[name]
    syntax = pattern.syntax(name)
    if len(parts) != len(pattern.params):
        raise InputError(f"kappa-schedule: expected {syntax} ({len(pattern.params)} values after '{name}:'), "
                         f"got {text!r}")
    values = []
    for label, part in zip(pattern.params, parts):
        if label in pattern.integer:
            if not part.strip().isdigit() or int(part) < 1:
                raise InputError(f"kappa-schedule: {label} in {syntax}: expected a whole number of batches >= 1, "
                                 f"got {part!r}")
            values.append(int(part))
            continue
        try:
            v = float(part)
        except ValueError:
            v = math.nan
        if not (math.isfinite(v) and v > 0):
            raise InputError(f"kappa-schedule: {label} in {syntax}: expected a finite number > 0, got {part!r}")
        values.append(v)
    return KappaSchedule(spec=text, pattern=name, params=tuple(values))


def _read_csv(path: Path) -> dict[int, float]:
    where = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"kappa-schedule: cannot read {where}: {exc}") from None
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if "batch" not in header or "kappa" not in header:
        raise InputError(f"kappa-schedule: {where}: expected a header row with columns batch,kappa, "
                         f"got {','.join(rows[0]) if rows else 'an empty file'!r}")
    ib, ik = header.index("batch"), header.index("kappa")
    table: dict[int, float] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(ib, ik):
            raise InputError(f"kappa-schedule: {where} line {line}: expected values for batch and kappa, got {row!r}")
        batch, kappa = row[ib].strip(), row[ik].strip()
        if not batch.isdigit():
            raise InputError(f"kappa-schedule: {where} line {line}: batch: expected a batch id (an integer >= 0), "
                             f"got {batch!r}")
        try:
            k = float(kappa)
        except ValueError:
            k = math.nan
        if not (math.isfinite(k) and k > 0):
            raise InputError(f"kappa-schedule: {where} line {line}: kappa: expected a finite number > 0, got {kappa!r}")
        if int(batch) in table:
            raise InputError(f"kappa-schedule: {where} line {line}: batch {int(batch)} has a second row")
        table[int(batch)] = k
    if not table:
        raise InputError(f"kappa-schedule: {where}: no rows after the header batch,kappa")
    return table


def kappa_per_batch(kappa: float, schedule: str | KappaSchedule | None, batches: int | Sequence[int]) -> np.ndarray:
    """κ_t for each batch: ``kappa`` times the schedule's value (constant ``kappa`` without one).

    >>> kappa_per_batch(4.0, None, 3).tolist()
    [4.0, 4.0, 4.0]
    """
    n = batches if isinstance(batches, int) else len(batches)
    if schedule is None:
        return np.full(n, float(kappa))
    return float(kappa) * parse_kappa_schedule(schedule).values(batches)
