"""The batch store on disk: listing, completeness, reading and validating batches.

A batch store is a directory (DESIGN.md, "Batch store")::

    STORE/batches/<id>/data.parquet      features + target column   (or data.csv)
    STORE/batches/<id>/queries.parquet   features only (optional; or queries.csv)
    STORE/batches/<id>/_SUCCESS          written last by the producer

``<id>`` is a non-negative integer; the directory name may be zero-padded (``007``), messages
write it without padding. A batch without ``_SUCCESS`` is *incomplete*: its producer has not
finished it, and :meth:`BatchStore.read` refuses it. When a batch has no queries file, its own
data points are the queries.

A directory under ``batches/`` whose name is not a non-negative integer is ignored with a
:class:`BatchStoreWarning`; two directories with the same id (``7`` and ``007``) are an error.

Every problem with a batch raises :class:`BatchStoreError`, an :class:`~cara_mlflow.errors.InputError`
(so a ``ValueError``) whose message is one line naming the batch, the file or column, and what is
expected. Reading validates: the target column is present and has no missing value, every
feature is present, numeric (bool and integers are converted to float64) and finite, and neither
file is empty.

Reading streams: a file is read :data:`CHUNK_ROWS` rows at a time (parquet through
``pyarrow.parquet.ParquetFile.iter_batches``, csv through ``pandas.read_csv(chunksize=...)``),
only the feature and target columns, and each chunk's features are checked and copied into one
preallocated float64 array. The memory a read needs beyond the arrays it returns does not grow
with the number of rows; the checks and their messages are those of a whole-file read (counts are
totals over the file, a column's type is the type of the whole column).

:meth:`BatchStore.write` writes the files of a batch under temporary names and renames each
into place, ``_SUCCESS`` last, so a reader never sees a half-written file nor a batch marked
complete before its data. :func:`write_stream` writes a whole synthetic stream as a store.

This module is pure pandas/numpy/pyarrow: it never imports mlflow or click.

Examples
--------
>>> import tempfile
>>> import pandas as pd
>>> tmp = tempfile.TemporaryDirectory()
>>> store = BatchStore(tmp.name)
>>> store.exists()
False
>>> store.write(3, pd.DataFrame({"x1": [0.5, 1.5], "x2": [1, 2], "label": ["a", "b"]}))
BatchInfo(id=3, path=PosixPath('.../batches/3'), complete=True)
>>> [info.id for info in store.list()], store.next_after(None).id, store.next_after(3)
([3], 3, None)
>>> batch = store.read(3, target="label")
>>> batch
Batch(id=3, n_rows=2, n_queries=2, features=('x1', 'x2'), target='label', has_query_file=False)
>>> batch.X, batch.y
(array([[0.5, 1. ], [1.5, 2. ]]), array(['a', 'b'], dtype=object))
>>> store.read(3, target="y")
Traceback (most recent call last):
...
cara_mlflow.store.BatchStoreError: batch 3: data.parquet has no column 'y' (the target); ...
>>> tmp.cleanup()
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from .errors import InputError

__all__ = [
    "BatchStoreError",
    "BatchStoreWarning",
    "BatchInfo",
    "Batch",
    "BatchStore",
    "write_stream",
    "FORMATS",
    "SUCCESS_MARKER",
    "CHUNK_ROWS",
]

SUCCESS_MARKER = "_SUCCESS"
"""The file a producer writes last into a batch directory: a batch without it is incomplete."""

BATCHES_DIR = "batches"

CHUNK_ROWS = 65_536
"""Rows per chunk when :meth:`BatchStore.read` streams a file.

Beyond the arrays it returns, a read holds one chunk of the columns of a pass (and a copy of
one column): a parquet file is read eight columns per pass, so pyarrow also holds those eight
columns' current pages; a csv file in one pass. Looked up at each read, so a test can lower it."""

_WRITERS: dict[str, Callable[[pd.DataFrame, str], Any]] = {
    "parquet": lambda frame, path: frame.to_parquet(path, index=False),
    "csv": lambda frame, path: frame.to_csv(path, index=False),
}
FORMATS: tuple[str, ...] = tuple(_WRITERS)
"""The file formats of a batch's files, by file suffix: ``data.<fmt>``, ``queries.<fmt>``."""

_ID_PATTERN = re.compile(r"[0-9]+", re.ASCII)

