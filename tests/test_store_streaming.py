"""Streamed reads of the batch store (issue 6): ``BatchStore.read`` over files of many chunks.

The reference is a whole-file read: the file into one pandas frame, each feature's kind from
its whole column's dtype (or the kind fixed at tune), checked, then put in the kernel space. A
streamed read must give the same frame and arrays, or fail with the same one-line message,
whatever the chunk size; and it must need far less memory than the whole-file read.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cara_mlflow import store as store_module
from cara_mlflow.batch import RowsOnDemand
from cara_mlflow.features import FeatureSpace, infer_kinds, kind_of
from cara_mlflow.store import BatchStore, BatchStoreError, tables

# --------------------------------------------------------------------------------------------
# The slow reference: a whole-file read
# --------------------------------------------------------------------------------------------


class Read(NamedTuple):
    X: np.ndarray
    y: np.ndarray | None
    frame: pd.DataFrame
    space: FeatureSpace


_EXPECTED = {"numeric": "numbers", "boolean": "booleans"}


def whole_file_read(path: Path, target: str | None, features: list[str] | None,
                    space: FeatureSpace | None = None) -> Read | str:
    """The :class:`Read` of the file ``path`` read whole, or the message a read must fail with.

    With ``space`` (fixed at tune), its features and kinds are read and ``X`` is in it; without,
    each feature's kind is its whole column's and ``X`` is in the raw space of this file. Only the
    checks that depend on the values are reproduced (column presence, kinds, NaN/inf counts of
    numbers, missing targets); ``y`` is None when ``target`` is None or absent.
    """
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, low_memory=False)
    batch = "batch 0"
    if space is not None:
        features = list(space.features)
    elif features is None:
        features = [c for c in frame.columns if c != target]
    for name in features:
        if name not in frame.columns:
            return f"{batch}: {path.name} has no column {name!r} (a feature)"
        dtype, wanted = frame[name].dtype, None if space is None else space.kind_of[name]
        if kind_of(dtype) is None:
            return (f"{batch}: column {name!r} has type {dtype} in {path.name}; expected numbers, booleans or text: "
                    f"convert it, or leave it out with --exclude {name} at tune")
        if kind_of(dtype) == "categorical" and wanted in _EXPECTED:
            return (f"{batch}: column {name!r} has type {dtype}; expected {_EXPECTED[wanted]} (its kind at tune) "
                    f"(in {path.name})")
    kinds = {name: kind_of(frame[name].dtype) for name in features}
    for name in features:
        if kinds[name] != "categorical":
            values = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
            bad = int(np.count_nonzero(~np.isfinite(values)))
            if bad:
                return f"{batch}: column {name!r} has {bad} NaN/inf values in {path.name}"
    features_frame = frame.loc[:, features]
    space = space or FeatureSpace.fit(features_frame, kinds, scaling="raw")
    X = space.transform(features_frame)
    if target is None or target not in frame.columns:
        return Read(X, None, features_frame, space)
    column = frame[target]
    missing = int(column.isna().sum())
    if pd.api.types.is_float_dtype(column.dtype):
        missing += int(np.isinf(column.to_numpy(dtype=np.float64, na_value=np.nan)).sum())
    if missing:
        return f"{batch}: column {target!r} (the target) has {missing} NaN/inf/missing values in {path.name}"
    dtype = column.dtype
    if tables.is_number_dtype(dtype):
        return Read(X, column.to_numpy(dtype=getattr(dtype, "numpy_dtype", dtype)), features_frame, space)
    return Read(X, column.to_numpy(), features_frame, space)


def streamed_read(store: BatchStore, target: str, features: list[str] | None,
                  space: FeatureSpace | None = None) -> Read | str:
    """The :class:`Read` of batch 0 by the store, or the message it failed with."""
    try:
        batch = store.read(0, target=target, features=features, space=space)
    except BatchStoreError as error:
        return str(error)
    return Read(batch.X, batch.y, batch.frame, batch.space)


def assert_same_frame(frame: pd.DataFrame, reference: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(frame, reference, check_dtype=True, check_index_type=False)


def assert_same_outcome(streamed: Read | str, reference: Read | str) -> None:
    if isinstance(reference, str):
        assert isinstance(streamed, str), f"the read succeeded, expected: {reference}"
        assert streamed.startswith(reference), (streamed, reference)
        return
    assert not isinstance(streamed, str), streamed
    np.testing.assert_array_equal(streamed.X, reference.X, strict=True)
    assert streamed.X.flags.c_contiguous and not streamed.X.flags.writeable
    np.testing.assert_array_equal(streamed.y, reference.y, strict=True)
    assert not streamed.y.flags.writeable
    assert_same_frame(streamed.frame, reference.frame)
    assert streamed.space == reference.space


def put(root: Path, files: dict[str, pd.DataFrame | bytes], row_group_size: int | None = None) -> Path:
    """Batch 0 of the store at ``root`` with exactly ``files``."""
    path = root / "batches" / "0"
    path.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, bytes):
            (path / name).write_bytes(content)
        elif name.endswith(".parquet"):
            content.to_parquet(path / name, index=False, row_group_size=row_group_size)
        else:
            content.to_csv(path / name, index=False)
    (path / "_SUCCESS").touch()
    return path


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 1000 rows and parquet passes of 2 columns: a batch of 10 500 rows is many."""
    monkeypatch.setattr(store_module, "CHUNK_ROWS", 1000)
    monkeypatch.setattr(tables, "PARQUET_COLUMNS_PER_PASS", 2)


