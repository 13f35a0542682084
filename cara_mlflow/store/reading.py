"""Reading and validating a batch: its files, streamed chunk by chunk into one :class:`Batch`.

Reading validates: the target column is present and has no missing value, every feature is
present, numeric (bool and integers are converted to float64) and finite, and neither file is
empty. Every problem raises a one-line :class:`~cara_mlflow.store.BatchStoreError` naming the
batch, the file or column, and what is expected.

Reading streams: a file is read ``chunk_rows`` rows at a time (:mod:`.tables`), only the
feature and target columns, and each chunk's features are checked and copied into one
preallocated float64 array. The memory a read needs beyond the arrays it returns does not grow
with the number of rows; the checks and their messages are those of a whole-file read (counts
are totals over the file, a column's type is the type of the whole column).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..batch import Batch
from ..errors import InputError
from .errors import BatchStoreError
from .layout import SUCCESS_MARKER, BatchInfo, batch_file
from .tables import Table, is_number_dtype, open_table

__all__ = ["read_batch", "checked_features"]


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
    info: BatchInfo, *, target: str, features: tuple[str, ...] | None, chunk_rows: int
) -> Batch:
    """Read and validate the batch at ``info`` (``features`` checked by :func:`checked_features`).

    ``queries`` is read from the queries file when there is one (it must hold every feature;
    other columns are ignored; its target column, if any, gives ``query_labels``), else it is
    ``X``, with ``query_labels = y`` and ``query_index`` every row.
    """
    if not info.complete:
        raise BatchStoreError(
            f"batch {info.id} is incomplete (no {SUCCESS_MARKER}): "
            "wait for the producer to finish it"
        )
    data_path = batch_file(info, "data", required=True)
    features, X, y = _read_data(info.id, data_path, target, features, chunk_rows)
    query_path = batch_file(info, "queries", required=False)
    if query_path is None:
        queries, query_labels, query_index = X, y, _every_row(X.shape[0])
    else:
        with open_table(info.id, query_path) as query_table:
            labelled = target in query_table.columns
            queries, query_labels = _read_table(
                query_table, features, target if labelled else None, chunk_rows
            )
        query_index = None
    return Batch(
        X=X,
        y=y,
        queries=queries,
        query_labels=query_labels,
        query_index=query_index,
        id=info.id,
        features=features,
        target=target,
        data_path=data_path,
        has_query_file=query_path is not None,
    )


def _read_data(
    batch_id: int, path: Path, target: str, features: tuple[str, ...] | None, chunk_rows: int
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """The features (by default every column but the target), ``X`` and ``y`` of a data file."""
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
        X, y = _read_table(data, features, target, chunk_rows)
    return features, X, y


def _every_row(n: int) -> np.ndarray:
    """``0..n-1``, read-only: the ``query_index`` of queries that are the data themselves."""
    index = np.arange(n)
    index.setflags(write=False)
    return index


@dataclass(eq=False)
class _Scan:
    """What a read gathers over the chunks of a table."""

    X: np.ndarray | None  # the features copied so far; None once a chunk cannot be copied
    bad: np.ndarray  # NaN/inf values per feature
    seen: dict[str, list[Any]]  # the distinct dtypes of each column's chunks
    target_parts: list[pd.Series]  # the target's chunks, when it comes with the features
    n: int = 0  # rows of the current pass


def _read_table(
    table: Table, features: tuple[str, ...], target: str | None, chunk_rows: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """``X`` (read-only, C-ordered float64, checked) and the checked target of ``table``.

    The chunks' features go straight into one preallocated array; per column, the dtypes seen
    and the count of NaN/inf values are kept over the whole file, and the checks run once the
    file is read, in the order of a whole-file read. Columns known to be missing or not
    numeric from the metadata alone fail before any row is read.
    """
    _check_before_reading(table, features)
    streamed_target = target if target is not None and table.streams_target else None
    names = [f for f in features if f in table.columns] + ([target] if streamed_target else [])
    d = len(features)
    scan = _Scan(
        X=np.empty((table.capacity(), d)) if len(names) - bool(streamed_target) == d else None,
        bad=np.zeros(d, dtype=np.int64),
        seen={name: [] for name in names},
        target_parts=[],
    )
    index = {name: j for j, name in enumerate(features)}
    for group in table.passes(names):
        scan.n = 0
        for chunk in table.chunks(group, chunk_rows):
            m = len(chunk)
            columns = {name: chunk[name] for name in group}
            del chunk
            _take_chunk(scan, columns, m, index, streamed_target)
            scan.n += m
            del columns
    X = _checked_X(table, features, scan)
    if target is None:
        return X, None
    column = _target_column(table, target, scan, streamed=streamed_target is not None)
    scan.target_parts.clear()
    return X, _target_vector(column, target, table.batch_id, table.path.name)


def _check_before_reading(table: Table, features: tuple[str, ...]) -> None:
    """Fail on what is certain before reading, in the order of the checks of a whole read."""
    for name in features:
        if name not in table.columns:
            raise _missing_feature(table, name, features)
        dtype = table.known_dtype(name)
        if dtype is None:
            return
        if not is_number_dtype(dtype):
            raise _not_numeric(table, name, dtype)


def _take_chunk(
    scan: _Scan, columns: dict[str, pd.Series], m: int, index: dict[str, int], target: str | None
) -> None:
    """Record the dtypes of a chunk of ``m`` rows, keep its target, copy its features into ``X``."""
    for name, column in columns.items():
        if column.dtype not in scan.seen[name]:
            scan.seen[name].append(column.dtype)
    if target is not None and target in columns:
        scan.target_parts.append(columns.pop(target).copy())  # no view keeps the chunk
    X, n = scan.X, scan.n
    if X is None or not all(is_number_dtype(c.dtype) for c in columns.values()):
        scan.X = None  # a feature is missing or not numeric: the read fails, types say how
        return
    if n + m > X.shape[0]:  # an estimated capacity was short: grow in place
        X.resize((max(n + m, 2 * X.shape[0]), X.shape[1]), refcheck=False)
    for name, column in columns.items():  # a loop over columns, never over rows
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        scan.bad[index[name]] += m - np.count_nonzero(np.isfinite(values))
        X[n : n + m, index[name]] = values


def _checked_X(table: Table, features: tuple[str, ...], scan: _Scan) -> np.ndarray:
    """``X`` of a whole read, once every feature is known present, numeric and finite."""
    for name in features:
        if name not in table.columns:
            raise _missing_feature(table, name, features)
        dtype = table.whole_dtype(name, scan.seen[name])
        if not is_number_dtype(dtype):
            raise _not_numeric(table, name, dtype)
    if scan.bad.any():
        j = int(np.flatnonzero(scan.bad)[0])
        raise BatchStoreError(
            f"batch {table.batch_id}: column {features[j]!r} has {scan.bad[j]} NaN/inf values in "
            f"{table.path.name}; expected finite numbers"
        )
    X, scan.X = scan.X, None
    assert X is not None, "every feature is numeric, so every chunk was copied"
    if X.shape[0] != scan.n:
        X.resize((scan.n, len(features)), refcheck=False)
    X.setflags(write=False)
    return X


def _target_column(table: Table, target: str, scan: _Scan, *, streamed: bool) -> pd.Series:
    """The target column whole: from its chunks when they agree on its type, else from the file."""
    if streamed and len(scan.seen[target]) == 1:
        parts = scan.target_parts
        return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    return table.column(target)


def _missing_feature(table: Table, name: str, features: tuple[str, ...]) -> BatchStoreError:
    return BatchStoreError(
        f"batch {table.batch_id}: {table.path.name} has no column {name!r} (a feature); "
        f"columns are {', '.join(map(str, table.columns))}; expected every feature: "
        f"{', '.join(features)}"
    )


def _not_numeric(table: Table, name: str, dtype: Any) -> BatchStoreError:
    return BatchStoreError(
        f"batch {table.batch_id}: column {name!r} has type {dtype}; expected numbers "
        f"(in {table.path.name})"
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