# Errors a reader may raise on a broken or foreign file (pyarrow's ArrowInvalid is a
# ValueError, ArrowIOError an OSError, ArrowTypeError a TypeError; pandas' ParserError and
# EmptyDataError are ValueErrors; pyarrow's ArrowNotImplementedError, for a parquet feature it
# cannot read, is a NotImplementedError; ImportError when no parquet engine is installed).
_READ_ERRORS = (OSError, ValueError, TypeError, NotImplementedError, ImportError)


class BatchStoreError(InputError):
    """A batch store or one of its batches is missing, incomplete or malformed.

    The message is one line naming the batch, the file or column, and the fix.
    """


class BatchStoreWarning(UserWarning):
    """Something in a batch store was ignored (a directory that is not a batch id)."""


@dataclass(frozen=True)
class BatchInfo:
    """Where a batch is and whether its producer finished it.

    Attributes
    ----------
    id : int
        The batch id (the directory name without zero padding).
    path : Path
        The batch directory.
    complete : bool
        Whether ``_SUCCESS`` exists in it.
    """

    id: int
    path: Path
    complete: bool


@dataclass(frozen=True, eq=False, repr=False)
class Batch:
    """A batch read from the store and validated.

    The arrays are read-only, like the arrays of a :class:`cara_mlflow.streams.Stream`.

    Attributes
    ----------
    id : int
        The batch id.
    X : ndarray of shape (n, d), float64
        The feature columns, in ``features`` order; finite.
    y : ndarray of shape (n,)
        The target column as read (integers, strings, bools, ...); no missing value.
    queries : ndarray of shape (m, d), float64
        The queries file's feature columns when the batch has one, else ``X`` itself.
    features : tuple of str
        The feature column names, in the order of the columns of ``X`` and ``queries``.
    target : str
        The target column name.
    data_path : Path
        The data file read (for MLflow dataset lineage).
    has_query_file : bool
        Whether the queries came from a queries file.
    query_labels : ndarray of shape (m,) or None
        The true labels of the queries, for evaluation only (``compare --store``): ``y`` when
        the queries are the data, the queries file's target column when it has one, else None.
    """

    id: int
    X: np.ndarray
    y: np.ndarray
    queries: np.ndarray
    features: tuple[str, ...]
    target: str
    data_path: Path
    has_query_file: bool
    query_labels: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        """The number of data points ``n``."""
        return int(self.X.shape[0])

    @property
    def n_queries(self) -> int:
        """The number of queries ``m``."""
        return int(self.queries.shape[0])

    def __repr__(self) -> str:
        return (
            f"Batch(id={self.id}, n_rows={self.n_rows}, n_queries={self.n_queries}, "
            f"features={self.features!r}, target={self.target!r}, "
            f"has_query_file={self.has_query_file})"
        )