N = 10_500  # ten full chunks of 1000 rows and a partial one


def mixed_frame(seed: int = 0, n: int = N) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "f64": rng.standard_normal(n),
        "i64": rng.integers(-10**12, 10**12, n),
        "flag": rng.random(n) < 0.3,
        "u8": rng.integers(0, 255, n).astype(np.uint8),
        "text": rng.choice(["a", "bb", "ccc"], n),               # an extra column: ignored
        "f32": rng.standard_normal(n).astype(np.float32),
        "label": rng.integers(0, 5, n),
        "i32": rng.integers(-1000, 1000, n).astype(np.int32),
    })


# --------------------------------------------------------------------------------------------
# (a) many chunks read back as the whole file
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "row_group_size"), [("parquet", None), ("parquet", 3333), ("csv", None)])
def test_batch_of_many_chunks_reads_as_the_whole_file(tmp_path, small_chunks, fmt, row_group_size):
    def frame(seed, n):
        data = mixed_frame(seed, n)
        if fmt == "parquet":  # nullable dtypes survive a parquet round trip, not a csv one
            data = data.assign(nullable=pd.array(np.arange(n) % 7, dtype="Int64"),
                               boolean=pd.array(np.arange(n) % 2 == 0, dtype="boolean"))
        return data

    data, queries = frame(0, N), frame(1, 4321)
    path = put(tmp_path, {f"data.{fmt}": data, f"queries.{fmt}": queries}, row_group_size)
    store = BatchStore(tmp_path)
    data_path, query_path = path / f"data.{fmt}", path / f"queries.{fmt}"
    numbers = [c for c in data.columns if c not in ("label", "text")][::-1]
    tuned = FeatureSpace.fit(data, infer_kinds(data, ["text", *numbers]))  # standard scaling
    # by default every column but the target, the text column too (one-hot); a features list;
    # the space fixed at tune (its features and kinds, standard scaling)
    for features, space in ((None, None), (numbers, None), (None, tuned)):
        batch = store.read(0, target="label", features=features, space=space)
        reference = whole_file_read(data_path, "label", features, space)
        assert_rows_on_demand_are_those_of_X(batch, reference.X)
        assert_same_outcome(Read(batch.X, batch.y, batch.frame, batch.space), reference)
        # the queries: every feature, in the data's space
        expected = whole_file_read(query_path, "label", None, reference.space)
        assert_same_outcome(Read(batch.queries, batch.query_labels, batch.query_frame, batch.space), expected)
        assert batch.X.shape == (N, len(reference.space.columns))
        assert batch.queries.shape == (4321, len(reference.space.columns))
    assert tuned.columns[:3] == ("text=a", "text=bb", "text=ccc")


