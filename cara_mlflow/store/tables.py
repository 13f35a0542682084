"""A batch file opened for streaming: its columns up front, its rows chunk by chunk.

A parquet file is read through ``pyarrow.parquet.ParquetFile.iter_batches`` (columns, row count
and most dtypes from its metadata; a few columns per pass), a folder of parquet part files (as
Spark, Dask or pyarrow write a dataset) the same way, part after part, a csv file through
``pandas.read_csv(chunksize=...)`` (columns from its header; dtypes known once every chunk is
parsed). Either way a table answers what a whole-file pandas read would: its columns in file
order, the dtype of a whole column, a column whole. Every reader error is a one-line
:class:`~cara_mlflow.store.BatchStoreError` naming the batch and the file; a network failure of an
object store is a :class:`~cara_mlflow.errors.StoreUnreachable` instead.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from .errors import BatchStoreError
from .location import is_remote, unreachable

__all__ = ["Table", "ParquetTable", "CsvTable", "open_table", "reading_errors", "is_number_dtype",
           "is_real_dtype"]

PARQUET_COLUMNS_PER_PASS = 8
"""Columns read per pass over a parquet file (see :meth:`ParquetTable.passes`)."""

PARQUET_BUFFER_BYTES = 1 << 16
"""Read buffer per parquet column chunk. Without it (and with pre-buffering, pyarrow's default)
the reader loads every needed column chunk of a row group whole: the whole file, for a batch
written by pandas (one row group up to 2^20 rows)."""

# Errors a reader may raise on a broken or foreign file (pyarrow's ArrowInvalid is a
# ValueError, ArrowIOError an OSError, ArrowTypeError a TypeError; pandas' ParserError and
# EmptyDataError are ValueErrors; pyarrow's ArrowNotImplementedError, for a parquet feature it
# cannot read, is a NotImplementedError; ImportError when no parquet engine is installed).
READ_ERRORS = (OSError, ValueError, TypeError, NotImplementedError, ImportError)


@contextmanager
def reading_errors(batch_id: int, path: Path) -> Iterator[None]:
    """Turn an error of a reader inside the block into a one-line :class:`BatchStoreError` (an
    object store's network failure into :class:`~cara_mlflow.errors.StoreUnreachable`)."""
    try:
        yield
    except BatchStoreError:
        raise
    except READ_ERRORS as error:
        network = unreachable(error, path)
        if network is not None:
            raise network from error
        detail = " ".join(str(error).split())[:200]
        name = path.name if path.suffix else f"{path.name}/"
        raise BatchStoreError(
            f"batch {batch_id}: cannot read {name} ({type(error).__name__}: {detail}); "
            f"expected a valid {path.suffix[1:] or 'parquet'} file: rewrite it"
        ) from error


@contextmanager
def opened(path) -> Iterator[Any]:
    """What a reader takes for ``path``: the local path as text, or an object store's file, closed after."""
    if not is_remote(path):
        yield str(path)
        return
    source = path.open_input()
    try:
        yield source
    finally:
        source.close()


class Table(ABC):
    """A batch file opened for streaming: its columns up front, its rows chunk by chunk.

    ``columns`` are the columns a whole-file pandas read would give, in file order;
    ``has_rows`` whether the file has a row. Every reader error is a :class:`BatchStoreError`.
    """

    columns: tuple[str, ...]
    has_rows: bool
    streams_target: bool  # whether the target comes in the chunks, or whole from column()

    def __init__(self, batch_id: int, path: Path) -> None:
        self.batch_id, self.path = batch_id, path

    @abstractmethod
    def capacity(self) -> int:
        """Rows to preallocate: exact, or an estimate that a read corrects."""

    def known_dtype(self, name: str) -> Any:
        """The dtype of column ``name`` in a whole-file read, when known without the data."""
        return None

    def passes(self, names: list[str]) -> list[list[str]]:
        """``names`` split into the column groups read in one pass over the file each."""
        return [names]

    @abstractmethod
    def chunks(self, names: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
        """The columns ``names`` (all present), ``chunk_rows`` rows at a time."""

    @abstractmethod
    def whole_dtype(self, name: str, seen: list[Any]) -> Any:
        """The dtype of column ``name`` in a whole-file read, from the dtypes of its chunks."""

    @abstractmethod
    def column(self, name: str) -> pd.Series:
        """Column ``name`` whole, as a whole-file pandas read gives it."""

    def close(self) -> None:
        """Release the file."""


class ParquetTable(Table):
    """A parquet file, or a folder of parquet part files read as one table, part after part:
    columns, row count and (mostly) dtypes from the parts' metadata."""

    streams_target = False  # the target is one column: read whole, with its pandas dtype

    def __init__(self, batch_id: int, path: Path, parts: list | None = None) -> None:
        super().__init__(batch_id, path)
        self.parts = parts or [path]
        self._sources: list = []
        self._files: list = []
        try:
            for part in self.parts:
                self._open_part(part)
            self._check_columns()
        except BaseException:
            self.close()
            raise
        self.has_rows = self.capacity() > 0

    def _open_part(self, part) -> None:
        with reading_errors(self.batch_id, part):
            import pyarrow.parquet as pq  # ImportError: no parquet engine, "cannot read"

            source = part.open_input() if is_remote(part) else part
            if is_remote(part):
                self._sources.append(source)
            # pages are read through a small buffer, not whole column chunks up front
            file = pq.ParquetFile(source, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False)
            self._files.append(file)
            if len(self._files) == 1:
                schema = file.schema_arrow
                index = (schema.pandas_metadata or {}).get("index_columns", ())
                index = {c for c in index if isinstance(c, str)}  # not a RangeIndex description
                self.columns = tuple(n for n in schema.names if n not in index)
                self._empty = schema.empty_table().to_pandas()

    def _check_columns(self) -> None:
        for part, file in zip(self.parts[1:], self._files[1:]):
            missing = [c for c in self.columns if c not in file.schema_arrow.names]
            if missing:
                raise BatchStoreError(
                    f"batch {self.batch_id}: {self.path.name}/{part.name} has no column {missing[0]!r}, which "
                    f"{self.parts[0].name} has; every part of a dataset holds the same columns: rewrite the dataset"
                )

    def capacity(self) -> int:
        return int(sum(file.metadata.num_rows for file in self._files))

    def passes(self, names: list[str]) -> list[list[str]]:
        # parquet is stored by column, so a pass reads only its columns; the reader holds a
        # page, and often a dictionary, per column read: a few columns at a time bound that
        k = PARQUET_COLUMNS_PER_PASS
        return [names[i : i + k] for i in range(0, len(names), k)]

    def known_dtype(self, name: str) -> Any:
        dtype = self._empty[name].dtype
        # an arrow bool column is a bool column for pandas, or an object one if it has a null
        return None if dtype == np.dtype(bool) or len(self._files) > 1 else dtype

    def chunks(self, names: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
        for part, file in zip(self.parts, self._files):
            with reading_errors(self.batch_id, part):
                for batch in file.iter_batches(batch_size=chunk_rows, columns=names):
                    yield batch.to_pandas(split_blocks=True)

    def whole_dtype(self, name: str, seen: list[Any]) -> Any:
        # a column's chunk dtypes differ only by nulls (int64/float64, bool/object): a
        # non-numeric chunk dtype is the whole column's
        if len(self._files) > 1 and all(is_real_dtype(t) for t in seen) and len(set(seen)) > 1:
            # int32 and int64 parts: int64; integer parts and float ones (a part with a null): floats
            return np.result_type(*seen) if all(isinstance(t, np.dtype) for t in seen) else np.dtype(np.float64)
        return next((t for t in seen if not is_number_dtype(t)), seen[0])

    def column(self, name: str) -> pd.Series:
        pieces = []
        for part, file in zip(self.parts, self._files):
            if file.metadata.num_rows == 0 and len(self.parts) > 1:
                continue   # an empty part's column may be typed otherwise (object): it adds no value
            with reading_errors(self.batch_id, part), opened(part) as source:
                pieces.append(pd.read_parquet(source, columns=[name])[name])
        return pieces[0] if len(pieces) == 1 else pd.concat(pieces, ignore_index=True)

    def close(self) -> None:
        for file in self._files:
            file.close()
        for source in self._sources:
            source.close()


class CsvTable(Table):
    """A csv file: columns from its header; dtypes known only once every chunk is parsed."""

    streams_target = True  # csv is parsed row by row: the target comes with the features

    def __init__(self, batch_id: int, path: Path) -> None:
        super().__init__(batch_id, path)
        with reading_errors(batch_id, path), opened(path) as source:
            head = pd.read_csv(source, nrows=1)
        self.columns = tuple(head.columns)
        self.has_rows = len(head) > 0

    def capacity(self) -> int:
        # one row a line; blank lines and quoted line breaks only make it larger
        with reading_errors(self.batch_id, self.path), opened(self.path) as source, \
                (open(source, "rb") if isinstance(source, str) else contextlib.nullcontext(source)) as f:
            return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))

    def chunks(self, names: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
        with reading_errors(self.batch_id, self.path), opened(self.path) as source:
            with pd.read_csv(source, usecols=names, chunksize=chunk_rows) as reader:
                yield from reader

    def whole_dtype(self, name: str, seen: list[Any]) -> Any:
        if len(seen) == 1:
            return seen[0]
        if all(is_real_dtype(t) for t in seen):  # integers in some chunks, floats in others
            return np.dtype(np.float64)
        # e.g. bools in one chunk, numbers in another: a whole-file read says text
        return self.column(name).dtype

    def column(self, name: str) -> pd.Series:
        with reading_errors(self.batch_id, self.path), opened(self.path) as source:
            return pd.read_csv(source, usecols=[name], low_memory=False)[name]


TABLES: dict[str, Callable[[int, Path], Table]] = {"parquet": ParquetTable, "csv": CsvTable}
"""The table class of each file format (:data:`~cara_mlflow.store.layout.FORMATS`)."""


@contextmanager
def open_table(batch_id: int, path: Path) -> Iterator[Table]:
    """The batch file ``path`` (or folder of parquet parts) opened for streaming, with at least one row."""
    if not path.suffix:   # a dataset folder (layout.batch_file): its part files, read as one table
        from .layout import dataset_parts

        table = ParquetTable(batch_id, path, dataset_parts(batch_id, path))
    else:
        table = TABLES[path.suffix[1:]](batch_id, path)
    try:
        if not table.has_rows:
            raise BatchStoreError(
                f"batch {batch_id}: {path.name}{'' if path.suffix else '/'} has no rows; expected at least one"
            )
        yield table
    finally:
        table.close()


def is_real_dtype(dtype: Any) -> bool:
    """Integer or real floating dtype (not bool)."""
    api = pd.api.types
    return bool(
        (api.is_integer_dtype(dtype) or api.is_float_dtype(dtype)) and not api.is_bool_dtype(dtype)
    )


def is_number_dtype(dtype: Any) -> bool:
    """Bool, integer or real floating dtype (numpy, nullable or pyarrow-backed)."""
    api = pd.api.types
    return bool(
        api.is_bool_dtype(dtype) or api.is_integer_dtype(dtype) or api.is_float_dtype(dtype)
    )