class BatchStore:
    """The batch store rooted at ``root`` (see the module docstring for the layout).

    The constructor only records the (absolute) path: nothing is created or read until a
    method is called, and every call reads the directory afresh, so a store object sees the
    batches a producer adds later.

    Parameters
    ----------
    root : str or PathLike
        The store directory, the one holding ``batches/``.

    Attributes
    ----------
    root : Path
        ``root``, resolved to an absolute path.
    batches_dir : Path
        ``root / "batches"``.

    Examples
    --------
    >>> import tempfile
    >>> import pandas as pd
    >>> tmp = tempfile.TemporaryDirectory()
    >>> store = BatchStore(tmp.name)
    >>> store.list()
    Traceback (most recent call last):
    ...
    cara_mlflow.store.BatchStoreError: no batch store at ...: expected .../batches/<id>/...
    >>> for t in (2, 0):
    ...     _ = store.write(t, pd.DataFrame({"x": [float(t)], "label": [t % 2]}))
    >>> store.list()
    [BatchInfo(id=0, path=..., complete=True), BatchInfo(id=2, path=..., complete=True)]
    >>> store.info(1)
    Traceback (most recent call last):
    ...
    cara_mlflow.store.BatchStoreError: batch 1 does not exist in .../batches; ...
    >>> tmp.cleanup()
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        self.batches_dir = self.root / BATCHES_DIR

    def __repr__(self) -> str:
        return f"BatchStore({str(self.root)!r})"

    # ----------------------------------------------------------------------------------------
    # Listing
    # ----------------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the ``batches/`` directory exists."""
        return self.batches_dir.is_dir()

    def list(self) -> list[BatchInfo]:
        """Every batch of the store, complete or not, sorted by id.

        Directories whose name is not a non-negative integer are skipped with a
        :class:`BatchStoreWarning`; plain files under ``batches/`` are skipped silently.

        Raises
        ------
        BatchStoreError
            When there is no ``batches/`` directory, or two directories have the same id.
        """
        if not self.exists():
            raise BatchStoreError(
                f"no batch store at {self.root}: expected {self.batches_dir}/<id>/data.parquet; "
                "create one with `cara-mlflow make-stream` or your producer"
            )
        by_id: dict[int, Path] = {}
        # scandir: names and types without a stat per entry; only links are resolved (a real
        # directory listed here is inside the store), so a step's listing stays cheap at 10⁴ batches
        with os.scandir(self.batches_dir) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            path = Path(entry.path)
            if not entry.is_dir():
                continue
            if not _ID_PATTERN.fullmatch(path.name):
                warnings.warn(
                    f"ignoring directory {path.name!r} in {self.batches_dir}: "
                    "its name is not a batch id (a non-negative integer)",
                    BatchStoreWarning,
                    stacklevel=2,
                )
                continue
            batch_id = int(path.name)
            if entry.is_symlink() and not _inside(path, self.batches_dir):
                raise BatchStoreError(
                    f"batch {batch_id}: {path} is a link to {path.resolve()}, outside the store "
                    f"{self.root}; expected a directory inside it: copy the batch in"
                )
            if batch_id in by_id:
                raise BatchStoreError(
                    f"batch {batch_id} has two directories in {self.batches_dir}: "
                    f"{by_id[batch_id].name!r} and {path.name!r}; remove or merge one of them"
                )
            by_id[batch_id] = path
        return [
            BatchInfo(id=i, path=by_id[i], complete=(by_id[i] / SUCCESS_MARKER).is_file())
            for i in sorted(by_id)
        ]

    def info(self, batch_id: int) -> BatchInfo:
        """The :class:`BatchInfo` of batch ``batch_id``.

        Raises
        ------
        BatchStoreError
            When the batch does not exist (or the store is missing or has duplicate ids).
        """
        batch_id = _checked_id(batch_id)
        infos = self.list()
        for info in infos:
            if info.id == batch_id:
                return info
        held = (
            f"it holds {len(infos)} batches, ids {infos[0].id} to {infos[-1].id}"
            if infos
            else "it holds no batch yet"
        )
        raise BatchStoreError(f"batch {batch_id} does not exist in {self.batches_dir}; {held}")

    def next_after(self, last: int | None) -> BatchInfo | None:
        """The batch with the lowest id greater than ``last``, complete or not.

        ``last=None`` means nothing has been processed: the lowest id of the store. ``None``
        when no batch follows ``last``. The caller decides what an incomplete batch means
        (``step`` waits for it: order is never broken).

        Examples
        --------
        >>> import tempfile
        >>> import pandas as pd
        >>> tmp = tempfile.TemporaryDirectory()
        >>> store = BatchStore(tmp.name)
        >>> _ = store.write(5, pd.DataFrame({"x": [1.0], "label": [0]}))
        >>> (store.batches_dir / "9").mkdir()          # a producer has started batch 9
        >>> store.next_after(None).id, store.next_after(5), store.next_after(9)
        (5, BatchInfo(id=9, path=..., complete=False), None)
        >>> tmp.cleanup()
        """
        for info in self.list():
            if last is None or info.id > last:
                return info
        return None

    # ----------------------------------------------------------------------------------------
    # Reading
    # ----------------------------------------------------------------------------------------

    def read(
        self, batch_id: int, *, target: str, features: Sequence[str] | None = None
    ) -> Batch:
        """Read and validate batch ``batch_id``.

        Parameters
        ----------
        batch_id : int
            The batch to read; it must be complete.
        target : str
            The target column of the data file.
        features : sequence of str, optional
            The feature columns, in the order of the columns of ``X`` (the list fixed at tune
            time); columns of the data beyond these and the target are ignored. By default,
            every column but the target, in file order.

        Returns
        -------
        Batch
            ``queries`` is read from the queries file when there is one (it must hold every
            feature; other columns are ignored; its target column, if any, gives
            ``query_labels``), else it is ``X``.

        Notes
        -----
        Each file is streamed :data:`CHUNK_ROWS` rows at a time and only its feature and target
        columns are read: beyond the returned arrays, a read holds about a chunk. Errors are
        those of a whole-file read: counts are totals over the file, a column's type is the
        type of the whole column, and the first failing check, in the order listed below, is
        reported (a file that cannot be parsed past its header may report a missing column
        instead of ``cannot read``).

        Raises
        ------
        BatchStoreError
            One line naming the batch, the file and column, and what is expected, when the
            batch does not exist, is incomplete, has no data file or two (``data.parquet`` and
            ``data.csv``), a file cannot be read or has no rows, the target or a feature is
            missing, a feature is not numeric, a feature has NaN/inf values or the target
            missing values.

        Examples
        --------
        >>> import tempfile
        >>> import pandas as pd
        >>> tmp = tempfile.TemporaryDirectory()
        >>> store = BatchStore(tmp.name)
        >>> data = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [True, False, True], "t": [0, 1, 1]})
        >>> _ = store.write(0, data, queries=pd.DataFrame({"b": [1], "a": [9.5]}), fmt="csv")
        >>> batch = store.read(0, target="t", features=["b", "a"])
        >>> batch.X
        array([[1., 1.], [0., 2.], [1., 3.]])
        >>> batch.y, batch.queries, batch.data_path.name
        (array([0, 1, 1]), array([[1. , 9.5]]), 'data.csv')
        >>> store.read(0, target="t", features=["a", "c"])
        Traceback (most recent call last):
        ...
        cara_mlflow.store.BatchStoreError: batch 0: data.csv has no column 'c' (a feature); ...
        >>> tmp.cleanup()
        """
        features = _checked_features(features, target)
        info = self.info(batch_id)
        if not info.complete:
            raise BatchStoreError(
                f"batch {info.id} is incomplete (no {SUCCESS_MARKER}): "
                "wait for the producer to finish it"
            )
        data_path = _batch_file(info, "data", required=True)
        file = data_path.name
        with _open_table(info.id, data_path) as data:
            if target not in data.columns:
                raise BatchStoreError(
                    f"batch {info.id}: {file} has no column {target!r} (the target); "
                    f"columns are {', '.join(map(str, data.columns))}"
                )
            if features is None:
                features = tuple(str(c) for c in data.columns if c != target)
                if not features:
                    raise BatchStoreError(
                        f"batch {info.id}: {file} has only the target column {target!r}; "
                        "expected at least one feature column"
                    )
            X, y = _read_table(data, features, target, CHUNK_ROWS)

        query_path = _batch_file(info, "queries", required=False)
        if query_path is None:
            queries, query_labels = X, y
        else:
            with _open_table(info.id, query_path) as query_table:
                labelled = target in query_table.columns
                queries, query_labels = _read_table(
                    query_table, features, target if labelled else None, CHUNK_ROWS
                )
        return Batch(
            id=info.id,
            X=X,
            y=y,
            queries=queries,
            features=features,
            target=target,
            data_path=data_path,
            has_query_file=query_path is not None,
            query_labels=query_labels,
        )

    # ----------------------------------------------------------------------------------------
    # Writing
    # ----------------------------------------------------------------------------------------

    def write(
        self,
        batch_id: int,
        data: pd.DataFrame,
        *,
        queries: pd.DataFrame | None = None,
        fmt: str = "parquet",
    ) -> BatchInfo:
        """Write batch ``batch_id``: ``data.<fmt>``, ``queries.<fmt>`` if given, then ``_SUCCESS``.

        Each file is written under a temporary name in the batch directory, synced to disk and
        renamed into place (``os.replace``), ``_SUCCESS`` last: a reader sees either no file
        or a whole one, and never a complete batch without its data. Directories are created
        as needed; a new batch directory is named by the plain integer.

        An *incomplete* batch (a producer killed half-way) is written over, in its own
        directory, and data/queries files it holds in another format or (for queries) that
        this call does not write are removed, so the finished batch has exactly the files
        written here. The data are not validated: :meth:`read` does that.

        Parameters
        ----------
        batch_id : int
            A non-negative integer.
        data : DataFrame
            Features and target; its index is not written.
        queries : DataFrame, optional
            The queries (feature columns); without it the data points are the queries.
        fmt : {"parquet", "csv"}
            The file format.

        Raises
        ------
        BatchStoreError
            When the batch exists and is complete (a batch is written once), for a negative id
            or an unknown format.

        Examples
        --------
        >>> import tempfile
        >>> import pandas as pd
        >>> tmp = tempfile.TemporaryDirectory()
        >>> store = BatchStore(tmp.name)
        >>> info = store.write(3, pd.DataFrame({"x": [1.0], "label": [0]}), fmt="csv")
        >>> info.complete, sorted(p.name for p in info.path.iterdir())
        (True, ['_SUCCESS', 'data.csv'])
        >>> store.write(3, pd.DataFrame({"x": [2.0], "label": [1]}))
        Traceback (most recent call last):
        ...
        cara_mlflow.store.BatchStoreError: batch 3 already exists and is complete; ...
        >>> tmp.cleanup()
        """
        batch_id = _checked_id(batch_id)
        if fmt not in _WRITERS:
            raise BatchStoreError(
                f"batch {batch_id}: unknown file format {fmt!r}; expected one of "
                f"{', '.join(FORMATS)}"
            )
        for name, frame in (("data", data), ("queries", queries)):
            if frame is not None and not isinstance(frame, pd.DataFrame):
                raise TypeError(
                    f"batch {batch_id}: {name} must be a pandas DataFrame, "
                    f"got {type(frame).__name__}"
                )
        existing = None
        if self.exists():
            existing = next((i for i in self.list() if i.id == batch_id), None)
        if existing is not None and existing.complete:
            raise BatchStoreError(
                f"batch {batch_id} already exists and is complete; a batch is written once: "
                f"write a new id, or remove {existing.path} first"
            )
        path = existing.path if existing is not None else self.batches_dir / str(batch_id)
        path.mkdir(parents=True, exist_ok=True)

        written = {f"data.{fmt}"} | ({f"queries.{fmt}"} if queries is not None else set())
        for stale in (f"{kind}.{other}" for kind in ("data", "queries") for other in FORMATS):
            if stale not in written:
                (path / stale).unlink(missing_ok=True)
        _write_atomically(path / f"data.{fmt}", lambda tmp: _WRITERS[fmt](data, tmp))
        if queries is not None:
            _write_atomically(path / f"queries.{fmt}", lambda tmp: _WRITERS[fmt](queries, tmp))
        _write_atomically(path / SUCCESS_MARKER, lambda tmp: None)
        _sync_directory(path)
        return BatchInfo(id=batch_id, path=path, complete=True)


