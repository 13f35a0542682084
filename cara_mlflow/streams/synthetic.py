"""Synthetic data streams of the CARA paper (§7.1 data, §7.3 queries), reproducible by seed.

Three 2-D binary streams, each with two query streams:

========  =============================================  ===========================
stream    data (batch ``t``)                             concept (label 1 iff ...)
========  =============================================  ===========================
GAUSS     Normal(centre ``(c, 0.5 - c)``, sd 0.1),       ``x2 > 4 (x1 - 0.5)^2``
          ``c = ((t + 1) % 15) / 30``                    (fixed: covariate drift only)
CIRCLE    Uniform ``[0, 1]^2``                           inside a circle whose centre
                                                         and radius move gradually
CovCon    Normal(mean ``((t + 1) % 7) / 10`` on both     ``0.8 sin(pi x1) > x2``, the
          coordinates, sd 0.1)                           inequality flipping every 10
                                                         batches
========  =============================================  ===========================

Query streams (paper §7.3):

* ``-D`` (``queries="data"``): in every batch, ``round(query_fraction * batch_size)`` of the
  batch's points (10% by default: 100 of 1000) are sampled without replacement as the queries
  ``Q_t``. They stay in the data: ``X`` and ``y`` are unchanged, ``query_labels`` are their ``y``
  and ``query_index`` their (sorted) row indices in ``X``.
* ``-S`` (``queries="static"``): ``n_static_queries`` (100) points from a Gaussian centred at
  ``(0.5, 0.5)`` (CIRCLE: ``(0.33, 0.5)``) with sd 0.015 per coordinate (independent coordinates), labelled by the true
  concept in force at that batch. ``query_index`` is ``None``.

``query_labels`` are for evaluation only (query accuracy); the staleness cost never sees them.

Choices the paper leaves open, decided here:

* GAUSS: the paper gives no standard deviation; we use 0.1, the one it gives for CovCon.
* CIRCLE: the paper says only that centre and radius change gradually (continuous drift). The
  circle moves from batch 0 along the four circles of Pesaranghader et al. (2016, the paper's
  ref. [7]): centres ``(0.2, 0.5)``, ``(0.4, 0.5)``, ``(0.6, 0.5)``, ``(0.8, 0.5)``, radii 0.15,
  0.2, 0.25, 0.3, in force at batches 0, 50, 100, 150 and linearly in between (so a stream of
  100 batches drifts all the time, the offline window included, from the first circle to just
  short of the third; after batch 150 the fourth holds). Label 1 is *inside* the circle
  (``<= r^2``); the paper's ``(x1 - c1)^2 + (x2 - c2)^2 - r^2 > 0`` only names the boundary.
  The pace (50 batches per circle) and the static queries' centre ``(0.33, 0.5)`` (CIRCLE-S
  only) were chosen so that the paper's figures follow: with a perfect model, never retraining
  after batch 25 answers 88 % of the ``-D`` queries right (the paper's RF NR: 0.85), and the
  static queries lie inside the circle in 91 % of the online batches 26-99 (the paper's
  CIRCLE-S accuracy of 0.09 for a logistic regression, which predicts "outside" everywhere);
  they are inside from the start and leave at batch 94. (Version 1 followed OSRE's
  ``CircleDataStream``: static for batches 0-25, random jumps at 25, 50 and 75; the offline
  window saw no drift and the queries sat inside the circle in only 59 % of the online
  batches.)
* CovCon: ``alpha = 0.8``, the value the OSRE ``CovConDataStream`` generator starts with (the
  paper's ref. [8] is Mallick et al., 2022). The flip is the paper's: label 1 iff
  ``alpha sin(pi x1) > x2`` in batches 0-9, 20-29, ..., and iff ``alpha sin(pi x1) < x2`` in
  batches 10-19, 30-39, ... (OSRE's own generator uses sd 0.15 and flips only once, at batch
  50; we follow the paper: sd 0.1, a flip every 10 batches).

Randomness: each call builds its generators from ``np.random.SeedSequence([seed, kind])``
(``kind`` a fixed code per stream kind, so GAUSS, CIRCLE and CovCon draw independently for the
same seed), spawned into three children, each fed to ``np.random.default_rng``: one for the
data, one for the queries and one kept for a concept that needs randomness (none does since
CIRCLE's schedule became fixed; it keeps the data and queries of a seed unchanged). So the same seed gives
identical arrays, and the ``-D`` and ``-S`` variants of a stream and seed share ``X``, ``y``
and the concept exactly: only the queries differ. No global state is touched.

All arrays are read-only (a stream is a fixture that many runs replay) and generated with
vectorised numpy; the only Python loops run over batches or over the three CIRCLE change points.

References: A. Mahadevan, M. Mathioudakis, "Cost-aware retraining for machine learning" (CARA),
§7.1 and §7.3; A. Pesaranghader, H.L. Viktor, E. Paquet, Discovery Science 2016 (CIRCLE);
A. Mallick et al., MLSys 2022 (CovCon); the OSRE generators ``osre.datastream``
``CircleDataStream`` and ``CovConDataStream``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ..batch import Batch
from ..errors import InputError

__all__ = ["Batch", "Stream", "gauss", "circle", "covcon"]

QUERY_KINDS = ("data", "static")
"""The values of ``queries``: ``"data"`` is the ``-D`` query stream, ``"static"`` the ``-S``."""

STATIC_QUERY_CENTRE = (0.5, 0.5)
STATIC_QUERY_SD = 0.015

GAUSS_SD = 0.1
COVCON_SD = 0.1
COVCON_ALPHA = 0.8
COVCON_FLIP_EVERY = 10
#: The circles of Pesaranghader et al. (2016), (c1, c2, r), in force every CIRCLE_STEP batches.
CIRCLE_PATH = ((0.2, 0.5, 0.15), (0.4, 0.5, 0.2), (0.6, 0.5, 0.25), (0.8, 0.5, 0.3))
CIRCLE_STEP = 50
CIRCLE_STATIC_QUERY_CENTRE = (0.33, 0.5)

# Stable codes mixed into the seed: changing one changes every stream of that kind.
_KIND_CODES = {"gauss": 1, "circle": 2, "covcon": 3}


# --------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class Stream:
    """A finite sequence of :class:`Batch` es, indexed by the absolute batch index ``t``.

    Attributes
    ----------
    name : str
        The stream's name as users type it, e.g. ``"covcon-d"``.
    batches : tuple of Batch
        Batch ``t`` is ``batches[t]`` (also ``stream[t]``); at least one.
    seed : int
        The seed the stream was generated from.

    Examples
    --------
    >>> s = covcon(n_batches=3, batch_size=20, seed=0)
    >>> s
    Stream(name='covcon-d', n_batches=3, n_features=2, seed=0)
    >>> len(s), s.n_features, s[2]
    (3, 2, Batch(n=20, d=2, m=2, query_index=rows of X))
    >>> [b.X.shape for b in s]
    [(20, 2), (20, 2), (20, 2)]
    """

    name: str
    batches: tuple[Batch, ...]
    seed: int

    def __post_init__(self) -> None:
        if not isinstance(self.batches, tuple) or not self.batches:
            raise InputError("batches must be a non-empty tuple of Batch")
        if not all(isinstance(b, Batch) for b in self.batches):
            raise InputError("batches must hold Batch objects only")
        d = self.batches[0].X.shape[1]
        if any(b.X.shape[1] != d for b in self.batches):
            raise InputError(f"every batch must have the same number of features ({d})")

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, t: int) -> Batch:
        return self.batches[t]

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)

    @property
    def n_features(self) -> int:
        """The number of features ``d`` of every batch."""
        return self.batches[0].X.shape[1]

    def __repr__(self) -> str:
        return (
            f"Stream(name={self.name!r}, n_batches={len(self)}, "
            f"n_features={self.n_features}, seed={self.seed})"
        )


# --------------------------------------------------------------------------------------------
# Public factories: validate, then call the kernels
# --------------------------------------------------------------------------------------------


def gauss(
    *,
    queries: str = "data",
    n_batches: int = 100,
    batch_size: int = 1000,
    query_fraction: float = 0.1,
    n_static_queries: int = 100,
    seed: int = 0,
) -> Stream:
    """GAUSS (paper §7.1): gradual covariate drift under a fixed parabolic boundary.

    At batch ``t`` the points are drawn from a Gaussian centred at ``(c, 0.5 - c)`` with
    ``c = ((t + 1) % 15) / 30`` and sd 0.1 per coordinate (independent); label 1 iff
    ``x2 > 4 (x1 - 0.5)^2``. The paper gives no sd for GAUSS: 0.1 is the one it gives for
    CovCon. The centre moves along the anti-diagonal and jumps back every 15 batches.

    Parameters
    ----------
    queries : {"data", "static"}
        ``"data"``: the GAUSS-D stream, queries sampled from the batch's points;
        ``"static"``: GAUSS-S, queries from a fixed Gaussian at (0.5, 0.5) with sd 0.015
        (paper §7.3; see the module docstring).
    n_batches : int >= 1
        The number of batches (the paper: 100).
    batch_size : int >= 1
        The number of data points per batch (the paper: 1000).
    query_fraction : float in (0, 1]
        ``-D`` only: the fraction of a batch's points used as queries (rounded with ``round``;
        it must give at least one query).
    n_static_queries : int >= 1
        ``-S`` only: the number of queries per batch.
    seed : int >= 0
        Same seed, same arrays; the ``-D`` and ``-S`` streams of a seed share ``X`` and ``y``.

    Returns
    -------
    Stream
        Named ``"gauss-d"`` or ``"gauss-s"``.

    Examples
    --------
    >>> s = gauss(n_batches=15, seed=0)
    >>> s.name, len(s), s[0].X.shape, s[0].queries.shape
    ('gauss-d', 15, (1000, 2), (100, 2))
    >>> s[0].X.mean(axis=0).round(1)          # centre (1/30, 0.5 - 1/30)
    array([0. , 0.5])
    >>> b = s[7]
    >>> bool((b.y == (b.X[:, 1] > 4 * (b.X[:, 0] - 0.5) ** 2)).all())
    True
    >>> bool((b.queries == b.X[b.query_index]).all())
    True
    >>> static = gauss(queries="static", n_batches=15, seed=0)
    >>> static.name, static[7].query_index is None, bool((static[7].X == b.X).all())
    ('gauss-s', True, True)
    """
    return _generate("gauss", **_checked(queries, n_batches, batch_size, query_fraction,
                                         n_static_queries, seed))


def circle(
    *,
    queries: str = "data",
    n_batches: int = 100,
    batch_size: int = 1000,
    query_fraction: float = 0.1,
    n_static_queries: int = 100,
    seed: int = 0,
) -> Stream:
    """CIRCLE (paper §7.1, after Pesaranghader et al. 2016): gradual concept drift.

    The points are Uniform ``[0, 1]^2``; label 1 iff ``(x1 - c1)^2 + (x2 - c2)^2 <= r^2``
    (inside the circle). The circle drifts from batch 0 through the four circles of
    Pesaranghader et al., one every 50 batches (:data:`CIRCLE_PATH`): batch ``t <= 50`` has
    centre ``(0.2 + 0.004 t, 0.5)`` and radius ``0.15 + 0.001 t``. The ``-S`` queries are
    centred at ``(0.33, 0.5)`` (:data:`CIRCLE_STATIC_QUERY_CENTRE`); see the module's notes.
    The ``-S`` query labels use the same circle as the batch's data.

    Parameters and return value as :func:`gauss` (named ``"circle-d"`` / ``"circle-s"``).

    Examples
    --------
    >>> s = circle(n_batches=40, batch_size=500, seed=0)
    >>> s.name, s[0].X.shape, s[0].queries.shape
    ('circle-d', (500, 2), (50, 2))
    >>> b = s[10]                             # centre (0.24, 0.5), r = 0.16
    >>> inside = ((b.X - [0.24, 0.5]) ** 2).sum(axis=1) <= 0.16 ** 2
    >>> bool((b.y == inside).all())
    True
    >>> float(s[0].X.min()) >= 0, float(s[0].X.max()) <= 1
    (True, True)
    """
    return _generate("circle", **_checked(queries, n_batches, batch_size, query_fraction,
                                          n_static_queries, seed))


def covcon(
    *,
    queries: str = "data",
    n_batches: int = 100,
    batch_size: int = 1000,
    query_fraction: float = 0.1,
    n_static_queries: int = 100,
    seed: int = 0,
) -> Stream:
    """CovCon (paper §7.1, after Mallick et al. 2022): covariate and periodic concept drift.

    At batch ``t`` both coordinates are drawn from Normal(``((t + 1) % 7) / 10``, sd 0.1),
    independently. With ``alpha = 0.8`` (the paper leaves alpha open; the OSRE
    ``CovConDataStream`` generator starts at 0.8), label 1 iff ``alpha sin(pi x1) > x2`` in
    batches 0-9, 20-29, ..., and iff ``alpha sin(pi x1) < x2`` in batches 10-19, 30-39, ...:
    the inequality flips every 10 batches.

    Parameters and return value as :func:`gauss` (named ``"covcon-d"`` / ``"covcon-s"``).

    Examples
    --------
    >>> s = covcon(queries="static", n_batches=20, seed=0)
    >>> s.name, s[0].queries.shape, s[0].query_index
    ('covcon-s', (100, 2), None)
    >>> float(s[3].X.mean().round(1))         # ((3 + 1) % 7) / 10
    0.4
    >>> above = lambda P: 0.8 * np.sin(np.pi * P[:, 0]) > P[:, 1]
    >>> bool((s[9].y == above(s[9].X)).all()), bool((s[10].y == ~above(s[10].X)).all())
    (True, True)
    >>> bool((s[10].query_labels == ~above(s[10].queries)).all())
    True
    """
    return _generate("covcon", **_checked(queries, n_batches, batch_size, query_fraction,
                                          n_static_queries, seed))


def _fixed_queries(factory: Callable[..., Stream], queries: str) -> Callable[..., Stream]:
    """The factory with its query stream fixed: the value of a name in ``SYNTHETIC_STREAMS``.

    Unlike ``functools.partial`` it does not accept ``queries``, so a name cannot be overridden
    into its sibling.
    """

    def make(
        *,
        n_batches: int = 100,
        batch_size: int = 1000,
        query_fraction: float = 0.1,
        n_static_queries: int = 100,
        seed: int = 0,
    ) -> Stream:
        return factory(
            queries=queries,
            n_batches=n_batches,
            batch_size=batch_size,
            query_fraction=query_fraction,
            n_static_queries=n_static_queries,
            seed=seed,
        )

    suffix = "d" if queries == "data" else "s"
    make.__name__ = make.__qualname__ = f"{factory.__name__}_{suffix}"
    name = factory.__name__
    make.__doc__ = f"The {name}-{suffix} stream: ``{name}(queries={queries!r}, ...)``."
    return make


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _checked(queries, n_batches, batch_size, query_fraction, n_static_queries, seed) -> dict:
    """Validate the factories' arguments; return them normalised (plain ints and floats)."""
    if queries not in QUERY_KINDS:
        raise InputError(f"queries must be 'data' or 'static', got {queries!r}")
    if not _is_int(n_batches) or n_batches < 1:
        raise InputError(f"n_batches must be an integer >= 1, got {n_batches!r}")
    if not _is_int(batch_size) or batch_size < 1:
        raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if (
        not isinstance(query_fraction, numbers.Real)
        or isinstance(query_fraction, bool)
        or not 0 < query_fraction <= 1
    ):
        raise InputError(f"query_fraction must be a number in (0, 1], got {query_fraction!r}")
    if queries == "data" and round(query_fraction * batch_size) < 1:
        raise InputError(
            f"query_fraction * batch_size must round to at least one query, got "
            f"{query_fraction!r} * {batch_size!r}"
        )
    if not _is_int(n_static_queries) or n_static_queries < 1:
        raise InputError(f"n_static_queries must be an integer >= 1, got {n_static_queries!r}")
    if not _is_int(seed) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    return {
        "queries": queries,
        "n_batches": int(n_batches),
        "batch_size": int(batch_size),
        "query_fraction": float(query_fraction),
        "n_static_queries": int(n_static_queries),
        "seed": int(seed),
    }


