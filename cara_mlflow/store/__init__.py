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
expected. :meth:`BatchStore.read` returns a :class:`~cara_mlflow.batch.Batch`, the type the
streams generate, so a store's batches are a stream's batches.

:class:`BatchStore` is the public face; each responsibility is a module of this package:

* :mod:`.layout`: the directory layout, batch ids, listing, completeness, links out of the store;
* :mod:`.tables`: a parquet or csv file opened for streaming, chunk by chunk;
* :mod:`.reading`: reading and validating a batch: a frame of its features, their kernel coordinates;
* :mod:`.writing`: the atomic writer (temporary file, fsync, rename, ``_SUCCESS`` last);
* :mod:`.window`: :func:`read_window`, a window of batches in the kernel space fitted on it;
* :mod:`.export`: :func:`write_stream`, a whole stream written as a store;
* :mod:`.errors`: :class:`BatchStoreError` and :class:`BatchStoreWarning`.

This package is pure pandas/numpy/pyarrow: it never imports mlflow or click.

Examples
--------
>>> import tempfile
>>> import pandas as pd
>>> tmp = tempfile.TemporaryDirectory()
>>> store = BatchStore(tmp.name)
>>> store.exists()
False
>>> store.write(3, pd.DataFrame({"x1": [0.5, 1.5], "x2": [1, 2], "day": ["Tue", "Mon"], "label": ["a", "b"]}))
BatchInfo(id=3, path=PosixPath('.../batches/3'), complete=True)
>>> [info.id for info in store.list()], store.next_after(None).id, store.next_after(3)
([3], 3, None)
>>> batch = store.read(3, target="label")
>>> batch
Batch(id=3, n_rows=2, n_queries=2, features=('x1', 'x2', 'day'), target='label', has_query_file=False)
>>> batch.frame            # the features as read, for the models
    x1  x2  day
0  0.5   1  Tue
1  1.5   2  Mon
>>> batch.space.columns    # the kernel's coordinates: text one-hot
('x1', 'x2', 'day=Mon', 'day=Tue')
>>> batch.X, batch.y
(array([[0.5, 1. , 0. , 1. ], [1.5, 2. , 1. , 0. ]]), array(['a', 'b'], dtype=object))
>>> store.read(3, target="y")
Traceback (most recent call last):
...
cara_mlflow.store.BatchStoreError: batch 3: data.parquet has no column 'y' (the target); ...
>>> tmp.cleanup()
"""

from __future__ import annotations

import os
from typing import Sequence

import pandas as pd

from ..batch import Batch, QueryBatch
from ..features import FeatureSpace
from . import layout, reading, tables, writing
from .errors import BatchStoreError, BatchStoreWarning
from .export import write_stream
from .layout import BATCHES_DIR, FORMATS, QUERIES_MARKER, SUCCESS_MARKER, BatchInfo
from .location import ObjectPath, is_remote, store_root
from .window import read_window, window_ids

__all__ = [
    "BatchStoreError",
    "BatchStoreWarning",
    "BatchInfo",
    "Batch",
    "BatchStore",
    "write_stream",
    "read_window",
    "window_ids",
    "FORMATS",
    "SUCCESS_MARKER",
    "QUERIES_MARKER",
    "QueryBatch",
    "CHUNK_ROWS",
    "ObjectPath",
]

CHUNK_ROWS = 65_536
"""Rows per chunk when :meth:`BatchStore.read` streams a file.

