"""Tests of the batch store (cara_mlflow/store/): listing, reading, validating, writing."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cara_mlflow.features import FeatureSpace, kind_of
from cara_mlflow.store import (
    Batch,
    BatchInfo,
    BatchStore,
    BatchStoreError,
    BatchStoreWarning,
    write_stream,
    writing as writing_module,
)
from cara_mlflow.streams import make_stream

# --------------------------------------------------------------------------------------------
# Helpers: batches written by hand, as a foreign producer would
# --------------------------------------------------------------------------------------------


def _put(root: Path, name: str, files: dict[str, pd.DataFrame | bytes], complete: bool = True):
    """Create ``root/batches/<name>`` with ``files`` (frames by suffix, or raw bytes)."""
    path = root / "batches" / name
    path.mkdir(parents=True, exist_ok=True)
    for file, content in files.items():
        if isinstance(content, bytes):
            (path / file).write_bytes(content)
        elif file.endswith(".parquet"):
            content.to_parquet(path / file, index=False)
        else:
            content.to_csv(path / file, index=False)
    if complete:
        (path / "_SUCCESS").touch()
    return path


def _frame(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns)


GOOD = _frame(x1=[0.5, 1.5, 2.5], x2=[1, 2, 3], label=[0, 1, 1])
# GOOD's features as fixed at tune: both numbers
NUMERIC_SPACE = FeatureSpace.fit(GOOD, {"x1": "numeric", "x2": "numeric"})
# x1 numbers, x2 booleans at tune
BOOLEAN_SPACE = FeatureSpace.fit(_frame(x1=[0.5, 1.5], x2=[True, False]), {"x1": "numeric", "x2": "boolean"})


# --------------------------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------------------------


def test_constructor_creates_nothing_and_resolves_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = BatchStore("store")
    assert store.root == tmp_path / "store" and store.root.is_absolute()
    assert store.batches_dir == tmp_path / "store" / "batches"
    assert not store.exists() and not (tmp_path / "store").exists()


def test_missing_store_is_one_line_error_with_fix(tmp_path):
    store = BatchStore(tmp_path)
    with pytest.raises(BatchStoreError) as raised:
        store.list()
    message = str(raised.value)
    assert message == (
        f"no batch store at {tmp_path}: expected {tmp_path}/batches/<id>/data.parquet; "
        "create one with `cara-mlflow make-stream` or your producer"
    )
    with pytest.raises(BatchStoreError, match="no batch store"):
        store.next_after(None)


def test_list_sorts_numerically_with_zero_padding(tmp_path):
    for name in ("10", "002", "1", "0000"):
        _put(tmp_path, name, {"data.parquet": GOOD}, complete=name != "1")
    infos = BatchStore(tmp_path).list()
    assert [i.id for i in infos] == [0, 1, 2, 10]
    assert [i.path.name for i in infos] == ["0000", "1", "002", "10"]
    assert [i.complete for i in infos] == [True, False, True, True]
    assert BatchStore(tmp_path).info(2) == BatchInfo(2, tmp_path / "batches" / "002", True)


def test_empty_store_lists_nothing(tmp_path):
    (tmp_path / "batches").mkdir()
    store = BatchStore(tmp_path)
    assert store.exists() and store.list() == [] and store.next_after(None) is None
    with pytest.raises(BatchStoreError, match=r"^batch 0 does not exist in .*; it holds no batch"):
        store.info(0)


@pytest.mark.parametrize("name", ["tmp", "-1", "1.5", "+3", " 4", ".partial", "٣", "0x1"])
def test_non_integer_directories_are_ignored_with_a_warning(tmp_path, name):
    _put(tmp_path, "3", {"data.parquet": GOOD})
    (tmp_path / "batches" / name).mkdir()
    (tmp_path / "batches" / "notes.txt").write_text("a plain file: skipped silently")
    with pytest.warns(BatchStoreWarning) as record:
        infos = BatchStore(tmp_path).list()
    assert [i.id for i in infos] == [3]
    assert len(record) == 1 and repr(name) in str(record[0].message)
    assert issubclass(BatchStoreWarning, UserWarning)


def test_plain_files_are_skipped_without_warning(tmp_path):
    _put(tmp_path, "3", {"data.parquet": GOOD})
    (tmp_path / "batches" / "5").write_text("a file, not a batch directory")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [i.id for i in BatchStore(tmp_path).list()] == [3]


def test_duplicate_ids_are_an_error_naming_both_directories(tmp_path):
    _put(tmp_path, "7", {"data.parquet": GOOD})
    _put(tmp_path, "007", {"data.parquet": GOOD})
    store = BatchStore(tmp_path)
    for call in (store.list, lambda: store.info(7), lambda: store.read(7, target="label")):
        with pytest.raises(BatchStoreError) as raised:
            call()
        message = str(raised.value)
        assert message.startswith("batch 7 ") and "'7'" in message and "'007'" in message


def test_info_of_unknown_id(tmp_path):
    for t in (0, 1, 5):
        _put(tmp_path, str(t), {"data.parquet": GOOD})
    store = BatchStore(tmp_path)
    with pytest.raises(BatchStoreError) as raised:
        store.info(12)
    assert str(raised.value).startswith(f"batch 12 does not exist in {tmp_path / 'batches'}")
    assert "ids 0 to 5" in str(raised.value)
    with pytest.raises(BatchStoreError, match="non-negative"):
        store.info(-1)
    with pytest.raises(TypeError):
        store.info("3")
    assert store.info(np.int64(5)).id == 5


def test_next_after_returns_lowest_following_batch_complete_or_not(tmp_path):
    _put(tmp_path, "2", {"data.parquet": GOOD})
    _put(tmp_path, "04", {}, complete=False)
    _put(tmp_path, "9", {"data.parquet": GOOD})
    store = BatchStore(tmp_path)
    assert store.next_after(None).id == 2
    assert store.next_after(-1).id == 2
    assert store.next_after(2) == BatchInfo(4, tmp_path / "batches" / "04", complete=False)
    assert store.next_after(3).id == 4
    assert store.next_after(4) == BatchInfo(9, tmp_path / "batches" / "9", complete=True)
    assert store.next_after(9) is None


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_read_data_file_without_queries(tmp_path, fmt):
    data = _frame(x1=[0.1, -2.5, 3e-12], flag=[True, False, True], label=["a", "b", "a"],
                  x2=[1, 2, 3])
    _put(tmp_path, "27", {f"data.{fmt}": data})
    batch = BatchStore(tmp_path).read(27, target="label")
    assert isinstance(batch, Batch)
    assert batch.id == 27 and batch.target == "label" and batch.n_rows == 3
    assert batch.features == ("x1", "flag", "x2")
    assert batch.X.dtype == np.float64 and batch.X.flags.c_contiguous
    np.testing.assert_array_equal(batch.X, [[0.1, 1, 1], [-2.5, 0, 2], [3e-12, 1, 3]])
    assert list(batch.y) == ["a", "b", "a"]
    assert batch.queries is batch.X and not batch.has_query_file
    assert batch.data_path == tmp_path / "batches" / "27" / f"data.{fmt}"
    assert not batch.X.flags.writeable and not batch.y.flags.writeable
    # the frame: the feature columns as read, their own dtypes; X is its raw space
    assert list(batch.frame.columns) == ["x1", "flag", "x2"]
    assert list(batch.frame.dtypes) == [np.float64, np.bool_, np.int64]
    assert batch.query_frame is batch.frame
    assert batch.space.kind_of == {"x1": "numeric", "flag": "boolean", "x2": "numeric"}
    assert batch.space.scaling == "raw" and batch.space.columns == ("x1", "flag", "x2")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_read_queries_file(tmp_path, fmt):
    queries = _frame(label=[5, 6], x2=[7, 8], x1=[0.25, 0.75], extra=["p", "q"])
    _put(tmp_path, "3", {"data.parquet": GOOD, f"queries.{fmt}": queries})
    batch = BatchStore(tmp_path).read(3, target="label")
    assert batch.has_query_file and batch.n_queries == 2
    np.testing.assert_array_equal(batch.queries, [[0.25, 7.0], [0.75, 8.0]])
    assert batch.queries.dtype == np.float64
    np.testing.assert_array_equal(batch.y, [0, 1, 1])
    assert batch.y.dtype == np.int64


def test_a_store_batch_is_a_stream_batch(tmp_path):
    """One Batch type: a store's batch goes into a Stream as read, its queries located in X."""
    from cara_mlflow.streams import Batch as StreamBatch, Stream

    _put(tmp_path, "4", {"data.parquet": GOOD})
    _put(tmp_path, "5", {"data.parquet": GOOD, "queries.csv": GOOD[["x2", "x1"]].iloc[:2]})
    store = BatchStore(tmp_path)
    own, filed = store.read(4, target="label"), store.read(5, target="label")
    assert StreamBatch is Batch and isinstance(own, StreamBatch)
    np.testing.assert_array_equal(own.query_index, np.arange(3))
    assert not own.query_index.flags.writeable
    np.testing.assert_array_equal(own.queries, own.X[own.query_index])
    assert filed.query_index is None and filed.has_query_file
    stream = Stream(name="s", batches=(own, filed), seed=0)
    assert [b.id for b in stream] == [4, 5]


