"""Data streams of the CARA paper: batches of data and the queries answered during them.

``STREAM_NAMES`` lists every name a user may type; ``make_stream`` turns a name into a
:class:`Stream`. The synthetic streams (paper §7.1, §7.3) live in :mod:`.synthetic`; the
real-data streams (ELECTRICITY, COVERTYPE, AIRLINES, paper §7.2) need data files and are not
available yet in this version.

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
ValueError: unknown stream 'covtype': expected one of gauss-d, gauss-s, circle-d, ...
"""

from __future__ import annotations

from typing import Any, Callable

from cara_mlflow.streams.synthetic import Batch, Stream, _fixed_queries, circle, covcon, gauss

__all__ = [
    "Batch",
    "Stream",
    "gauss",
    "circle",
    "covcon",
    "SYNTHETIC_STREAMS",
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

_REAL_DATA_STREAMS = ("electricity", "covertype", "airlines")

STREAM_NAMES: tuple[str, ...] = (*SYNTHETIC_STREAMS, *_REAL_DATA_STREAMS)
"""Every stream name users may type, in display order."""


def make_stream(
    name: str, *, n_batches: int = 100, batch_size: int = 1000, seed: int = 0, **kwargs: Any
) -> Stream:
    """The stream called ``name`` (one of :data:`STREAM_NAMES`).

    ``kwargs`` go to the factory: ``query_fraction`` and ``n_static_queries`` for the synthetic
    streams (see :func:`gauss`); the query stream is fixed by the name's suffix (``-d``/``-s``).

    Raises
    ------
    ValueError
        For an unknown name, for the real-data streams (not available yet in this version) and
        for invalid arguments.

    Examples
    --------
    >>> make_stream("gauss-d", n_batches=3, batch_size=50)
    Stream(name='gauss-d', n_batches=3, n_features=2, seed=0)
    >>> make_stream("electricity")
    Traceback (most recent call last):
    ...
    ValueError: stream 'electricity' needs a data file: not available yet in this version; ...
    """
    if name in SYNTHETIC_STREAMS:
        return SYNTHETIC_STREAMS[name](
            n_batches=n_batches, batch_size=batch_size, seed=seed, **kwargs
        )
    if name in _REAL_DATA_STREAMS:
        raise ValueError(
            f"stream {name!r} needs a data file: not available yet in this version; "
            f"the synthetic streams {', '.join(SYNTHETIC_STREAMS)} need none"
        )
    raise ValueError(f"unknown stream {name!r}: expected one of {', '.join(STREAM_NAMES)}")
