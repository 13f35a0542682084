"""Batches whose data (and queries) are a folder of parquet part files, as Spark, Dask or pyarrow
write a dataset: read as one table, streamed, checked as a single file is checked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import cara_mlflow.store as store_pkg
from cara_mlflow.store import BatchStore, BatchStoreError


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x1": rng.normal(size=n), "n": rng.integers(0, 5, n), "day": rng.choice(["Mon", "Tue"], n),
                         "label": rng.integers(0, 2, n)})


def write_spark_like(folder, frame: pd.DataFrame, n_parts: int) -> None:
    """``frame`` split into ``n_parts`` part files with Spark's names and bookkeeping files beside them."""
    folder.mkdir(parents=True)
    for i, rows in enumerate(np.array_split(np.arange(len(frame)), n_parts)):
        table = pa.Table.from_pandas(frame.iloc[rows].reset_index(drop=True), preserve_index=False)
        pq.write_table(table, folder / f"part-{i:05d}-4c1f2b7e-c000.snappy.parquet", compression="snappy")
        (folder / f".part-{i:05d}-4c1f2b7e-c000.snappy.parquet.crc").write_bytes(b"crc")
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / "_committed_1234").write_text("{}")


def _batch(root, batch_id: int, data: pd.DataFrame, n_parts: int, queries: pd.DataFrame | None = None):
    path = root / "batches" / str(batch_id)
    write_spark_like(path / "data", data, n_parts)
    if queries is not None:
        write_spark_like(path / "queries", queries, 2)
    (path / "_SUCCESS").write_bytes(b"")
    return path


@pytest.mark.parametrize("n_parts", [1, 3, 7])
def test_a_dataset_folder_reads_as_the_same_batch_as_one_file(tmp_path, n_parts, monkeypatch):
    monkeypatch.setattr(store_pkg, "CHUNK_ROWS", 50)   # chunks cross the parts' borders
    frame = _frame(301, seed=n_parts)
    _batch(tmp_path / "parts", 0, frame, n_parts)
    whole = BatchStore(tmp_path / "whole")
    whole.write(0, frame)
    got, want = BatchStore(tmp_path / "parts").read(0, target="label"), whole.read(0, target="label")
    np.testing.assert_array_equal(got.X, want.X)
    np.testing.assert_array_equal(got.y, want.y)
    pd.testing.assert_frame_equal(got.frame, want.frame)
    assert got.space.columns == want.space.columns and got.data_path.name == "data"


def test_a_queries_folder_is_the_batch_queries(tmp_path):
    queries = _frame(10, seed=2).drop(columns="label")
    _batch(tmp_path, 4, _frame(40, seed=1), 3, queries=queries)
    batch = BatchStore(tmp_path).read(4, target="label")
    assert batch.has_query_file and batch.queries.shape == (10, 4)
    np.testing.assert_array_equal(batch.query_frame["x1"].to_numpy(), queries["x1"].to_numpy())


def test_ints_in_some_parts_and_floats_in_others_are_one_float_column(tmp_path):
    path = tmp_path / "batches" / "0" / "data"
    path.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1, 2], "label": [0, 1]}), path / "part-0.parquet")
    pq.write_table(pa.table({"x": [0.5, 1.5], "label": [1, 0]}), path / "part-1.parquet")
    (path.parent / "_SUCCESS").write_bytes(b"")
    batch = BatchStore(tmp_path).read(0, target="label")
    assert batch.frame["x"].dtype == np.float64 and batch.frame["x"].tolist() == [1.0, 2.0, 0.5, 1.5]


def _errors(tmp_path, arrange) -> str:
    frame = _frame(20, seed=3)
    path = _batch(tmp_path, 2, frame, 2)
    arrange(path, frame)
    with pytest.raises(BatchStoreError) as info:
        BatchStore(tmp_path).read(2, target="label")
    message = str(info.value)
    assert "\n" not in message and message.startswith("batch 2")
    return message


def test_a_file_and_a_folder_is_one_line_error(tmp_path):
    message = _errors(tmp_path, lambda path, frame: frame.to_parquet(path / "data.parquet"))
    assert "both data.parquet and data/" in message and "keep one" in message


def test_a_folder_without_parts_or_with_a_stray_file_is_named(tmp_path):
    def empty(path, frame):
        for part in (path / "data").glob("part-*"):
            part.unlink()
    assert "data/ holds no parquet part file" in _errors(tmp_path, empty)


def test_a_stray_csv_in_a_dataset_folder_is_named(tmp_path):
    message = _errors(tmp_path, lambda path, frame: frame.to_csv(path / "data" / "part-9.csv"))
    assert "data/part-9.csv is not a parquet part file" in message


def test_a_part_missing_a_column_is_named(tmp_path):
    def drop(path, frame):
        pq.write_table(pa.table({"x1": [1.0]}), path / "data" / "part-00009.parquet")
    message = _errors(tmp_path, drop)
    assert "part-00009.parquet has no column" in message and "same columns" in message


def test_a_broken_part_is_named(tmp_path):
    message = _errors(tmp_path, lambda path, frame: (path / "data" / "part-00005.parquet").write_bytes(b"nope"))
    assert "cannot read part-00005.parquet" in message


def test_writing_over_an_incomplete_folder_batch_leaves_one_data_file(tmp_path):
    frame = _frame(10, seed=4)
    path = _batch(tmp_path, 1, frame, 2)
    (path / "_SUCCESS").unlink()                   # the producer died before finishing
    store = BatchStore(tmp_path)
    store.write(1, frame)
    assert not (path / "data").exists() and store.read(1, target="label").n_rows == 10


def test_a_partitioned_dataset_folder_is_refused_not_half_read(tmp_path):
    def partition(path, frame):
        (path / "data" / "day=Mon").mkdir()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path / "data" / "day=Mon" / "part-0.parquet")
    message = _errors(tmp_path, partition)
    assert "data/day=Mon/ is a folder" in message and "partitioned" in message


def test_a_part_linking_out_of_the_store_is_refused(tmp_path):
    outside = tmp_path / "elsewhere.parquet"
    _frame(5, seed=8).to_parquet(outside)
    def link(path, frame):
        (path / "data" / "part-00007.parquet").symlink_to(outside)
    message = _errors(tmp_path / "store", link)
    assert "part-00007.parquet is a link" in message and "copy the file in" in message


def test_an_empty_part_and_int32_parts_keep_the_column_types_of_one_file(tmp_path):
    path = tmp_path / "batches" / "0" / "data"
    path.mkdir(parents=True)
    pq.write_table(pa.table({"x": pa.array([1, 2], pa.int32()), "label": [0, 1]}), path / "part-0.parquet")
    pq.write_table(pa.table({"x": pa.array([3], pa.int64()), "label": [1]}), path / "part-1.parquet")
    empty = pa.table({"x": pa.array([], pa.int64()), "label": pa.array([], pa.string())})
    pq.write_table(empty, path / "part-2.parquet")
    (path.parent / "_SUCCESS").write_bytes(b"")
    batch = BatchStore(tmp_path).read(0, target="label")
    assert batch.frame["x"].dtype == np.int64 and batch.frame["x"].tolist() == [1, 2, 3]
    assert batch.y.dtype == np.int64 and batch.y.tolist() == [0, 1, 1]