def test_every_format_has_a_writer_and_a_reader():
    from cara_mlflow.store import FORMATS, tables

    assert tuple(writing_module._WRITERS) == FORMATS == tuple(tables.TABLES)


def test_features_fix_the_column_order_and_extra_columns_are_ignored(tmp_path):
    data = _frame(x1=[1.0, 2.0], noise=["u", "v"], label=[1, 0], x2=[10.0, 20.0])
    _put(tmp_path, "0", {"data.parquet": data, "queries.parquet": _frame(x1=[3.0], x2=[30.0])})
    batch = BatchStore(tmp_path).read(0, target="label", features=["x2", "x1"])
    assert batch.features == ("x2", "x1")
    np.testing.assert_array_equal(batch.X, [[10.0, 1.0], [20.0, 2.0]])
    np.testing.assert_array_equal(batch.queries, [[30.0, 3.0]])
    assert list(batch.frame.columns) == ["x2", "x1"] == list(batch.query_frame.columns)


def _whole(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("parquet", pd.Categorical),
        ("parquet", lambda values: pd.array(values, dtype="string")),
        ("parquet", lambda values: pd.Series(values, dtype=object)),
        ("csv", list),
    ],
    ids=["category", "string", "object", "csv text"],
)
def test_text_features_are_read_as_categories(tmp_path, fmt, text):
    data = GOOD.assign(x2=text(["b", "a", "b"]))
    queries = _frame(x1=[9.0, 8.0], x2=text(["a", "z"]))
    path = _put(tmp_path, "6", {f"data.{fmt}": data, f"queries.{fmt}": queries})
    batch = BatchStore(tmp_path).read(6, target="label")
    assert batch.features == ("x1", "x2") and batch.space.kind_of["x2"] == "categorical"
    # the frames keep the dtypes of a whole-file read (a category stays a category)
    pd.testing.assert_frame_equal(batch.frame, _whole(path / f"data.{fmt}")[["x1", "x2"]])
    pd.testing.assert_frame_equal(batch.query_frame, _whole(path / f"queries.{fmt}"))
    if text is pd.Categorical:
        assert isinstance(batch.frame["x2"].dtype, pd.CategoricalDtype)
    # X: x1 as it is, x2 one-hot over this batch's sorted categories at 1
    assert batch.space.columns == ("x1", "x2=a", "x2=b")
    np.testing.assert_array_equal(batch.X, [[0.5, 0, 1], [1.5, 1, 0], [2.5, 0, 1]])
    assert batch.X.dtype == np.float64 and not batch.X.flags.writeable
    # queries in the data's space: a category the data never had is the zero vector
    np.testing.assert_array_equal(batch.queries, [[9.0, 1, 0], [8.0, 0, 0]])