def assert_rows_on_demand_are_those_of_X(batch, X) -> None:
    """A batch with a queries file computes ``X`` on first use: until then ``coordinates`` gives
    rows on demand (indices, a slice, a subset's rows), each equal to those of the whole read's X."""
    rng = np.random.default_rng(5)
    rows, index = np.sort(rng.choice(N, 300, replace=False)), np.sort(rng.choice(N, 2000, replace=False))
    view = batch.coordinates()
    assert isinstance(view, RowsOnDemand) and view.shape == X.shape == (batch.n_rows, X.shape[1])
    np.testing.assert_array_equal(view[rows], X[rows], strict=True)
    np.testing.assert_array_equal(view[7:19], X[7:19], strict=True)
    subset = batch.coordinates(index)
    assert subset.shape == (2000, X.shape[1]) and not subset[np.arange(3)].flags.writeable
    np.testing.assert_array_equal(subset[np.arange(0, 2000, 7)], X[index][::7], strict=True)
    assert isinstance(batch.coordinates(), RowsOnDemand)       # nothing above computed X whole
    whole = batch.X
    assert batch.coordinates() is whole and batch.X is whole     # computed once, then kept
    np.testing.assert_array_equal(batch.coordinates(index), X[index], strict=True)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_string_target_of_many_chunks(tmp_path, small_chunks, fmt):
    rng = np.random.default_rng(3)
    data = pd.DataFrame({"x": rng.standard_normal(N), "label": rng.choice(["cat", "dog"], N)})
    put(tmp_path, {f"data.{fmt}": data})
    batch = BatchStore(tmp_path).read(0, target="label")
    assert batch.y.dtype == object and list(batch.y) == list(data["label"])
    np.testing.assert_array_equal(batch.X, data[["x"]].to_numpy(), strict=True)


def test_only_the_needed_columns_are_read(tmp_path, small_chunks, monkeypatch):
    data = mixed_frame()
    put(tmp_path, {"data.parquet": data, "queries.csv": data.drop(columns=["label"])})
    asked: list[tuple[str, list[str]]] = []
    for table in (tables.ParquetTable, tables.CsvTable):
        real = table.chunks

        def spy(self, names, chunk_rows, real=real):
            asked.append((self.path.name, list(names)))
            return real(self, names, chunk_rows)

        monkeypatch.setattr(table, "chunks", spy)
    BatchStore(tmp_path).read(0, target="label", features=["f64", "u8", "i32"])
    assert asked == [("data.parquet", ["f64", "u8"]), ("data.parquet", ["i32"]),
                     ("queries.csv", ["f64", "u8", "i32"])]


@pytest.mark.parametrize(
    "raw",
    [
        b"x,label\r1.5,0\r2.5,1\r3.5,0\r",                       # old Mac line ends: no \\n to count
        b"x,label\n\n1.5,0\n\n\n2.5,1\n3.5,0\n\n",               # blank lines: fewer rows than lines
        b'x,label\n1.5,"a\nb"\n2.5,c\n3.5,"d\n\ne"\n',          # quoted line breaks in the target
        b"x,label\n1.5,0\n2.5,1\n3.5,0",                         # no final line end
    ],
)
def test_csv_row_estimate_is_corrected(tmp_path, monkeypatch, raw):
    monkeypatch.setattr(store_module, "CHUNK_ROWS", 2)
    path = put(tmp_path, {"data.csv": raw})
    streamed = streamed_read(BatchStore(tmp_path), "label", None)
    assert_same_outcome(streamed, whole_file_read(path / "data.csv", "label", None))
    np.testing.assert_array_equal(streamed[0], [[1.5], [2.5], [3.5]])