def write_stream(
    stream: Any,
    root: str | os.PathLike,
    *,
    target: str = "label",
    fmt: str = "parquet",
    feature_names: Sequence[str] | None = None,
) -> BatchStore:
    """Write every batch of a :class:`cara_mlflow.streams.Stream` as the store at ``root``.

    Batch ``t`` of the stream becomes batch ``t`` of the store: ``data.<fmt>`` holds the
    feature columns (``x1..xd``, or ``feature_names``) and the target column ``target`` with
    ``y``; ``queries.<fmt>`` holds the stream's queries, for ``-S`` and ``-D`` streams alike,
    so the store carries exactly the stream's query stream (the queries' labels are not
    written: they serve evaluation only).

    Raises
    ------
    BatchStoreError
        When a batch of the store already exists and is complete, or ``feature_names`` does not
        fit the stream (wrong count, duplicates, or the target among them).

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from cara_mlflow.streams import make_stream
    >>> tmp = tempfile.TemporaryDirectory()
    >>> stream = make_stream("covcon-d", n_batches=3, batch_size=40, seed=2)
    >>> store = write_stream(stream, tmp.name)
    >>> [info.id for info in store.list()]
    [0, 1, 2]
    >>> batch = store.read(2, target="label")
    >>> batch.features, batch.n_rows, batch.queries.shape
    (('x1', 'x2'), 40, (4, 2))
    >>> bool((batch.X == stream[2].X).all() and (batch.queries == stream[2].queries).all())
    True
    >>> tmp.cleanup()
    """
    d = stream.n_features
    names = tuple(f"x{j + 1}" for j in range(d)) if feature_names is None else tuple(
        map(str, feature_names)
    )
    if len(names) != d or len(set(names)) != d or target in names:
        raise BatchStoreError(
            f"feature_names {list(names)} do not fit stream {stream.name!r}: expected {d} "
            f"distinct names, none of them the target {target!r}"
        )
    store = BatchStore(root)
    for t, batch in enumerate(stream):
        data = pd.DataFrame(np.asarray(batch.X), columns=list(names))
        data[target] = np.asarray(batch.y)
        queries = pd.DataFrame(np.asarray(batch.queries), columns=list(names))
        store.write(t, data, queries=queries, fmt=fmt)
    return store