# --------------------------------------------------------------------------------------------
# Kernels: inputs assumed valid. Arrays of all batches at once, shape (n_batches, k, 2).
# --------------------------------------------------------------------------------------------


def _gauss_data(rng: np.random.Generator, n_batches: int, batch_size: int) -> np.ndarray:
    c = ((np.arange(n_batches) + 1) % 15) / 30
    centres = np.stack([c, 0.5 - c], axis=1)[:, None, :]
    return centres + GAUSS_SD * rng.standard_normal((n_batches, batch_size, 2))


def _gauss_labels(P: np.ndarray) -> np.ndarray:
    """Fixed parabola: label 1 iff x2 > 4 (x1 - 0.5)^2. ``P`` has shape (..., 2)."""
    return P[..., 1] > 4.0 * (P[..., 0] - 0.5) ** 2


def _covcon_data(rng: np.random.Generator, n_batches: int, batch_size: int) -> np.ndarray:
    mean = ((np.arange(n_batches) + 1) % 7) / 10
    return mean[:, None, None] + COVCON_SD * rng.standard_normal((n_batches, batch_size, 2))


def _covcon_flipped(n_batches: int) -> np.ndarray:
    """True for the batches whose inequality is flipped: 10-19, 30-39, ..."""
    return (np.arange(n_batches) // COVCON_FLIP_EVERY) % 2 == 1


def _covcon_labels(P: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """``P`` (n_batches, k, 2), ``flipped`` (n_batches,): the label of every point."""
    s = COVCON_ALPHA * np.sin(np.pi * P[..., 0])
    return np.where(flipped[:, None], s < P[..., 1], s > P[..., 1])


def _circle_data(rng: np.random.Generator, n_batches: int, batch_size: int) -> np.ndarray:
    return rng.random((n_batches, batch_size, 2))


def _circle_schedule(n_batches: int) -> np.ndarray:
    """The circle in force at every batch: array (n_batches, 3) of (c1, c2, r).

    Piecewise linear through :data:`CIRCLE_PATH`, one circle every :data:`CIRCLE_STEP` batches
    from batch 0; the last circle holds after its batch. A batch's circle does not depend on
    the stream's length.
    """
    t = np.arange(n_batches)
    path = np.asarray(CIRCLE_PATH, dtype=float)
    knots = CIRCLE_STEP * np.arange(len(path))
    return np.column_stack([np.interp(t, knots, path[:, j]) for j in range(path.shape[1])])


def _circle_labels(P: np.ndarray, schedule: np.ndarray) -> np.ndarray:
    """``P`` (n_batches, k, 2), ``schedule`` (n_batches, 3): label 1 iff inside the circle."""
    centre = schedule[:, None, :2]
    r = schedule[:, None, 2]
    return ((P - centre) ** 2).sum(axis=-1) <= r**2


def _generate(
    kind: str,
    *,
    queries: str,
    n_batches: int,
    batch_size: int,
    query_fraction: float,
    n_static_queries: int,
    seed: int,
) -> Stream:
    data_ss, query_ss, _concept_ss = np.random.SeedSequence([seed, _KIND_CODES[kind]]).spawn(3)
    data_rng = np.random.default_rng(data_ss)
    query_rng = np.random.default_rng(query_ss)

    if kind == "gauss":
        X = _gauss_data(data_rng, n_batches, batch_size)
        label = _gauss_labels
    elif kind == "circle":
        X = _circle_data(data_rng, n_batches, batch_size)
        schedule = _circle_schedule(n_batches)
        label = lambda P: _circle_labels(P, schedule)  # noqa: E731
    else:  # covcon
        X = _covcon_data(data_rng, n_batches, batch_size)
        flipped = _covcon_flipped(n_batches)
        label = lambda P: _covcon_labels(P, flipped)  # noqa: E731
    y = label(X).astype(np.int64)

    if queries == "data":
        m = round(query_fraction * batch_size)
        # m smallest of uniform keys per row = a uniform sample without replacement.
        keys = query_rng.random((n_batches, batch_size))
        index = np.sort(np.argpartition(keys, m - 1, axis=1)[:, :m], axis=1).astype(np.int64)
        Q = np.take_along_axis(X, index[:, :, None], axis=1)
        Q_labels = np.take_along_axis(y, index, axis=1)
    else:
        centre = np.asarray(CIRCLE_STATIC_QUERY_CENTRE if kind == "circle" else STATIC_QUERY_CENTRE)
        Q = centre + STATIC_QUERY_SD * query_rng.standard_normal((n_batches, n_static_queries, 2))
        Q_labels = label(Q).astype(np.int64)
        index = None

    for array in (X, y, Q, Q_labels, index):
        if array is not None:
            array.setflags(write=False)
    batches = tuple(
        Batch(
            X=X[t],
            y=y[t],
            queries=Q[t],
            query_labels=Q_labels[t],
            query_index=None if index is None else index[t],
        )
        for t in range(n_batches)
    )
    suffix = "d" if queries == "data" else "s"
    return Stream(name=f"{kind}-{suffix}", batches=batches, seed=seed)