def test_missing_text_is_read_and_is_the_zero_vector(tmp_path):
    _put(tmp_path, "0", {"data.csv": b"x1,day,label\n1,Mon,0\n2,,1\n3,Tue,0\n"})
    batch = BatchStore(tmp_path).read(0, target="label")
    assert batch.frame["day"].isna().tolist() == [False, True, False]
    assert batch.space.columns == ("x1", "day=Mon", "day=Tue")
    np.testing.assert_array_equal(batch.X, [[1, 1, 0], [2, 0, 0], [3, 0, 1]])


def test_complex_numbers_have_no_kind_and_a_csv_reads_them_as_text(tmp_path):
    assert kind_of(np.dtype(complex)) is None   # in a frame: refused (parquet cannot store it)
    _put(tmp_path, "0", {"data.csv": _frame(x1=[1 + 2j, 3 + 0j], label=[0, 1])})
    store = BatchStore(tmp_path)
    batch = store.read(0, target="label")
    assert kind_of(batch.frame["x1"].dtype) == "categorical"
    assert batch.space.columns == ("x1=(1+2j)", "x1=(3+0j)")
    with pytest.raises(BatchStoreError, match=r"column 'x1' has type .*; expected numbers \(its kind at tune\)"):
        store.read(0, target="label", space=FeatureSpace.numeric(["x1"]))


