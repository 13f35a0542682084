"""Soak: step a long synthetic stream (tiny models, sqlite) batch by batch in one process.

Reports the wall time of each step (median over the first and the last 50 steps, and their
ratio), open file descriptors and leftover temporary directories at the start and the end, so
growth with history — per-step cost, leaked fds, temp dirs left by MLflow or us — shows up.
The steps run as ``cara-mlflow step --all`` runs them (the library, one process, the store lock
held). κ is set high enough that most steps Keep; every Retrain runs the real MLflow project.

Usage (from the repository root):
    .venv/bin/python benchmarks/soak.py [--batches 520] [--batch-size 50]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=520, help="batches in the stream (10 offline/init)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--kappa", type=float, default=40.0)
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

    work = Path(tempfile.mkdtemp(prefix="cara-soak-"))
    tmp_root = work / "tmp"
    tmp_root.mkdir()
    os.environ["TMPDIR"] = str(tmp_root)
    tempfile.tempdir = str(tmp_root)

    from click.testing import CliRunner

    from cara_mlflow import lifecycle
    from cara_mlflow.cli import cli
    from cara_mlflow.store import BatchStore
    from cara_mlflow.tracking import Registry, default_artifact_root, default_tracking_uri

    store_dir = work / "store"
    runner = CliRunner()
    env = {"CARA_NAME": "soak", "CARA_STORE": str(store_dir), "MLFLOW_TRACKING_URI": ""}
    for command in (["make-stream", "gauss-d", "--out", str(store_dir), "--n-batches", str(args.batches),
                     "--batch-size", str(args.batch_size)],
                    ["tune", "--offline", "0:9", "--kappa", str(args.kappa), "--policy", "cara-t", "--model", "lr"],
                    ["init", "--batch", "9"]):
        result = runner.invoke(cli, command, env=env)
        assert result.exit_code == 0, result.output
    store = BatchStore(store_dir)
    registry = Registry(default_tracking_uri(store.root), "soak", artifact_root=default_artifact_root(store.root))

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    times, actions = [], []
    start_fds = start_tmp = None
    clock_all = time.perf_counter()
    while True:
        clock = time.perf_counter()
        result = lifecycle.step(store, registry)      # takes the store lock, as cron's step does
        if result.status in ("nothing", "waiting"):
            break
        times.append(time.perf_counter() - clock)
        actions.append(result.decision)
        if len(times) == 5:                        # after warm-up: imports, caches, connections
            start_fds, start_tmp = fds(), len(list(tmp_root.iterdir()))
        if len(times) % 100 == 0:
            print(f"{len(times)} steps, last {times[-1]:.3f} s", flush=True)
    total = time.perf_counter() - clock_all
    end_fds, end_tmp = fds(), len(list(tmp_root.iterdir()))
    keeps = [t for t, a in zip(times, actions) if a == "keep"]
    first, last = statistics.median(keeps[:50]), statistics.median(keeps[-50:])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"steps: {len(times)} ({actions.count('retrain')} retrains), total {total:.0f} s")
    print(f"keep step, median of the first 50: {first * 1000:.0f} ms; of the last 50: {last * 1000:.0f} ms; "
          f"ratio last/first {last / first:.2f}")
    print(f"open fds after warm-up {start_fds}, at the end {end_fds}; temp dirs {start_tmp} -> {end_tmp}")


if __name__ == "__main__":
    main()
