"""Reading and validating a batch: its files, streamed chunk by chunk into one :class:`Batch`.

Reading validates: the target column is present and has no missing value, every feature is
present and of a kind (numbers, booleans or text: :func:`~cara_mlflow.features.kind_of`; the kind
fixed at tune when one is given), numbers are finite, and neither file is empty. Every problem
raises a one-line :class:`~cara_mlflow.store.BatchStoreError` naming the batch, the file or
column, and what is expected.

Reading streams: a file is read ``chunk_rows`` rows at a time (:mod:`.tables`), only the
feature and target columns; each chunk's columns are kept with their own dtype and joined once
per column, and the kernel coordinates are filled in place, so the memory a read needs beyond
the frame and the coordinates it returns does not grow with the number of rows. The checks and
their messages are those of a whole-file read (counts are totals over the file, a column's type
is the type of the whole column).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..batch import Batch, QueryBatch
from ..errors import InputError
from ..features import FeatureSpace, infer_kinds, kind_of
from .errors import BatchStoreError
from .layout import QUERIES_MARKER, SUCCESS_MARKER, BatchInfo, batch_file
from .tables import Table, is_number_dtype, open_table

__all__ = ["read_batch", "read_queries", "checked_features"]


def checked_features(features: Sequence[str] | None, target: str) -> tuple[str, ...] | None:
    """``features`` as a tuple of str, checked for duplicates and the target."""
    if not isinstance(target, str) or not target:
        raise InputError(f"target: expected a non-empty column name, got {target!r}")
    if features is None:
        return None
    if isinstance(features, str):
        raise TypeError(f"features must be a sequence of column names, not the string {features!r}")
    names = tuple(features)
    if not names:
        raise BatchStoreError("features is empty; expected at least one feature column name")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise BatchStoreError(f"features lists {', '.join(map(repr, twice))} more than once")
    if target in names:
        raise BatchStoreError(
            f"the target {target!r} is also listed in features; a column is one or the other"
        )
    return names


def read_batch(
    info: BatchInfo, *, target: str, features: tuple[str, ...] | None, chunk_rows: int,
    space: FeatureSpace | None = None,
) -> Batch:
    """Read and validate the batch at ``info`` (``features`` checked by :func:`checked_features`).

    ``space`` (the policy's, fixed at tune) gives the features, their kinds and the kernel
    coordinates ``X``; without it the kinds are the columns' own and ``X`` is in the ``raw``
    space of this batch. ``queries`` is read from the queries file when there is one (it must
    hold every feature; other columns are ignored; its target column, if any, gives
    ``query_labels``), else it is ``X``, with ``query_labels = y`` and ``query_index`` every row.
    With a queries file, ``X`` is computed on first use (:meth:`Batch.coordinates` reads rows
    without it).
    """
    if not info.complete:
        raise BatchStoreError(
            f"batch {info.id} is incomplete (no {SUCCESS_MARKER}): "
            "wait for the producer to finish it"
        )
    kinds, origin = (None, "") if space is None else (space.kind_of, "its kind at tune")
    data_path = batch_file(info, "data", required=True)
    frame, y = _read_data(info.id, data_path, target, features, (kinds, origin), chunk_rows)
    if kinds is None:
        kinds, origin = infer_kinds(frame, tuple(frame.columns)), f"its kind in {data_path.name}"
    space = space or FeatureSpace.fit(frame, kinds, scaling="raw")
    query_path = batch_file(info, "queries", required=False)
    if query_path is None:
        X = _coordinates(space, frame)
        query_frame, queries, query_labels, query_index = frame, X, y, _every_row(X.shape[0])
    else:
        with open_table(info.id, query_path) as query_table:
            labelled = target in query_table.columns
            query_frame, query_labels = _read_table(
                query_table, tuple(frame.columns), target if labelled else None, (kinds, origin), chunk_rows
            )
        # the data's coordinates wait for their first use: a row sample needs its rows only
        X, queries, query_index = None, _coordinates(space, query_frame), None
    return Batch(
        X=X, y=y, queries=queries, query_labels=query_labels, query_index=query_index, id=info.id,
        features=tuple(frame.columns), target=target, data_path=data_path,
        has_query_file=query_path is not None, frame=frame, query_frame=query_frame, space=space,
    )


def read_queries(info: BatchInfo, *, space: FeatureSpace, chunk_rows: int) -> QueryBatch:
    """The queries of a batch whose labels are not in yet (``_QUERIES``), checked as a full
    read checks them: every feature of ``space`` present, of its kind, numbers finite."""
    if not (info.queries_ready or info.complete):
        raise BatchStoreError(f"batch {info.id} has neither {QUERIES_MARKER} nor {SUCCESS_MARKER}: "
                              "wait for the producer to finish its queries")
    query_path = batch_file(info, "queries", required=False)
    if query_path is None:
        raise BatchStoreError(f"batch {info.id} has {QUERIES_MARKER} but no queries file in {info.path}: "
                              "expected queries.parquet (or queries.csv) beside the marker")
    with open_table(info.id, query_path) as table:
        frame, _ = _read_table(table, space.features, None, (space.kind_of, "its kind at tune"), chunk_rows)
    return QueryBatch(id=info.id, queries=_coordinates(space, frame), query_frame=frame, space=space,
                      query_path=query_path)


def _coordinates(space: FeatureSpace, frame: pd.DataFrame) -> np.ndarray:
    X = space.transform(frame)
    X.setflags(write=False)
    return X


def _read_data(
    batch_id: int, path: Path, target: str, features: tuple[str, ...] | None,
    kinds: tuple[dict[str, str] | None, str], chunk_rows: int,
) -> tuple[pd.DataFrame, np.ndarray]:
    """The features (by default every column but the target) and ``y`` of a data file."""
    with open_table(batch_id, path) as data:
        if target not in data.columns:
            raise BatchStoreError(
                f"batch {batch_id}: {path.name} has no column {target!r} (the target); "
                f"columns are {', '.join(map(str, data.columns))}"
            )
        if features is None:
            features = tuple(str(c) for c in data.columns if c != target)
            if not features:
                raise BatchStoreError(
                    f"batch {batch_id}: {path.name} has only the target column {target!r}; "
                    "expected at least one feature column"
                )
        frame, y = _read_table(data, features, target, kinds, chunk_rows)
    assert y is not None
    return frame, y


def _every_row(n: int) -> np.ndarray:
    """``0..n-1``, read-only: the ``query_index`` of queries that are the data themselves."""
    index = np.arange(n)
    index.setflags(write=False)
    return index


@dataclass(eq=False)
class _Scan:
    """What a read gathers over the chunks of a table."""

    pieces: dict[str, list[pd.Series]]  # each column's chunks, in order
    bad: dict[str, int]  # NaN/inf values per column
    seen: dict[str, list[Any]]  # the distinct dtypes of each column's chunks


def _read_table(
    table: Table, features: tuple[str, ...], target: str | None, kinds: tuple[dict[str, str] | None, str],
    chunk_rows: int,
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The checked feature frame (original dtypes) and the checked target of ``table``.

    Per column, the chunks are kept with the dtypes seen and the count of NaN/inf values over
    the whole file; the checks run once the file is read, in the order of a whole-file read.
    Columns known to be missing or of the wrong kind from the metadata alone fail before any
    row is read.
    """
    _check_before_reading(table, features, kinds)
    streamed_target = target if target is not None and table.streams_target else None
    present = [f for f in features if f in table.columns]
    names = present + ([target] if streamed_target else [])
    scan = _Scan(pieces={n: [] for n in names}, bad=dict.fromkeys(names, 0), seen={n: [] for n in names})
    for group in table.passes(names):
        for chunk in table.chunks(group, chunk_rows):
            for name in group:
                _take_column(scan, name, chunk[name].copy())  # no view keeps the chunk
            del chunk
    frame = pd.DataFrame({name: _whole_column(table, name, scan) for name in present}, copy=False)
    _check_frame(table, features, kinds, frame, scan)
    if target is None:
        return frame, None
    column = _whole_column(table, target, scan) if streamed_target else table.column(target)
    return frame, _target_vector(column, target, table.batch_id, table.path.name)


def _check_before_reading(table: Table, features: tuple[str, ...], kinds: tuple[dict | None, str]) -> None:
    """Fail on what is certain before reading, in the order of the checks of a whole read."""
    for name in features:
        if name not in table.columns:
            raise _missing_feature(table, name, features)
        dtype = table.known_dtype(name)
        if dtype is None:
            return
        _check_kind(table, name, dtype, kinds)


def _take_column(scan: _Scan, name: str, column: pd.Series) -> None:
    """Record a chunk of one column: its dtype, its NaN/inf count, the values."""
    if column.dtype not in scan.seen[name]:
        scan.seen[name].append(column.dtype)
    if is_number_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        scan.bad[name] += len(values) - int(np.count_nonzero(np.isfinite(values)))
    scan.pieces[name].append(column)


def _whole_column(table: Table, name: str, scan: _Scan) -> pd.Series:
    """A column whole: its chunks joined when they agree on its type, else read from the file."""
    parts = scan.pieces.pop(name)
    if len(scan.seen[name]) > 1:
        parts.clear()
        whole = table.column(name)
        scan.seen[name] = [table.whole_dtype(name, scan.seen[name])]
        return whole.astype(scan.seen[name][0]) if whole.dtype != scan.seen[name][0] else whole
    if len(parts) > 1 and isinstance(parts[0].dtype, np.dtype) and parts[0].dtype.kind in "biufcmM":
        # numpy numbers joined as arrays: pd.concat's per-piece work costs more than the copy
        # (not object columns: pandas would infer a text dtype for them that pd.concat keeps as object)
        return pd.Series(np.concatenate([p.to_numpy() for p in parts]), name=name, copy=False)
    whole = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    return whole.reset_index(drop=True)


def _check_frame(table: Table, features: tuple[str, ...], kinds: tuple[dict | None, str],
                 frame: pd.DataFrame, scan: _Scan) -> None:
    """Every feature present, of its kind, and its numbers finite."""
    for name in features:   # in order: the first feature missing or of no kind fails
        if name not in table.columns:
            raise _missing_feature(table, name, features)
        _check_kind(table, name, frame[name].dtype, kinds)
    for name in features:
        if scan.bad[name] and is_number_dtype(frame[name].dtype):
            raise BatchStoreError(
                f"batch {table.batch_id}: column {name!r} has {scan.bad[name]} NaN/inf values in "
                f"{table.path.name}; expected finite numbers"
            )


_EXPECTED = {"numeric": "numbers", "boolean": "booleans", "categorical": "text"}


def _check_kind(table: Table, name: str, dtype: Any, kinds: tuple[dict | None, str]) -> None:
    """``kinds``: the expected kind of each feature (or None: any kind) and where it comes from."""
    expected, origin = kinds
    kind = kind_of(dtype)
    wanted = None if expected is None else expected.get(name)
    if kind is None:
        raise BatchStoreError(
            f"batch {table.batch_id}: column {name!r} has type {dtype} in {table.path.name}; expected "
            f"numbers, booleans or text: convert it, or leave it out with --exclude {name} at tune"
        )
    # numbers and booleans are both numbers to the kernel: only text where numbers were is wrong
    if wanted in ("numeric", "boolean") and kind == "categorical":
        raise BatchStoreError(
            f"batch {table.batch_id}: column {name!r} has type {dtype}; expected {_EXPECTED[wanted]} "
            f"({origin}) (in {table.path.name})"
        )


def _missing_feature(table: Table, name: str, features: tuple[str, ...]) -> BatchStoreError:
    return BatchStoreError(
        f"batch {table.batch_id}: {table.path.name} has no column {name!r} (a feature); "
        f"columns are {', '.join(map(str, table.columns))}; expected every feature: "
        f"{', '.join(features)}"
    )


def _target_vector(column: pd.Series, target: str, batch_id: int, file: str) -> np.ndarray:
    """The target column as a read-only numpy array, checked for missing values."""
    api = pd.api.types
    dtype = column.dtype
    missing = int(column.isna().sum())
    if api.is_float_dtype(dtype):
        missing += int(np.isinf(column.to_numpy(dtype=np.float64, na_value=np.nan)).sum())
    if missing:
        raise BatchStoreError(
            f"batch {batch_id}: column {target!r} (the target) has {missing} NaN/inf/missing "
            f"values in {file}; expected a label in every row"
        )
    if is_number_dtype(dtype):  # nullable / pyarrow-backed numbers as their numpy dtype
        y = column.to_numpy(dtype=getattr(dtype, "numpy_dtype", dtype))
    else:
        y = column.to_numpy()
    y.setflags(write=False)
    return y