def test_a_space_fixes_features_kinds_and_coordinates(tmp_path):
    data = _frame(x2=[True, False, True], noise=["u", "v", "w"], x1=[1.0, 2.0, 3.0], label=[0, 1, 1])
    queries = _frame(x1=[2.0], x2=[1])  # numbers where booleans were at tune: numbers alike
    _put(tmp_path, "0", {"data.parquet": data, "queries.csv": queries})
    batch = BatchStore(tmp_path).read(0, target="label", features=["noise"], space=BOOLEAN_SPACE)
    assert batch.space is BOOLEAN_SPACE and batch.features == ("x1", "x2")  # features: the space's
    assert list(batch.frame.dtypes) == [np.float64, np.bool_]
    np.testing.assert_array_equal(batch.X, BOOLEAN_SPACE.transform(data), strict=True)
    np.testing.assert_array_equal(batch.queries, BOOLEAN_SPACE.transform(queries), strict=True)
    assert batch.query_frame["x2"].dtype == np.int64
    # and the reverse: booleans where numbers were
    _put(tmp_path, "1", {"data.parquet": data})
    batch = BatchStore(tmp_path).read(1, target="label", space=NUMERIC_SPACE)
    np.testing.assert_array_equal(batch.X, NUMERIC_SPACE.transform(data), strict=True)


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        (pd.array([1, 0], dtype="Int64"), np.array([1, 0])),
        (np.array([7, 0], dtype=np.uint8), np.array([7, 0], dtype=np.uint8)),
        (np.array([True, False]), np.array([True, False])),
        (np.array([0.0, 1.0]), np.array([0.0, 1.0])),
        (pd.array(["no", "yes"], dtype="string"), np.array(["no", "yes"], dtype=object)),
    ],
)
def test_target_values_as_read(tmp_path, column, expected):
    _put(tmp_path, "1", {"data.parquet": pd.DataFrame({"x": [0.0, 1.0], "y": column})})
    y = BatchStore(tmp_path).read(1, target="y").y
    assert y.shape == (2,) and y.dtype == expected.dtype
    np.testing.assert_array_equal(y, expected)


def test_read_argument_errors(tmp_path):
    _put(tmp_path, "0", {"data.parquet": GOOD})
    store = BatchStore(tmp_path)
    with pytest.raises(BatchStoreError, match="'label' is also listed in features"):
        store.read(0, target="label", features=["x1", "label"])
    with pytest.raises(BatchStoreError, match="'x1' more than once"):
        store.read(0, target="label", features=["x1", "x1"])
    with pytest.raises(BatchStoreError, match="features is empty"):
        store.read(0, target="label", features=[])
    with pytest.raises(TypeError, match="not the string"):
        store.read(0, target="label", features="x1")