# --------------------------------------------------------------------------------------------
# (b) errors are about the whole file, whichever chunks the bad values are in
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_nan_and_inf_counts_are_totals_over_every_chunk(tmp_path, small_chunks, fmt):
    data = mixed_frame()
    data["f64"] = data["f64"].astype(np.float64)
    data.loc[[5, 1500, 7001, N - 1], "f64"] = [np.nan, np.inf, -np.inf, np.nan]   # chunks 0, 1, 7, 10
    data.loc[[9999], "f32"] = np.nan                                              # a later feature
    put(tmp_path, {f"data.{fmt}": data})
    with pytest.raises(BatchStoreError) as raised:
        BatchStore(tmp_path).read(0, target="label", features=["i64", "f64", "f32"])
    assert str(raised.value) == (
        f"batch 0: column 'f64' has 4 NaN/inf values in data.{fmt}; expected finite numbers"
    )
    with pytest.raises(BatchStoreError, match=r"column 'f32' has 1 NaN/inf values"):
        BatchStore(tmp_path).read(0, target="label", features=["i64", "f32"])


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_missing_target_count_is_a_total_over_every_chunk(tmp_path, small_chunks, fmt):
    data = mixed_frame()
    data["label"] = data["label"].astype(np.float64)
    data.loc[[0, 2500, 2501, 10_400], "label"] = [np.nan, np.inf, np.nan, np.nan]
    put(tmp_path, {f"data.{fmt}": data})
    with pytest.raises(BatchStoreError) as raised:
        BatchStore(tmp_path).read(0, target="label", features=["f64"])
    assert str(raised.value) == (
        f"batch 0: column 'label' (the target) has 4 NaN/inf/missing values in data.{fmt}; "
        "expected a label in every row"
    )


