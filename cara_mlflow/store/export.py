"""A whole stream written as a batch store (``cara-mlflow make-stream``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from .errors import BatchStoreError

if TYPE_CHECKING:
    from . import BatchStore

__all__ = ["write_stream"]


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
    from . import BatchStore  # the package's facade, which imports this module

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