# Malformed batches: (files of batch 27, read kwargs, the exact message or its fragments).
# Each case's fragments name the batch, the file or column, and what is expected.
_NAN_INF = _frame(x1=[np.nan, 1.0, np.inf, -np.inf], x2=[1.0, 2.0, 3.0, 4.0], label=[0, 1, 0, 1])
MALFORMED = {
    "incomplete": (
        {"data.parquet": GOOD, "_SUCCESS": None},
        {},
        "batch 27 is incomplete (no _SUCCESS): wait for the producer to finish it",
    ),
    "no data file": (
        {"queries.parquet": GOOD},
        {},
        ["batch 27 has no data file", "expected data.parquet or data.csv"],
    ),
    "two data files": (
        {"data.parquet": GOOD, "data.csv": GOOD},
        {},
        ["batch 27 has both data.parquet and data.csv", "remove all but one"],
    ),
    "two query files": (
        {"data.parquet": GOOD, "queries.parquet": GOOD, "queries.csv": GOOD},
        {},
        ["batch 27 has both queries.parquet and queries.csv", "remove all but one"],
    ),
    "garbage parquet": (
        {"data.parquet": b"this is not parquet"},
        {},
        ["batch 27: cannot read data.parquet (", "expected a valid parquet file"],
    ),
    "zero-byte csv": (
        {"data.csv": b""},
        {},
        ["batch 27: cannot read data.csv (EmptyDataError", "expected a valid csv file"],
    ),
    "garbage query file": (
        {"data.parquet": GOOD, "queries.parquet": b"PAR1 torn write"},
        {},
        ["batch 27: cannot read queries.parquet ("],
    ),
    "no rows": (
        {"data.parquet": GOOD.iloc[:0]},
        {},
        "batch 27: data.parquet has no rows; expected at least one",
    ),
    "no rows csv": (
        {"data.csv": b"x1,x2,label\n"},
        {},
        "batch 27: data.csv has no rows; expected at least one",
    ),
    "no target": (
        {"data.parquet": _frame(x1=[1.0], x2=[2.0])},
        {},
        "batch 27: data.parquet has no column 'label' (the target); columns are x1, x2",
    ),
    "only the target": (
        {"data.parquet": _frame(label=[1, 0])},
        {},
        ["batch 27: data.parquet has only the target column 'label'", "at least one feature"],
    ),
    "feature missing": (
        {"data.parquet": GOOD},
        {"features": ["x1", "x3"]},
        ["batch 27: data.parquet has no column 'x3' (a feature)", "expected every feature: x1, x3"],
    ),
    # text is a kind of feature: only where numbers or booleans were at tune is it wrong
    "object feature where numbers were at tune": (
        {"data.parquet": _frame(x1=[1.0], x2=[b"ab"], label=[0])},
        {"space": NUMERIC_SPACE},
        "batch 27: column 'x2' has type object; expected numbers (its kind at tune) (in data.parquet)",
    ),
    "string feature where numbers were at tune": (
        {"data.csv": b"x1,x2,label\n1.0,2.0,0\n1.5,oops,1\n"},
        {"space": NUMERIC_SPACE},
        ["batch 27: column 'x2' has type ", "; expected numbers (its kind at tune) (in data.csv)"],
    ),
    "categorical feature where numbers were at tune": (
        {"data.parquet": _frame(x1=pd.Categorical(["a", "b"]), x2=[1.0, 2.0], label=[0, 1])},
        {"space": NUMERIC_SPACE},
        "batch 27: column 'x1' has type category; expected numbers (its kind at tune) (in data.parquet)",
    ),
    "text where booleans were at tune": (
        {"data.csv": b"x1,x2,label\n1.0,yes,0\n1.5,no,1\n"},
        {"space": BOOLEAN_SPACE},
        ["batch 27: column 'x2' has type ", "; expected booleans (its kind at tune) (in data.csv)"],
    ),
    # a column of no kind is refused, with or without a space
    "datetime feature": (
        {"data.parquet": _frame(x1=[1.0], x2=pd.to_datetime(["2024-05-01"]), label=[0])},
        {},
        ["batch 27: column 'x2' has type datetime64",
         " in data.parquet; expected numbers, booleans or text: convert it, or leave it out with "
         "--exclude x2 at tune"],
    ),
    "datetime feature where numbers were at tune": (
        {"data.parquet": _frame(x1=[1.0], x2=pd.to_datetime(["2024-05-01"]), label=[0])},
        {"space": NUMERIC_SPACE},
        ["batch 27: column 'x2' has type datetime64",
         " in data.parquet; expected numbers, booleans or text: convert it, or leave it out with "
         "--exclude x2 at tune"],
    ),
    "timedelta feature": (
        {"data.parquet": _frame(x1=pd.to_timedelta([1.0], unit="s"), x2=[1.0], label=[0])},
        {},
        ["batch 27: column 'x1' has type timedelta64",
         " in data.parquet; expected numbers, booleans or text: convert it, or leave it out with "
         "--exclude x1 at tune"],
    ),
    "NaN and inf in a feature": (
        {"data.parquet": _NAN_INF},
        {},
        "batch 27: column 'x1' has 3 NaN/inf values in data.parquet; expected finite numbers",
    ),
    "NaN/inf in a csv feature": (
        {"data.csv": b"x1,x2,label\n1,,0\n2,inf,1\n3,4,0\n"},
        {},
        "batch 27: column 'x2' has 2 NaN/inf values in data.csv; expected finite numbers",
    ),
    "NA in a nullable integer feature": (
        {"data.parquet": _frame(x1=[1.0, 2.0], x2=pd.array([1, None], dtype="Int64"),
                                label=[0, 1])},
        {},
        "batch 27: column 'x2' has 1 NaN/inf values in data.parquet; expected finite numbers",
    ),
    "NA in a nullable boolean feature": (
        {"data.parquet": _frame(x1=[1.0, 2.0], x2=pd.array([True, None], dtype="boolean"),
                                label=[0, 1])},
        {},
        "batch 27: column 'x2' has 1 NaN/inf values in data.parquet; expected finite numbers",
    ),
    "NaN in an ignored column is fine, in a chosen feature it is not": (
        {"data.parquet": _NAN_INF},
        {"features": ["x2", "x1"]},
        "batch 27: column 'x1' has 3 NaN/inf values in data.parquet; expected finite numbers",
    ),
    "NaN in a numeric target": (
        {"data.parquet": _frame(x1=[1.0, 2.0, 3.0], label=[0.0, np.nan, 1.0])},
        {},
        "batch 27: column 'label' (the target) has 1 NaN/inf/missing values in data.parquet; "
        "expected a label in every row",
    ),
    "inf in a numeric target": (
        {"data.parquet": _frame(x1=[1.0, 2.0], label=[np.inf, 1.0])},
        {},
        ["batch 27: column 'label' (the target) has 1 NaN/inf/missing values in data.parquet"],
    ),
    "missing string target": (
        {"data.csv": b"x1,label\n1,a\n2,\n3,\n"},
        {},
        ["batch 27: column 'label' (the target) has 2 ", "in data.csv"],
    ),
    "query file lacks a feature": (
        {"data.parquet": GOOD, "queries.parquet": _frame(x1=[1.0], label=[0])},
        {},
        ["batch 27: queries.parquet has no column 'x2' (a feature)", "expected every feature"],
    ),
    "empty query file": (
        {"data.parquet": GOOD, "queries.parquet": _frame(x1=[1.0], x2=[2.0]).iloc[:0]},
        {},
        "batch 27: queries.parquet has no rows; expected at least one",
    ),
    "NaN in the query file": (
        {"data.parquet": GOOD, "queries.csv": b"x1,x2\n1,nan\n2,3\n"},
        {},
        "batch 27: column 'x2' has 1 NaN/inf values in queries.csv; expected finite numbers",
    ),
    # the queries' kinds are the data's (or those at tune)
    "text in the query file where the data have numbers": (
        {"data.parquet": GOOD, "queries.parquet": _frame(x1=[b"a"], x2=[1.0])},
        {},
        ["batch 27: column 'x1' has type object; expected numbers", "(in queries.parquet)"],
    ),
    "text in the query file where numbers were at tune": (
        {"data.parquet": GOOD, "queries.csv": b"x2,x1\n1,0.5\n2,high\n"},
        {"space": NUMERIC_SPACE},
        ["batch 27: column 'x1' has type ", "; expected numbers (its kind at tune) (in queries.csv)"],
    ),
}