def test_a_type_found_in_a_late_chunk_is_the_whole_columns_type(tmp_path, small_chunks):
    # parquet: a bool column with a null only in the last chunk is an object column: text
    flags = pd.Series([True, False] * (N // 2), dtype=object)
    flags[N - 3] = None
    data = pd.DataFrame({"x": np.arange(N, dtype=float), "b": flags, "label": np.arange(N) % 2})
    path = put(tmp_path, {"data.parquet": data})
    store = BatchStore(tmp_path)
    expected = whole_file_read(path / "data.parquet", "label", None)
    assert expected.frame["b"].dtype == object and expected.space.columns == ("x", "b=False", "b=True")
    assert_same_outcome(streamed_read(store, "label", None), expected)
    # where booleans were at tune, that text is refused
    space = FeatureSpace.fit(data.assign(b=data["b"].fillna(False).astype(bool)), {"x": "numeric", "b": "boolean"})
    expected = whole_file_read(path / "data.parquet", "label", None, space)
    assert expected == (
        "batch 0: column 'b' has type object; expected booleans (its kind at tune) (in data.parquet)"
    )
    assert_same_outcome(streamed_read(store, "label", None, space), expected)


@pytest.mark.parametrize(
    "late_values",
    [
        {"a": "oops"},        # text in one chunk of a number column: the whole column is text
        {"a": "True"},        # bools in one chunk of a number column: text for a whole-file read
        {"b": "1.5"},         # a float in one chunk of an int column: a float column, fine
        {"label": "cat"},     # text in one chunk of an int target: the whole target is text
        {"label": "2.5"},     # a float in one chunk of an int target: a float target
    ],
)
def test_csv_chunks_that_disagree_on_a_type_read_as_the_whole_file(tmp_path, small_chunks, late_values):
    n = 3500
    lines = ["a,b,label"] + [f"{i * 0.5},{i},{i % 3}" for i in range(n)]
    row = {"a": str(3000 * 0.5), "b": "3000", "label": "0"} | late_values
    lines[1 + 3000] = ",".join(row[c] for c in ("a", "b", "label"))
    path = put(tmp_path, {"data.csv": ("\n".join(lines) + "\n").encode()})
    # as read (text a categorical), and where numbers were at tune (text in 'a' refused)
    for space in (None, FeatureSpace.numeric(["a", "b"])):
        reference = whole_file_read(path / "data.csv", "label", None, space)
        assert_same_outcome(streamed_read(BatchStore(tmp_path), "label", None, space), reference)
        assert isinstance(reference, str) == ("a" in late_values and space is not None)


def test_first_failing_feature_in_order_is_reported_even_when_found_last(tmp_path, small_chunks):
    # 'late' turns to text only in the last chunk, 'early' is missing: the order of features
    # decides, as in a whole-file read (text is refused where numbers were at tune)
    lines = ["late,x,label"] + [f"{i},{i},0" for i in range(N)]
    lines[-1] = "text,1,0"
    path = put(tmp_path, {"data.csv": ("\n".join(lines) + "\n").encode()})
    store = BatchStore(tmp_path)
    with pytest.raises(BatchStoreError, match=r"^batch 0: column 'late' has type .*; expected numbers \(its kind"):
        store.read(0, target="label", space=FeatureSpace.numeric(["late", "early"]))
    with pytest.raises(BatchStoreError, match=r"^batch 0: data.csv has no column 'early'"):
        store.read(0, target="label", space=FeatureSpace.numeric(["early", "late"]))
    with pytest.raises(BatchStoreError, match=r"^batch 0: data.csv has no column 'early'"):
        store.read(0, target="label", features=["late", "early"])   # as read, 'late' is text: fine
    # as read, 'late' is text throughout (the whole column's type), as in a whole-file read
    streamed = streamed_read(store, "label", ["late"])
    assert kind_of(streamed.frame["late"].dtype) == "categorical"
    assert_same_outcome(streamed, whole_file_read(path / "data.csv", "label", ["late"]))


value_lists = {
    "float": st.lists(st.sampled_from([0.5, -1.0, 3.0, np.nan, np.inf]), min_size=1, max_size=9),
    "int": st.lists(st.integers(-3, 3), min_size=1, max_size=9),
    "bool": st.lists(st.booleans(), min_size=1, max_size=9),
    "text": st.lists(st.sampled_from(["a", "b", "1", "2.5", "True"]), min_size=1, max_size=9),
    "maybe": st.lists(st.sampled_from([None, 1, 2, True, 0.5]), min_size=1, max_size=9),
}


def space_at_tune(kind: str | None, features: list[str] | None) -> FeatureSpace | None:
    """A space fixed at tune giving every feature ``kind`` (raw scaling); None for no space."""
    if kind is None:
        return None
    names = tuple(features or ["x1", "x2"])
    categories = ("1", "2.5", "True", "a") if kind == "categorical" else ()
    n = len(names)
    return FeatureSpace(names, (kind,) * n, "raw", (0.0,) * n, (1.0,) * n, (categories,) * n)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(kinds=st.lists(st.sampled_from(sorted(value_lists)), min_size=3, max_size=3), data=st.data(),
       fmt=st.sampled_from(["parquet", "csv"]), chunk_rows=st.integers(1, 4),
       features=st.sampled_from([None, ["x1", "x2"], ["x2", "x1"], ["x1", "x3"]]),
       at_tune=st.sampled_from([None, None, "numeric", "boolean", "categorical"]))
def test_streamed_read_is_the_whole_file_read_for_any_chunk_size(kinds, data, fmt, chunk_rows, features, at_tune):
    columns = {name: data.draw(value_lists[kind]) for name, kind in zip(("x1", "x2", "label"), kinds)}
    n = min(map(len, columns.values()))
    frame = pd.DataFrame({k: pd.Series(v[:n], dtype=object if k == "maybe" else None) for k, v in columns.items()})
    space = space_at_tune(at_tune, features)

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = put(Path(tmp), {f"data.{fmt}": frame})
        except (ValueError, TypeError):  # pyarrow cannot write mixed object columns: no batch
            return
        try:
            reference = whole_file_read(path / f"data.{fmt}", "label", features, space)
        except (ValueError, TypeError):
            return
        store_module.CHUNK_ROWS, saved = chunk_rows, store_module.CHUNK_ROWS
        try:
            streamed = streamed_read(BatchStore(tmp), "label", features, space)
        finally:
            store_module.CHUNK_ROWS = saved
    if isinstance(reference, str) and reference.startswith("batch 0: data") and "no column" in reference:
        assert isinstance(streamed, str) and "no column" in streamed
        return
    assert_same_outcome(streamed, reference)


# --------------------------------------------------------------------------------------------
# (c) bounded memory
# --------------------------------------------------------------------------------------------

# One read in a fresh interpreter: tracemalloc sees numpy buffers and Python objects, pyarrow's
# default pool high-water mark the arrow buffers (a fresh process: nothing else raised it). What
# the read returns (X and the frame) may live in either: the transient bytes are the two peaks,
# as if simultaneous (an upper bound), less X and the frame.
_MEASURE = textwrap.dedent("""
    import json, sys, tracemalloc
    import numpy as np, pandas as pd, pyarrow as pa
    from cara_mlflow.features import FeatureSpace, infer_kinds
    from cara_mlflow.store import BatchStore

    root, mode = sys.argv[1], sys.argv[2]
    store = BatchStore(root)

    def read(batch_id):
        if mode == "whole-file":  # the file into one frame, as before issue 6, then X of it
            whole = pd.read_parquet(store.info(batch_id).path / "data.parquet")
            frame = whole[[c for c in whole.columns if c != "label"]]
            kinds = infer_kinds(frame, tuple(frame.columns))
            X = FeatureSpace.fit(frame, kinds, scaling="raw").transform(frame)
            assert np.isfinite(X).all()
            return X, frame, whole["label"].to_numpy()
        batch = store.read(batch_id, target="label")
        return batch.X, batch.frame, batch.y

    read(1)  # a tiny batch first: lazy imports and first-use allocations are not counted
    pool = pa.default_memory_pool()
    arrow_before = pool.max_memory()
    tracemalloc.start()
    X, frame, y = read(0)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"X": X.nbytes, "frame": int(frame.memory_usage(deep=True).sum()), "y": y.nbytes,
                      "traced_peak": traced_peak, "arrow_peak": pool.max_memory() - arrow_before}))
""")


def _transient_bytes(root: Path, mode: str) -> tuple[int, dict]:
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(root), mode],
                          capture_output=True, text=True, check=True)
    m = json.loads(done.stdout.strip().splitlines()[-1])
    # an upper bound of the peak beyond what the read returns (X and the frame)
    return max(m["traced_peak"] + m["arrow_peak"] - m["X"] - m["frame"], 0), m


