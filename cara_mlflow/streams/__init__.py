"""Data streams of the CARA paper: batches of data and the queries answered during them.

``STREAM_NAMES`` lists every name a user may type; ``make_stream`` turns a name into a
:class:`Stream`. The synthetic streams (paper §7.1, §7.3) live in :mod:`.synthetic`; the
real-data streams (ELECTRICITY, COVERTYPE, AIRLINES, paper §7.2) in :mod:`.real`: they read a
local data file, which the package does not ship (see :data:`DATA_SOURCES`; the shipped
AIRLINES file is a substitute, :data:`AIRLINES_SUBSTITUTE_NOTE`).

Examples
--------
>>> STREAM_NAMES[:2], STREAM_NAMES[-3:]
(('gauss-d', 'gauss-s'), ('electricity', 'covertype', 'airlines'))
>>> s = make_stream("circle-s", n_batches=2, batch_size=100, seed=1)
>>> s.name, len(s), s[0].queries.shape
('circle-s', 2, (100, 2))
>>> make_stream("covtype")
Traceback (most recent call last):
...
cara_mlflow.errors.InputError: unknown stream 'covtype': expected one of gauss-d, gauss-s, circle-d, ...
"""

from __future__ import annotations

from typing import Any, Callable

from cara_mlflow.batch import Batch
from cara_mlflow.streams.real import (
    AIRLINES_SUBSTITUTE_NOTE,
    DATA_SOURCES,
    REAL_STREAMS,
    airlines,
    covertype,
    electricity,
    is_substitute,
)
from cara_mlflow.streams.synthetic import Stream, _fixed_queries, circle, covcon, gauss

from ..errors import InputError

__all__ = [
    "Batch",
    "Stream",
    "gauss",
    "circle",
    "covcon",
    "electricity",
    "covertype",
    "airlines",
    "is_substitute",
    "SYNTHETIC_STREAMS",
    "REAL_STREAMS",
    "DATA_SOURCES",
    "AIRLINES_SUBSTITUTE_NOTE",
    "STREAM_NAMES",
    "make_stream",
]

SYNTHETIC_STREAMS: dict[str, Callable[..., Stream]] = {
    "gauss-d": _fixed_queries(gauss, "data"),
    "gauss-s": _fixed_queries(gauss, "static"),
    "circle-d": _fixed_queries(circle, "data"),
    "circle-s": _fixed_queries(circle, "static"),
    "covcon-d": _fixed_queries(covcon, "data"),
    "covcon-s": _fixed_queries(covcon, "static"),
}
"""Name -> factory taking the keyword arguments of :func:`gauss` except ``queries``."""

STREAM_NAMES: tuple[str, ...] = (*SYNTHETIC_STREAMS, *REAL_STREAMS)
"""Every stream name users may type, in display order."""


def make_stream(
    name: str,
    *,
    data=None,
    n_batches: int = 100,
    batch_size: int = 1000,
    seed: int = 0,
    **kwargs: Any,
) -> Stream:
    """The stream called ``name`` (one of :data:`STREAM_NAMES`).

    For the synthetic streams, ``kwargs`` go to the factory: ``query_fraction`` and
    ``n_static_queries`` (see :func:`gauss`); the query stream is fixed by the name's suffix
    (``-d``/``-s``); ``data`` must be ``None``.

    For the real-data streams (:data:`REAL_STREAMS`), ``data`` is the path of the data file
    (the CLI's ``--data``), required; ``batch_size`` is ignored, since a real stream's batches
    are its file's rows split into ``n_batches``; ``kwargs`` may hold ``query_fraction``
    (see :func:`electricity`). Their queries are always sampled from the data (``-D``).

    Raises
    ------
    InputError
        (a ValueError) For an unknown name, a real-data stream without ``data`` (or a synthetic
        one with it), a missing or malformed data file, and invalid arguments.

    Examples
    --------
    >>> make_stream("gauss-d", n_batches=3, batch_size=50)
    Stream(name='gauss-d', n_batches=3, n_features=2, seed=0)
    >>> make_stream("electricity")
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: stream 'electricity' needs a data file: not available yet in this version of
    the package, which ships none; get 'Elec2 / OpenML 151 (elecNormNew)' and pass its path with --data
    """
    if name in SYNTHETIC_STREAMS:
        if data is not None:
            raise InputError(f"stream {name!r} is synthetic and reads no data file (--data)")
        return SYNTHETIC_STREAMS[name](
            n_batches=n_batches, batch_size=batch_size, seed=seed, **kwargs
        )
    if name in REAL_STREAMS:
        if data is None:
            raise InputError(
                f"stream {name!r} needs a data file: not available yet in this version of the "
                f"package, which ships none; get {DATA_SOURCES[name]!r} and pass its path "
                f"with --data"
            )
        return REAL_STREAMS[name](data, n_batches=n_batches, seed=seed, **kwargs)
    raise InputError(f"unknown stream {name!r}: expected one of {', '.join(STREAM_NAMES)}")
