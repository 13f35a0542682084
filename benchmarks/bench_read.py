"""Benchmark of reading one large batch: the streamed read against the whole-frame read (issue 6).

Writes one batch of ``--rows`` points × ``--features`` float64 features and an integer label
(COVERTYPE-like by default: B_D = 10^6, d = 54) with ``BatchStore.write``, then reads it

  (old) the whole-frame path ``BatchStore.read`` used before issue 6, kept below as
        :func:`old_read`: ``pd.read_parquet`` / ``pd.read_csv`` of the whole file, then a float64
        copy of the feature columns, checked;
  (new) ``BatchStore.read``: the file streamed ``CHUNK_ROWS`` rows at a time into one
        preallocated array;

each in a fresh interpreter, and prints per path the read time (best of ``--repeats`` reads after
a warm-up read, in one interpreter) and, from a single read in another fresh interpreter (after
reading a 10-row batch, so lazy imports are not counted), the peak memory beyond the returned
arrays: the tracemalloc peak (numpy buffers and Python objects), pyarrow's default pool
high-water mark (arrow buffers, which tracemalloc does not see) and the growth of the process's
peak RSS. Both paths return the same arrays (checked).

    python benchmarks/bench_read.py [--rows 1000000] [--features 54] [--fmt parquet]
                                    [--repeats 3] [--chunk-rows 65536]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from cara_mlflow import store as store_module
from cara_mlflow.store import BatchStore

TARGET = "label"


def old_read(path: Path, target: str) -> tuple[np.ndarray, np.ndarray]:
    """The read of ``BatchStore.read`` before issue 6 (data file only), for comparison."""
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, low_memory=False)
    features = [str(c) for c in frame.columns if c != target]
    X = np.ascontiguousarray(frame.loc[:, features].to_numpy(dtype=np.float64, na_value=np.nan))
    bad = np.count_nonzero(~np.isfinite(X), axis=0)
    assert not bad.any()
    column = frame[target]
    assert not column.isna().any()
    y = column.to_numpy()
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


def _status_bytes(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, from /proc (Linux).

    Not ``getrusage``'s ``ru_maxrss``: after fork + exec it keeps the parent's peak."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def worker(mode: str, root: str, measure: str, chunk_rows: int) -> dict:
    """One read in this (fresh) interpreter; what it cost."""
    import pyarrow as pa

    store_module.CHUNK_ROWS = chunk_rows
    store = BatchStore(root)

    def read(batch_id: int = 0):
        if mode == "old":
            path = next(store.info(batch_id).path.glob("data.*"))
            return old_read(path, TARGET)
        batch = store.read(batch_id, target=TARGET)
        return batch.X, batch.y

    out: dict = {"mode": mode}
    if measure.startswith("time"):
        read()  # warm-up: lazy imports, file in the page cache
        times = []
        for _ in range(int(measure.split(":")[1])):
            start = time.perf_counter()
            X, y = read()
            times.append(time.perf_counter() - start)
            del X, y
        out["seconds"] = min(times)
    else:
        read(1)  # a tiny batch first: lazy imports are not counted
        rss_before = _status_bytes("VmRSS")
        pool_before = pa.default_memory_pool().max_memory()
        tracemalloc.start()
        X, y = read()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        result = X.nbytes + y.nbytes
        out.update(
            result_bytes=result,
            tracemalloc_peak=peak,
            tracemalloc_beyond_result=peak - result,
            arrow_pool_peak=pa.default_memory_pool().max_memory() - pool_before,
            arrow_backend=pa.default_memory_pool().backend_name,
            rss_peak_growth=_status_bytes("VmHWM") - rss_before,
        )
        out["checksum"] = [float(X.sum()), int(np.asarray(y, dtype=np.int64).sum())]
    return out


def run_worker(mode: str, root: Path, measure: str, chunk_rows: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, str(root), measure, str(chunk_rows)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        mode, root, measure, chunk_rows = sys.argv[2:6]
        print(json.dumps(worker(mode, root, measure, int(chunk_rows))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=54)
    parser.add_argument("--fmt", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-rows", type=int, default=store_module.CHUNK_ROWS)
    args = parser.parse_args()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"numpy {np.__version__}, pandas {pd.__version__}, pyarrow {__import__('pyarrow').__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        data = pd.DataFrame(rng.standard_normal((args.rows, args.features)),
                            columns=[f"x{j + 1}" for j in range(args.features)])
        data[TARGET] = rng.integers(0, 7, args.rows)
        BatchStore(tmp).write(0, data, fmt=args.fmt)
        BatchStore(tmp).write(1, data.iloc[:10], fmt=args.fmt)
        del data
        size = next(BatchStore(tmp).info(0).path.glob("data.*")).stat().st_size
        print(f"batch: {args.rows} rows x {args.features} float64 features + int label, "
              f"{args.fmt} file {size / 2**20:.1f} MiB, chunk {args.chunk_rows} rows")

        rows = {}
        for mode in ("old", "new"):
            memory = run_worker(mode, Path(tmp), "memory", args.chunk_rows)
            timed = run_worker(mode, Path(tmp), f"time:{args.repeats}", args.chunk_rows)
            rows[mode] = memory | {"seconds": timed["seconds"]}
        assert rows["old"]["checksum"] == rows["new"]["checksum"], "the two paths disagree"

    mib = 2**20
    result = rows["new"]["result_bytes"]
    print(f"returned arrays (X + y): {result / mib:.1f} MiB; arrow pool: {rows['new']['arrow_backend']}")
    print(f"| path | read time (best of {args.repeats}) | tracemalloc peak (X, y included) | "
          "arrow pool peak | peak RSS growth |")
    print("|---|---:|---:|---:|---:|")
    for mode, label in (("old", "old: whole frame"), ("new", "new: streamed")):
        r = rows[mode]
        print(f"| {label} | {r['seconds']:.2f} s | {r['tracemalloc_peak'] / mib:.1f} MiB | "
              f"{r['arrow_pool_peak'] / mib:.1f} MiB | {r['rss_peak_growth'] / mib:.1f} MiB |")
    old, new = rows["old"], rows["new"]
    print(f"new/old: time {new['seconds'] / old['seconds']:.2f}x, peak RSS growth "
          f"{new['rss_peak_growth'] / old['rss_peak_growth']:.2f}x")


if __name__ == "__main__":
    main()