def test_reading_a_large_parquet_batch_needs_little_memory_beyond_X(tmp_path):
    n, d = 400_000, 20
    rng = np.random.default_rng(0)
    data = pd.DataFrame(rng.standard_normal((n, d)), columns=[f"x{j + 1}" for j in range(d)])
    data["label"] = rng.integers(0, 7, n)
    store = BatchStore(tmp_path)
    store.write(0, data)                      # one row group, as pandas writes it
    store.write(1, data.iloc[:10])
    X_bytes = n * d * 8                       # 61 MiB, and as much again for the frame
    streamed, figures = _transient_bytes(tmp_path, "streamed")
    whole, whole_figures = _transient_bytes(tmp_path, "whole-file")
    assert figures["X"] == whole_figures["X"] == X_bytes
    assert X_bytes <= figures["frame"] < X_bytes + 4096 and X_bytes <= whole_figures["frame"] < X_bytes + 4096
    # Measured (pyarrow 25, pandas 3.1), beyond X and the frame: whole-file 136 MiB = 2.2 × X
    # here, growing with n (the arrow table and its pandas blocks, 157 MiB at n = 800 000);
    # streamed 89 MiB = 1.45 × X, of which 61 MiB (one X) is FeatureSpace.transform holding every
    # feature's coordinates as a separate column before joining them: with X filled in place the
    # streamed read needs 31 MiB = 0.5 × X (34 MiB at n = 800 000: the pages and dictionaries of the
    # 8 columns of a pass, a chunk's copies) and the whole-file one 84 MiB.
    assert streamed < 0.75 * X_bytes, (streamed, whole, figures)
    assert streamed < whole / 2, (streamed, whole, figures)
