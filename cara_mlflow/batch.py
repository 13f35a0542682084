"""One batch of data and the queries the model answered during it: the unit of a stream and a store.

A :class:`Batch` is what :func:`cara_mlflow.streams.make_stream` generates and what
:meth:`cara_mlflow.store.BatchStore.read` reads; :class:`cara_mlflow.streams.Stream` holds either
kind, so a store's batches are compared (``compare --store``) as they are read. The arrays and
``query_labels`` / ``query_index`` mean the same on both sides; a batch read from a store also
knows where it came from (``id``, ``features``, ``target``, ``data_path``, ``has_query_file``),
which a generated batch leaves at ``None`` / ``False``.

This module is pure numpy: the store and the streams both import it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["Batch", "QueryBatch", "RowsOnDemand"]


class RowsOnDemand:
    """Rows of a feature frame in a feature space, transformed only when indexed: ``view[rows]``
    is ``space.transform(frame.iloc[rows])``, read-only (``rows``: indices or a slice; ``index``
    restricts the view to those rows of the frame). What a row sample of a large batch reads in
    place of its whole ``X``: the transform is row by row, so the rows equal those of ``X``.

    >>> import pandas as pd
    >>> from cara_mlflow.features import FeatureSpace
    >>> f = pd.DataFrame({"a": [0.0, 2.0, 4.0]})
    >>> view = RowsOnDemand(f, FeatureSpace.fit(f, {"a": "numeric"}), index=np.array([0, 2]))
    >>> view.shape, view[np.array([1])].tolist(), view[:].ravel().tolist()
    ((2, 1), [[1.224744871391589]], [-1.224744871391589, 1.224744871391589])
    """

    ndim = 2

    def __init__(self, frame, space, index: np.ndarray | None = None) -> None:
        self.frame, self.space, self.index = frame, space, index

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.frame) if self.index is None else len(self.index), len(self.space.columns))

    def __getitem__(self, rows) -> np.ndarray:
        if isinstance(rows, tuple) or np.ndim(rows) == 0 and not isinstance(rows, slice):
            raise TypeError(f"RowsOnDemand takes an array of row indices or a slice, not {rows!r}")
        picked = rows if self.index is None else self.index[rows]
        out = self.space.transform(self.frame.iloc[picked])
        out.setflags(write=False)
        return out


def _stored_X(batch):
    """The coordinates a batch holds (None: not computed yet); under "X" in a batch pickled
    before :class:`_Coordinates`."""
    return batch.__dict__.get("_X", batch.__dict__.get("X"))


class _Coordinates:
    """``Batch.X`` (a descriptor-typed dataclass field): the array given, or, given ``None`` with a
    ``frame`` and a ``space``, the frame's coordinates in the space computed on first use (a step
    that samples rows of a large batch transforms those rows only: :meth:`Batch.coordinates`)."""

    def __get__(self, batch, owner=None):
        if batch is None:
            raise AttributeError("X has no default")   # the dataclass: a required field
        X = _stored_X(batch)
        if X is None:
            X = batch.space.transform(batch.frame)
            X.setflags(write=False)
            batch.__dict__["_X"] = X
        return X

    def __set__(self, batch, X) -> None:
        batch.__dict__["_X"] = X


@dataclass(frozen=True, eq=False, repr=False)
class Batch:
    """One batch: its data and the queries the model answered during it.

    Attributes
    ----------
    X : ndarray of shape (n, d), float64
        The batch's data points; finite for a batch read from a store, in ``features`` order.
        A store's batch with a queries file computes them from ``frame`` on first use (given
        ``X=None``): :meth:`coordinates` reads a few rows without them.
    y : ndarray of shape (n,)
        Their labels: in {0, 1} for a generated stream; the target column as read (integers,
        strings, bools, ...) and without missing value for a store's batch.
    queries : ndarray of shape (m, d), float64
        The query points ``Q_t``. A store's batch without a queries file: ``X`` itself.
    query_labels : ndarray of shape (m,), or None
        The true labels of the queries: for evaluation (query accuracy) only, never for the
        staleness cost. ``None`` when they are unknown (a store's queries file without the
        target column): the query accuracy is then NaN.
    query_index : ndarray of shape (m,), int64, or None
        For queries drawn from the data (``-D`` streams, a store's batch without a queries
        file): their sorted row indices into ``X``, so ``queries == X[query_index]``. ``None``
        when the queries are not rows of ``X``.
    id : int or None
        The batch id in its store; ``None`` for a generated batch.
    features : tuple of str, or None
        The feature column names, in the order of the columns of ``X`` and ``queries``.
    target : str or None
        The target column name.
    data_path : Path or None
        The data file read (for MLflow dataset lineage).
    has_query_file : bool
        Whether the queries came from a store's queries file.
    frame, query_frame : pandas.DataFrame or None
        A store's batch: the feature columns of the data and of the queries as read, original
        dtypes (what models are called with); ``X`` and ``queries`` are their coordinates in
        ``space`` (a :class:`~cara_mlflow.features.FeatureSpace`), the kernel's space.
        ``None`` for a generated batch, whose models take ``X``.

    Only shapes are checked here; the stream factories and the store's reader guarantee the
    dtypes. A batch read from a store shows its id and columns, a generated one its shape.

    Examples
    --------
    >>> import numpy as np
    >>> b = Batch(X=np.zeros((4, 2)), y=np.array([0, 1, 1, 0]),
    ...           queries=np.zeros((2, 2)), query_labels=np.array([0, 1]), query_index=None)
    >>> b, b.n_rows, b.n_queries, b.id
    (Batch(n=4, d=2, m=2, query_index=None), 4, 2, None)
    >>> X = np.zeros((3, 2))
    >>> Batch(X=X, y=np.array(["a", "b", "a"]), queries=X, query_labels=None, query_index=np.arange(3),
    ...       id=7, features=("x1", "x2"), target="label")
    Batch(id=7, n_rows=3, n_queries=3, features=('x1', 'x2'), target='label', has_query_file=False)
    >>> Batch(X=np.zeros((4, 2)), y=np.zeros(3), queries=np.zeros((2, 2)),
    ...       query_labels=np.zeros(2), query_index=None)
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: y must have shape (4,) to match X, got (3,)
    """

    X: np.ndarray = _Coordinates()
    y: np.ndarray
    queries: np.ndarray
    query_labels: np.ndarray | None = None
    query_index: np.ndarray | None = None
    id: int | None = None
    features: tuple[str, ...] | None = None
    target: str | None = None
    data_path: Path | None = None
    has_query_file: bool = False
    frame: Any = None
    query_frame: Any = None
    space: Any = None

    def __post_init__(self) -> None:
        X, queries = _stored_X(self), self.queries
        if X is None and (self.frame is None or self.space is None):
            raise InputError("X may be None (computed on first use) only with a frame and a space")
        X = RowsOnDemand(self.frame, self.space) if X is None else X
        if getattr(X, "ndim", None) != 2:
            raise InputError(f"X must be a 2-D array (n, d), got shape {np.shape(X)}")
        n, d = X.shape
        if np.shape(self.y) != (n,):
            raise InputError(f"y must have shape ({n},) to match X, got {np.shape(self.y)}")
        if getattr(queries, "ndim", None) != 2 or queries.shape[1] != d:
            raise InputError(
                f"queries must be a 2-D array (m, {d}) to match X, got shape {np.shape(queries)}"
            )
        m = queries.shape[0]
        if self.query_labels is not None and np.shape(self.query_labels) != (m,):
            raise InputError(
                f"query_labels must have shape ({m},) to match queries, "
                f"got {np.shape(self.query_labels)}"
            )
        if self.query_index is not None and np.shape(self.query_index) != (m,):
            raise InputError(
                f"query_index must be None or have shape ({m},) to match queries, "
                f"got {np.shape(self.query_index)}"
            )
        if self.features is not None and self.frame is None and len(self.features) != d:
            raise InputError(f"features must name the {d} columns of X, got {self.features!r}")

    @property
    def model_input(self):
        """What a model is called with: the feature frame of a store's batch, else ``X``."""
        return self.X if self.frame is None else self.frame

    @property
    def query_input(self):
        """What a model answers the queries from: the queries' frame, else ``queries``."""
        return self.queries if self.query_frame is None else self.query_frame

    def in_space(self, space) -> "Batch":
        """The same batch with ``X`` and ``queries`` in ``space`` (a store's batch only).

        >>> import pandas as pd
        >>> from cara_mlflow.features import FeatureSpace
        >>> f = pd.DataFrame({"a": [0.0, 2.0]})
        >>> b = Batch(X=f.to_numpy(), y=np.array([0, 1]), queries=f.to_numpy(), frame=f, query_frame=f)
        >>> b.in_space(FeatureSpace.fit(f, {"a": "numeric"})).X.ravel().tolist()
        [-1.0, 1.0]
        """
        X = space.transform(self.frame)
        queries = X if self.query_frame is self.frame else space.transform(self.query_frame)
        for array in (X, queries):
            array.setflags(write=False)
        return replace(self, X=X, queries=queries, space=space)

    def coordinates(self, index: np.ndarray | None = None):
        """The rows of ``X`` (those in ``index``, default all) for a reader of a few of them:
        ``X`` (or ``X[index]``) once computed, else a :class:`RowsOnDemand` that transforms only
        the rows it is asked for. Either way ``.shape`` and ``[rows]`` give the same rows.

        >>> import pandas as pd
        >>> from cara_mlflow.features import FeatureSpace
        >>> f = pd.DataFrame({"a": [0.0, 2.0]})
        >>> b = Batch(X=None, y=np.array([0, 1]), queries=np.zeros((1, 1)), frame=f,
        ...           space=FeatureSpace.fit(f, {"a": "numeric"}))
        >>> type(b.coordinates()).__name__, b.coordinates()[np.array([1])].tolist(), b.n_rows
        ('RowsOnDemand', [[1.0]], 2)
        >>> b.X.tolist(), type(b.coordinates()).__name__      # computed once asked for
        ([[-1.0], [1.0]], 'ndarray')
        """
        X = _stored_X(self)
        if X is None:
            return RowsOnDemand(self.frame, self.space, index)
        return X if index is None else X[index]

    @property
    def n_rows(self) -> int:
        """The number of data points ``n``."""
        X = _stored_X(self)
        return len(self.frame) if X is None else int(X.shape[0])

    @property
    def n_queries(self) -> int:
        """The number of queries ``m``."""
        return int(self.queries.shape[0])

    def __repr__(self) -> str:
        if self.id is not None:
            return (
                f"Batch(id={self.id}, n_rows={self.n_rows}, n_queries={self.n_queries}, "
                f"features={self.features!r}, target={self.target!r}, "
                f"has_query_file={self.has_query_file})"
            )
        n, d = self.coordinates().shape
        index = "None" if self.query_index is None else "rows of X"
        return f"Batch(n={n}, d={d}, m={self.queries.shape[0]}, query_index={index})"


@dataclass(frozen=True, eq=False, repr=False)
class QueryBatch:
    """A batch whose queries are complete and whose labels are not in yet (``_QUERIES``).

    ``queries`` are the queries' coordinates in ``space`` (the policy's kernel space) and
    ``query_frame`` their feature columns as read (what models answer from).

    >>> import pandas as pd
    >>> f = pd.DataFrame({"a": [0.0, 2.0]})
    >>> QueryBatch(id=4, queries=f.to_numpy(), query_frame=f)
    QueryBatch(id=4, n_queries=2)
    """

    id: int
    queries: np.ndarray
    query_frame: Any
    space: Any = None
    query_path: Path | None = None

    @property
    def n_queries(self) -> int:
        return int(self.queries.shape[0])

    def __repr__(self) -> str:
        return f"QueryBatch(id={self.id}, n_queries={self.n_queries})"
