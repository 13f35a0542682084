"""Benchmark of one cron step: `cara-mlflow step` deciding Keep vs the bare minimum any step needs.

Sets up a store (CovCon-D, 1000-point batches, the default Random Forest, κ so high that every
decision is Keep), then alternates, on the same store and sqlite tracking DB:

  (a) `cara-mlflow step`: lock, read the batch, load production + its misclassified rows, Ψ̄,
      decide, log the batch run and the timeline point, commit;
  (b) a bare process: import mlflow, load the production model by alias, log one run with two
      metrics — the floor of any step that records its decision in MLflow.

Both are fresh interpreters that exit normally (neither skips interpreter shutdown). Prints the
medians and their ratio (target ≤ 1.3×), and the wall time of `cara-mlflow --help` (target < 0.5 s).

    python benchmarks/bench_step.py [--runs 7] [--batch-size 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE = """
import sys, mlflow, mlflow.sklearn
from mlflow import MlflowClient
uri, name = sys.argv[1], sys.argv[2]
mlflow.set_tracking_uri(uri)
model = mlflow.sklearn.load_model(f"models:/{name}@production")
client = MlflowClient(uri)
exp = client.get_experiment_by_name(f"cara/{name}").experiment_id
run = client.create_run(exp, run_name="bare")
client.log_metric(run.info.run_id, "psi_bar", 0.0)
client.log_metric(run.info.run_id, "decision", 0.0)
client.set_terminated(run.info.run_id)
"""


def timed(cmd, env):
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return elapsed, proc.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()

    cara = [sys.executable, "-m", "cara_mlflow.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        env = {**os.environ, "CARA_NAME": "bench", "CARA_STORE": str(store), "MLFLOW_DISABLE_TELEMETRY": "true"}
        env.pop("MLFLOW_TRACKING_URI", None)
        uri = f"sqlite:///{store.resolve()}/mlflow.db"
        n_batches = 6 + args.runs + 1
        for cmd in (["make-stream", "covcon-d", "--out", str(store), "--n-batches", str(n_batches),
                     "--batch-size", str(args.batch_size)],
                    ["tune", "--offline", "0:5", "--kappa", "1e9"], ["init", "--batch", "5"]):
            timed(cara + cmd, env)
        steps, bares = [], []
        for _ in range(args.runs):
            t_step, out = timed(cara + ["step"], env)
            if " keep " not in out:
                raise SystemExit(f"expected a Keep decision, got: {out}")
            t_bare, _ = timed([sys.executable, "-c", BARE, uri, "bench"], env)
            steps.append(t_step)
            bares.append(t_bare)
        helps = [timed(cara + ["--help"], env)[0] for _ in range(5)]

    step_median, bare_median = statistics.median(steps), statistics.median(bares)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; {args.runs} runs each, batch size {args.batch_size}")
    print(f"(a) cara-mlflow step (Keep)   median {step_median:.2f} s   runs {[round(s, 2) for s in steps]}")
    print(f"(b) bare MLflow step          median {bare_median:.2f} s   runs {[round(s, 2) for s in bares]}")
    print(f"(a)/(b) = {step_median / bare_median:.2f}x   (target <= 1.3)")
    print(f"cara-mlflow --help            median {statistics.median(helps):.3f} s   (target < 0.5)")


if __name__ == "__main__":
    main()