# --------------------------------------------------------------------------------------------
# Private helpers: the public methods above validate arguments, these assume them
# --------------------------------------------------------------------------------------------


def _checked_id(batch_id: Any) -> int:
    """``batch_id`` as an int; a bool, a non-integer or a negative number is an error."""
    if isinstance(batch_id, (bool, np.bool_)) or not isinstance(batch_id, (int, np.integer)):
        raise TypeError(f"a batch id must be an integer, got {batch_id!r}")
    if batch_id < 0:
        raise BatchStoreError(f"batch {batch_id}: a batch id is a non-negative integer")
    return int(batch_id)


def _checked_features(features: Sequence[str] | None, target: str) -> tuple[str, ...] | None:
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


def _batch_file(info: BatchInfo, kind: str, *, required: bool) -> Path | None:
    """The ``<kind>.<fmt>`` file of a batch: None if absent (an error if ``required``)."""
    found = [info.path / f"{kind}.{fmt}" for fmt in FORMATS]
    found = [p for p in found if p.is_file()]
    for p in found:
        if not _inside(p, info.path):
            raise BatchStoreError(
                f"batch {info.id}: {p.name} is a link to {p.resolve()}, outside the batch "
                f"directory {info.path}; expected a file inside it: copy the file in"
            )
    if len(found) > 1:
        raise BatchStoreError(
            f"batch {info.id} has both {' and '.join(p.name for p in found)} in {info.path}; "
            "remove all but one"
        )
    if not found:
        if required:
            raise BatchStoreError(
                f"batch {info.id} has no data file in {info.path}: expected "
                f"{' or '.join(f'{kind}.{fmt}' for fmt in FORMATS)}"
            )
        return None
    return found[0]