@pytest.mark.parametrize(("files", "kwargs", "expected"), MALFORMED.values(), ids=MALFORMED)
def test_malformed_batches_fail_with_one_line_naming_batch_and_column(
    tmp_path, files, kwargs, expected
):
    complete = "_SUCCESS" not in files
    _put(tmp_path, "027", {k: v for k, v in files.items() if v is not None}, complete=complete)
    with pytest.raises(BatchStoreError) as raised:
        BatchStore(tmp_path).read(27, target="label", **kwargs)
    message = str(raised.value)
    assert "\n" not in message and isinstance(raised.value, ValueError)
    if isinstance(expected, str):
        assert message == expected
    else:
        for fragment in expected:
            assert fragment in message, (fragment, message)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_write_leaves_exactly_the_batch_files(tmp_path, fmt):
    store = BatchStore(tmp_path / "new" / "store")
    info = store.write(3, GOOD, queries=GOOD[["x1", "x2"]], fmt=fmt)
    assert info == BatchInfo(3, tmp_path / "new" / "store" / "batches" / "3", complete=True)
    names = sorted(p.name for p in info.path.iterdir())
    assert names == sorted(["_SUCCESS", f"data.{fmt}", f"queries.{fmt}"])
    batch = store.read(3, target="label")
    np.testing.assert_array_equal(batch.X, GOOD[["x1", "x2"]].to_numpy(dtype=float))
    assert batch.has_query_file


