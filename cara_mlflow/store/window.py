"""A window of batches read together: the features chosen and their kinds fixed on the first
batch, and the kernel space fitted on the whole window (what ``tune`` and ``compare --store``
measure in)."""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from ..batch import Batch
from ..errors import InputError
from ..features import FeatureSpace, infer_kinds, select_features

__all__ = ["read_window", "window_ids"]


def read_window(store, ids: Sequence[int], *, target: str, features: Sequence[str] | None = None,
                exclude: Sequence[str] = ()) -> tuple[list[Batch], FeatureSpace]:
    """The batches ``ids`` of ``store`` in the kernel space fitted on them, and that space.

    The features are ``features``, else every column of the first batch but the target, minus
    ``exclude``; their kinds are the first batch's, and every later batch is checked against them.

    >>> import tempfile
    >>> from cara_mlflow.store import BatchStore
    >>> tmp = tempfile.TemporaryDirectory()
    >>> store = BatchStore(tmp.name)
    >>> for t in range(2):
    ...     _ = store.write(t, pd.DataFrame({"id": [1, 2], "x": [0.0, 2.0 * t], "day": ["Mon", "Sun"],
    ...                                      "label": [0, 1]}))
    >>> batches, space = read_window(store, [0, 1], target="label", exclude=["id"])
    >>> space.features, space.kinds
    (('x', 'day'), ('numeric', 'categorical'))
    >>> batches[1].X.round(3).tolist()
    [[-0.577, 0.707, 0.0], [1.732, 0.0, 0.707]]
    >>> tmp.cleanup()
    """
    chosen = select_features(store.columns(ids[0]), target, features, exclude)
    first = store.read(ids[0], target=target, features=chosen)
    kinds = infer_kinds(first.frame, chosen)
    own = FeatureSpace.fit(first.frame, kinds, scaling="raw")      # checks the later batches' kinds
    batches = [first] + [store.read(i, target=target, space=own) for i in ids[1:]]
    space = FeatureSpace.fit(pd.concat([b.frame for b in batches], ignore_index=True), kinds)
    return [b.in_space(space) for b in batches], space


def window_ids(store, window: tuple[int, int], *, minimum: int = 2) -> list[int]:
    """The ids of the complete batches whose id lies in the half-open ``window``, in order; ids may
    have gaps (dates as ids: ``20261031``, ``20261101``). At least ``minimum`` are required (2 to
    tune a policy; 1 for one that needs no tuning).

    >>> import tempfile
    >>> from cara_mlflow.store import BatchStore
    >>> tmp = tempfile.TemporaryDirectory()
    >>> store = BatchStore(tmp.name)
    >>> for day in (20261030, 20261031, 20261102):
    ...     _ = store.write(day, pd.DataFrame({"x": [0.0, 1.0], "label": [0, 1]}))
    >>> window_ids(store, (20261030, 20261102))
    [20261030, 20261031]
    >>> window_ids(store, (20261031, 20261101))
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: offline: 1 complete batch has an id in 20261031:20261101 ...
    >>> tmp.cleanup()
    """
    start, stop = window
    ids = [info.id for info in store.list() if start <= info.id < stop and info.complete]
    if len(ids) < minimum:
        count = f"{len(ids)} complete batch{' has' if len(ids) == 1 else 'es have'}"
        raise InputError(f"offline: {count} an id in {start}:{stop} in {store.batches_dir}; expected at least "
                         f"{minimum} (a batch is complete once its _SUCCESS is written)")
    return ids