Beyond the arrays it returns, a read holds one chunk of the columns of a pass (and a copy of
one column): a parquet file is read eight columns per pass, so pyarrow also holds those eight
columns' current pages; a csv file in one pass. Looked up here at each read, so a test or a
benchmark can lower it (``cara_mlflow.store.CHUNK_ROWS = ...``)."""


class BatchStore:
    """The batch store rooted at ``root`` (see the module docstring for the layout).

    The constructor only records the (absolute) path: nothing is created or read until a
    method is called, and every call reads the directory afresh, so a store object sees the
    batches a producer adds later.

    Parameters
    ----------
    root : str or PathLike
        The store directory, the one holding ``batches/``: a path, or a ``file://``, ``s3://``,
        ``gs://`` or ``abfs://`` URI (:mod:`.location`; an object store is read only: its
        producer writes the batches).
    single_scheduler : bool
        The user's word that one scheduler alone runs cara-mlflow on this store: an object store
        without conditional writes is then used without a lease (:func:`cara_mlflow.lock.store_guard`).

    Attributes
    ----------
    root : Path or ObjectPath
        ``root``, resolved to an absolute path (or the object store's folder).
    batches_dir : Path or ObjectPath
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

    def __init__(self, root: str | os.PathLike, *, single_scheduler: bool = False) -> None:
        self.root = store_root(root)
        self.single_scheduler = single_scheduler
        self.batches_dir = self.root / BATCHES_DIR

    @property
    def remote(self) -> bool:
        """Whether the store is on an object store (``s3://``, ``gs://``, ``abfs://``)."""
        return is_remote(self.root)

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
        return layout.list_batches(self.root, self.batches_dir, stacklevel=3)

    def info(self, batch_id: int) -> BatchInfo:
        """The :class:`BatchInfo` of batch ``batch_id``.

        Raises
        ------
        BatchStoreError
            When the batch does not exist (or the store is missing or has duplicate ids).
        """
        batch_id = layout.checked_id(batch_id)
        return layout.find_batch(self.list(), batch_id, self.batches_dir)

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

    def columns(self, batch_id: int) -> tuple[str, ...]:
        """The columns of batch ``batch_id``'s data file, in file order (no row is read)."""
        info = self.info(batch_id)
        path = layout.batch_file(info, "data", required=True)
        with tables.open_table(info.id, path) as table:
            return tuple(str(c) for c in table.columns)

    def read(
        self, batch_id: int, *, target: str, features: Sequence[str] | None = None,
        space: FeatureSpace | None = None,
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
        space : FeatureSpace, optional
            The kernel space fixed at tune: its features and their kinds are read (``features``
            is then ignored), and ``X`` / ``queries`` are the rows' coordinates in it. Without
            it, each column's kind is its own and ``X`` is this batch's ``raw`` space.

        Returns
        -------
        Batch
            ``queries`` is read from the queries file when there is one (it must hold every
            feature; other columns are ignored; its target column, if any, gives
            ``query_labels``), else it is ``X`` (and ``query_index`` every row).

        Each file is streamed :data:`CHUNK_ROWS` rows at a time, only its feature and target
        columns (:mod:`.reading`); errors are those of a whole-file read, the first failing
        check in the order listed below (a file that cannot be parsed past its header may
        report a missing column instead of ``cannot read``).

        Raises
        ------
        BatchStoreError
            One line naming the batch, the file and column, and what is expected, when the
            batch does not exist, is incomplete, has no data file or two (``data.parquet`` and
            ``data.csv``), a file cannot be read or has no rows, the target or a feature is
            missing, a feature is not numbers, booleans or text (or not of its kind at tune),
            a numeric feature has NaN/inf values or the target
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
        >>> dict(batch.frame.dtypes), dict(batch.query_frame.dtypes)   # the queries' b: numbers
        ({'b': dtype('bool'), 'a': dtype('float64')}, {'b': dtype('int64'), 'a': dtype('float64')})
        >>> store.read(0, target="t", features=["a", "c"])
        Traceback (most recent call last):
        ...
        cara_mlflow.store.BatchStoreError: batch 0: data.csv has no column 'c' (a feature); ...
        >>> tmp.cleanup()
        """
        checked = reading.checked_features(space.features if space else features, target)
        return reading.read_batch(self.info(batch_id), target=target, features=checked, chunk_rows=CHUNK_ROWS,
                                  space=space)

    def read_queries(self, batch_id: int, *, space: FeatureSpace) -> QueryBatch:
        """The queries of batch ``batch_id`` before its labels: it holds ``_QUERIES`` (or is
        complete) and a queries file with every feature of ``space``.

        Examples
        --------
        >>> import tempfile
        >>> import pandas as pd
        >>> from cara_mlflow.features import FeatureSpace
        >>> tmp = tempfile.TemporaryDirectory()
        >>> store = BatchStore(tmp.name)
        >>> space = FeatureSpace.fit(pd.DataFrame({"x": [0.0, 1.0]}), {"x": "numeric"}, scaling="raw")
        >>> _ = store.write_queries(6, pd.DataFrame({"x": [0.5, 2.0]}))
        >>> info = store.info(6)
        >>> info.complete, info.queries_ready
        (False, True)
        >>> store.read_queries(6, space=space).queries.ravel().tolist()
        [0.5, 2.0]
        >>> tmp.cleanup()
        """
        return reading.read_queries(self.info(batch_id), space=space, chunk_rows=CHUNK_ROWS)

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
        renamed into place, ``_SUCCESS`` last (:mod:`.writing`): a reader sees either no file
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
        batch_id = layout.checked_id(batch_id)
        self._check_local_write(batch_id)
        writing.check_arguments(batch_id, data, queries, fmt)
        existing = next((i for i in self.list() if i.id == batch_id), None) if self.exists() else None
        writing.check_writable(batch_id, existing)
        path = existing.path if existing is not None else self.batches_dir / str(batch_id)
        keep = queries is None and existing is not None and existing.queries_ready   # its labels land
        writing.write_files(path, data, queries, fmt, keep_queries=keep)
        return BatchInfo(id=batch_id, path=path, complete=True)

    def write_queries(self, batch_id: int, queries: pd.DataFrame, *, fmt: str = "parquet") -> BatchInfo:
        """Write batch ``batch_id``'s queries before its labels: ``queries.<fmt>``, then ``_QUERIES``.

        The labels follow with :meth:`write` (data only: the queries written here are kept), which
        writes ``_SUCCESS`` last. A complete batch is refused, as :meth:`write` refuses it.
        """
        batch_id = layout.checked_id(batch_id)
        self._check_local_write(batch_id)
        writing.check_arguments(batch_id, None, queries, fmt)
        existing = next((i for i in self.list() if i.id == batch_id), None) if self.exists() else None
        writing.check_writable(batch_id, existing)
        path = existing.path if existing is not None else self.batches_dir / str(batch_id)
        writing.write_queries_first(path, queries, fmt)
        return BatchInfo(id=batch_id, path=path, complete=False)

    def _check_local_write(self, batch_id: int) -> None:
        if self.remote:
            raise BatchStoreError(
                f"batch {batch_id}: {self.root} is on an object store, which cara-mlflow only reads; "
                "write the batch with your producer (Spark, Dask, pyarrow, `aws s3 cp`), _SUCCESS last"
            )