def test_write_renames_success_last(tmp_path, monkeypatch):
    replaced: list[tuple[str, str, list[str]]] = []
    real_replace = os.replace

    def recording_replace(src, dst):
        listing = sorted(p.name for p in Path(dst).parent.iterdir() if not p.name.startswith("."))
        replaced.append((Path(src).name, Path(dst).name, listing))
        real_replace(src, dst)

    monkeypatch.setattr(writing_module.os, "replace", recording_replace)
    BatchStore(tmp_path).write(0, GOOD, queries=GOOD[["x1", "x2"]])
    assert [dst for _, dst, _ in replaced] == ["data.parquet", "queries.parquet", "_SUCCESS"]
    # every file came from a hidden temporary file in the same directory
    assert all(src.startswith(f".{dst}.") and src.endswith(".tmp") for src, dst, _ in replaced)
    # before _SUCCESS lands, the data files are already complete and in place
    assert replaced[-1][2] == ["data.parquet", "queries.parquet"]


def test_killed_write_leaves_an_incomplete_batch_that_can_be_rewritten(tmp_path, monkeypatch):
    real_writer = writing_module._WRITERS["parquet"]

    def dies_on_queries(frame, path):  # a producer killed while writing the queries file
        if Path(path).name.startswith(".queries."):
            Path(path).write_bytes(b"PAR1 half")
            raise KeyboardInterrupt
        real_writer(frame, path)

    monkeypatch.setitem(writing_module._WRITERS, "parquet", dies_on_queries)
    store = BatchStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        store.write(5, GOOD, queries=GOOD[["x1", "x2"]])
    info = store.info(5)
    assert not info.complete
    assert sorted(p.name for p in info.path.iterdir()) == ["data.parquet"]  # no temp file left
    with pytest.raises(BatchStoreError, match="batch 5 is incomplete"):
        store.read(5, target="label")
    monkeypatch.undo()
    store.write(5, GOOD, fmt="csv")  # an incomplete batch is written over, stale files removed
    assert sorted(p.name for p in info.path.iterdir()) == ["_SUCCESS", "data.csv"]
    assert store.read(5, target="label").n_rows == 3


def test_write_over_incomplete_padded_directory_keeps_it(tmp_path):
    _put(tmp_path, "0042", {"data.csv": GOOD, "queries.csv": GOOD}, complete=False)
    info = BatchStore(tmp_path).write(42, GOOD)
    assert info.path.name == "0042" and info.complete
    assert sorted(p.name for p in info.path.iterdir()) == ["_SUCCESS", "data.parquet"]
    assert [i.id for i in BatchStore(tmp_path).list()] == [42]


def test_write_refuses_to_overwrite_a_complete_batch(tmp_path):
    store = BatchStore(tmp_path)
    store.write(3, GOOD)
    before = (tmp_path / "batches" / "3" / "data.parquet").read_bytes()
    other = GOOD.assign(x1=[9.0, 9.0, 9.0])
    with pytest.raises(BatchStoreError, match=r"^batch 3 already exists and is complete"):
        store.write(3, other)
    _put(tmp_path, "004", {"data.parquet": GOOD})
    with pytest.raises(BatchStoreError, match=r"^batch 4 already exists and is complete"):
        store.write(4, other, fmt="csv")
    assert (tmp_path / "batches" / "3" / "data.parquet").read_bytes() == before


def test_write_argument_errors(tmp_path):
    store = BatchStore(tmp_path)
    with pytest.raises(BatchStoreError, match="unknown file format 'json'"):
        store.write(0, GOOD, fmt="json")
    with pytest.raises(BatchStoreError, match="non-negative"):
        store.write(-2, GOOD)
    with pytest.raises(TypeError, match="data must be a pandas DataFrame"):
        store.write(0, GOOD.to_numpy())
    with pytest.raises(TypeError):
        store.write(True, GOOD)
    assert not store.exists()