@contextmanager
def _reading(batch_id: int, path: Path) -> Iterator[None]:
    """Turn an error of a reader inside the block into a one-line :class:`BatchStoreError`."""
    try:
        yield
    except BatchStoreError:
        raise
    except _READ_ERRORS as error:
        detail = " ".join(str(error).split())[:200]
        raise BatchStoreError(
            f"batch {batch_id}: cannot read {path.name} ({type(error).__name__}: {detail}); "
            f"expected a valid {path.suffix[1:]} file: rewrite it"
        ) from error


class _Table(ABC):
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


class _ParquetTable(_Table):
    """A parquet file: columns, row count and (mostly) dtypes from its metadata."""

    streams_target = False  # the target is one column: read whole, with its pandas dtype

    def __init__(self, batch_id: int, path: Path) -> None:
        super().__init__(batch_id, path)
        with _reading(batch_id, path):
            import pyarrow.parquet as pq  # ImportError: no parquet engine, "cannot read"

            # pages are read through a small buffer, not whole column chunks up front
            self._file = pq.ParquetFile(
                path, buffer_size=_PARQUET_BUFFER_BYTES, pre_buffer=False
            )
            try:
                schema = self._file.schema_arrow
                index = (schema.pandas_metadata or {}).get("index_columns", ())
                index = {c for c in index if isinstance(c, str)}  # not a RangeIndex description
                self.columns = tuple(n for n in schema.names if n not in index)
                self.has_rows = self._file.metadata.num_rows > 0
                self._empty = schema.empty_table().to_pandas()
            except BaseException:
                self._file.close()
                raise

    def capacity(self) -> int:
        return int(self._file.metadata.num_rows)

    def passes(self, names: list[str]) -> list[list[str]]:
        # parquet is stored by column, so a pass reads only its columns; the reader holds a
        # page, and often a dictionary, per column read: a few columns at a time bound that
        k = _PARQUET_COLUMNS_PER_PASS
        return [names[i : i + k] for i in range(0, len(names), k)]

    def known_dtype(self, name: str) -> Any:
        dtype = self._empty[name].dtype
        # an arrow bool column is a bool column for pandas, or an object one if it has a null
        return None if dtype == np.dtype(bool) else dtype

    def chunks(self, names: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
        with _reading(self.batch_id, self.path):
            for batch in self._file.iter_batches(batch_size=chunk_rows, columns=names):
                yield batch.to_pandas(split_blocks=True)

    def whole_dtype(self, name: str, seen: list[Any]) -> Any:
        # a column's chunk dtypes differ only by nulls (int64/float64, bool/object): a
        # non-numeric chunk dtype is the whole column's
        return next((t for t in seen if not _is_number_dtype(t)), seen[0])

    def column(self, name: str) -> pd.Series:
        with _reading(self.batch_id, self.path):
            return pd.read_parquet(self.path, columns=[name])[name]

    def close(self) -> None:
        self._file.close()


class _CsvTable(_Table):
    """A csv file: columns from its header; dtypes known only once every chunk is parsed."""

    streams_target = True  # csv is parsed row by row: the target comes with the features

    def __init__(self, batch_id: int, path: Path) -> None:
        super().__init__(batch_id, path)
        with _reading(batch_id, path):
            head = pd.read_csv(path, nrows=1)
        self.columns = tuple(head.columns)
        self.has_rows = len(head) > 0

    def capacity(self) -> int:
        # one row a line; blank lines and quoted line breaks only make it larger
        with _reading(self.batch_id, self.path), open(self.path, "rb") as f:
            return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))

    def chunks(self, names: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
        with _reading(self.batch_id, self.path):
            with pd.read_csv(self.path, usecols=names, chunksize=chunk_rows) as reader:
                yield from reader

    def whole_dtype(self, name: str, seen: list[Any]) -> Any:
        if len(seen) == 1:
            return seen[0]
        if all(_is_real_dtype(t) for t in seen):  # integers in some chunks, floats in others
            return np.dtype(np.float64)
        # e.g. bools in one chunk, numbers in another: a whole-file read says text
        return self.column(name).dtype

    def column(self, name: str) -> pd.Series:
        with _reading(self.batch_id, self.path):
            return pd.read_csv(self.path, usecols=[name], low_memory=False)[name]


_TABLES: dict[str, Callable[[int, Path], _Table]] = {"parquet": _ParquetTable, "csv": _CsvTable}

_PARQUET_COLUMNS_PER_PASS = 8
"""Columns read per pass over a parquet file (see ``_ParquetTable.passes``)."""

_PARQUET_BUFFER_BYTES = 1 << 16
"""Read buffer per parquet column chunk. Without it (and with pre-buffering, pyarrow's default)
the reader loads every needed column chunk of a row group whole: the whole file, for a batch
written by pandas (one row group up to 2^20 rows)."""


@contextmanager
def _open_table(batch_id: int, path: Path) -> Iterator[_Table]:
    """The batch file ``path`` opened for streaming, with at least one row."""
    table = _TABLES[path.suffix[1:]](batch_id, path)
    try:
        if not table.has_rows:
            raise BatchStoreError(
                f"batch {batch_id}: {path.name} has no rows; expected at least one"
            )
        yield table
    finally:
        table.close()


def _read_table(
    table: _Table, features: tuple[str, ...], target: str | None, chunk_rows: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """``X`` (read-only, C-ordered float64, checked) and the checked target of ``table``.

    The chunks' features go straight into one preallocated array; per column, the dtypes seen
    and the count of NaN/inf values are kept over the whole file, and the checks run once the
    file is read, in the order of a whole-file read. Columns known to be missing or not
    numeric from the metadata alone fail before any row is read.
    """
    file, batch_id, d = table.path.name, table.batch_id, len(features)
    for name in features:  # what is certain before reading, in the order of the checks
        if name not in table.columns:
            raise _missing_feature(table, name, features)
        dtype = table.known_dtype(name)
        if dtype is None:
            break
        if not _is_number_dtype(dtype):
            raise _not_numeric(table, name, dtype)

    stream_target = target is not None and table.streams_target
    names = [f for f in features if f in table.columns] + ([target] if stream_target else [])
    index = {name: j for j, name in enumerate(features)}
    seen: dict[str, list[Any]] = {name: [] for name in names}
    X = np.empty((table.capacity(), d)) if len(names) - stream_target == d else None
    bad = np.zeros(d, dtype=np.int64)
    target_parts: list[pd.Series] = []
    n = 0
    for group in table.passes(names):
        n = 0
        for chunk in table.chunks(group, chunk_rows):
            m = len(chunk)
            columns = {name: chunk[name] for name in group}
            del chunk
            for name, column in columns.items():
                if column.dtype not in seen[name]:
                    seen[name].append(column.dtype)
            if stream_target and target in columns:
                target_parts.append(columns.pop(target).copy())  # no view keeps the chunk
            if X is not None and all(_is_number_dtype(c.dtype) for c in columns.values()):
                if n + m > X.shape[0]:  # an estimated capacity was short: grow in place
                    X.resize((max(n + m, 2 * X.shape[0]), d), refcheck=False)
                for name, column in columns.items():  # a loop over columns, never over rows
                    values = column.to_numpy(dtype=np.float64, na_value=np.nan)
                    bad[index[name]] += m - np.count_nonzero(np.isfinite(values))
                    X[n : n + m, index[name]] = values
            else:
                X = None  # a feature is missing or not numeric: the read fails, types say how
            n += m
            del columns

    for name in features:
        if name not in table.columns:
            raise _missing_feature(table, name, features)
        dtype = table.whole_dtype(name, seen[name])
        if not _is_number_dtype(dtype):
            raise _not_numeric(table, name, dtype)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise BatchStoreError(
            f"batch {batch_id}: column {features[j]!r} has {bad[j]} NaN/inf values in {file}; "
            "expected finite numbers"
        )
    assert X is not None, "every feature is numeric, so every chunk was copied"
    if X.shape[0] != n:
        X.resize((n, d), refcheck=False)
    X.setflags(write=False)

    if target is None:
        return X, None
    if not stream_target:
        column = table.column(target)
    elif len(seen[target]) == 1:
        column = target_parts[0] if len(target_parts) == 1 else pd.concat(
            target_parts, ignore_index=True
        )
    else:  # the chunks disagree on the type: the whole column decides it
        column = table.column(target)
    del target_parts
    return X, _target_vector(column, target, batch_id, file)


def _missing_feature(table: _Table, name: str, features: tuple[str, ...]) -> BatchStoreError:
    return BatchStoreError(
        f"batch {table.batch_id}: {table.path.name} has no column {name!r} (a feature); "
        f"columns are {', '.join(map(str, table.columns))}; expected every feature: "
        f"{', '.join(features)}"
    )


def _not_numeric(table: _Table, name: str, dtype: Any) -> BatchStoreError:
    return BatchStoreError(
        f"batch {table.batch_id}: column {name!r} has type {dtype}; expected numbers "
        f"(in {table.path.name})"
    )


def _is_real_dtype(dtype: Any) -> bool:
    """Integer or real floating dtype (not bool)."""
    api = pd.api.types
    return bool(
        (api.is_integer_dtype(dtype) or api.is_float_dtype(dtype)) and not api.is_bool_dtype(dtype)
    )


def _is_number_dtype(dtype: Any) -> bool:
    """Bool, integer or real floating dtype (numpy, nullable or pyarrow-backed)."""
    api = pd.api.types
    return bool(
        api.is_bool_dtype(dtype) or api.is_integer_dtype(dtype) or api.is_float_dtype(dtype)
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
    if _is_number_dtype(dtype):  # nullable / pyarrow-backed numbers as their numpy dtype
        y = column.to_numpy(dtype=getattr(dtype, "numpy_dtype", dtype))
    else:
        y = column.to_numpy()
    y.setflags(write=False)
    return y


def _write_atomically(path: Path, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, sync it, rename it to ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes 0600; a batch file gets the mode any new file would (0666 & ~umask),
        # so readers such as an MLflow server's user see it and it is never world-writable
        # unless the umask says so.
        os.chmod(tmp, 0o666 & ~_current_umask())
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    """The process umask (read by setting and restoring it; POSIX has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` resolves (symlinks followed) to ``root`` or below it."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _sync_directory(path: Path) -> None:
    """Make the renames into ``path`` durable (POSIX; a no-op where directories can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