# --------------------------------------------------------------------------------------------
# write_stream
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"), [("gauss-d", "parquet"), ("circle-s", "parquet"), ("covcon-d", "csv")]
)
def test_write_stream_round_trip_is_exact(tmp_path, name, fmt):
    stream = make_stream(name, n_batches=4, batch_size=60, seed=3)
    store = write_stream(stream, tmp_path / "store", fmt=fmt)
    assert isinstance(store, BatchStore) and [i.id for i in store.list()] == [0, 1, 2, 3]
    for t, expected in enumerate(stream):
        batch = store.read(t, target="label")
        assert batch.features == ("x1", "x2") and batch.has_query_file
        assert batch.data_path.name == f"data.{fmt}"
        np.testing.assert_array_equal(batch.X, expected.X, strict=True)
        np.testing.assert_array_equal(batch.y, expected.y, strict=True)
        np.testing.assert_array_equal(batch.queries, expected.queries, strict=True)


def test_write_stream_feature_names_and_target(tmp_path):
    stream = make_stream("gauss-s", n_batches=2, batch_size=30, seed=0)
    store = write_stream(stream, tmp_path, target="y", feature_names=["a", "b"])
    batch = store.read(1, target="y", features=["a", "b"])
    np.testing.assert_array_equal(batch.X, stream[1].X, strict=True)
    np.testing.assert_array_equal(batch.queries, stream[1].queries, strict=True)
    with pytest.raises(BatchStoreError, match="already exists and is complete"):
        write_stream(stream, tmp_path, target="y", feature_names=["a", "b"])


@pytest.mark.parametrize("names", [["a"], ["a", "a"], ["a", "label"]])
def test_write_stream_rejects_feature_names_that_do_not_fit(tmp_path, names):
    stream = make_stream("gauss-s", n_batches=1, batch_size=10, seed=0)
    with pytest.raises(BatchStoreError, match="feature_names"):
        write_stream(stream, tmp_path, feature_names=names)
    assert not BatchStore(tmp_path).exists()


# --- queries before labels (_QUERIES) ------------------------------------------------------------


def _space() -> FeatureSpace:
    return FeatureSpace.fit(pd.DataFrame({"x": [0.0, 1.0], "day": ["Mon", "Tue"]}),
                            {"x": "numeric", "day": "categorical"}, scaling="raw")


def test_queries_first_then_labels(tmp_path):
    """The producer's two goes: queries and _QUERIES, later data and _SUCCESS; the queries stay."""
    store = BatchStore(tmp_path)
    queries = pd.DataFrame({"x": [0.5, 2.0], "day": ["Tue", "Mon"]})
    info = store.write_queries(4, queries)
    listed = store.list()[0]
    assert (listed.complete, listed.queries_ready) == (False, True) and not info.complete
    assert store.next_after(None).id == 4
    q = store.read_queries(4, space=_space())
    assert q.id == 4 and q.n_queries == 2 and q.queries.shape == (2, 3)
    np.testing.assert_array_equal(q.queries, _space().transform(queries))
    with pytest.raises(BatchStoreError, match="incomplete"):
        store.read(4, target="label", space=_space())
    store.write(4, pd.DataFrame({"x": [1.0, 3.0, 0.0], "day": ["Mon", "Mon", "Tue"], "label": [0, 1, 1]}))
    batch = store.read(4, target="label", space=_space())
    assert batch.has_query_file and batch.n_queries == 2 and batch.n_rows == 3
    assert sorted(p.name for p in (tmp_path / "batches" / "4").iterdir()) == [
        "_QUERIES", "_SUCCESS", "data.parquet", "queries.parquet"]
    with pytest.raises(BatchStoreError, match="already exists and is complete"):
        store.write_queries(4, queries)


def test_read_queries_errors_are_one_line(tmp_path):
    store = BatchStore(tmp_path)
    (tmp_path / "batches" / "3").mkdir(parents=True)
    with pytest.raises(BatchStoreError, match="neither _QUERIES nor _SUCCESS"):
        store.read_queries(3, space=_space())
    (tmp_path / "batches" / "3" / "_QUERIES").touch()
    with pytest.raises(BatchStoreError, match="_QUERIES but no queries file"):
        store.read_queries(3, space=_space())
    store.write_queries(5, pd.DataFrame({"x": [0.5]}))
    with pytest.raises(BatchStoreError, match="has no column 'day'"):
        store.read_queries(5, space=_space())
    store.write_queries(6, pd.DataFrame({"x": [np.nan], "day": ["Mon"]}))
    with pytest.raises(BatchStoreError, match="NaN/inf"):
        store.read_queries(6, space=_space())
