"""Benchmark of one cron step: `cara-mlflow step` deciding Keep vs the bare minimum any step needs.

Sets up a store (CovCon-D, 1000-point batches, the default Random Forest, κ so high that every
decision is Keep), then alternates, on the same store and sqlite tracking DB:

  (a) `cara-mlflow step`: lock, read the batch, load production + its misclassified rows, Ψ̄,
      decide, log the batch run and the timeline point, commit;
  (b) a bare process: import mlflow, load the production model by alias, log one run with two
      metrics — the floor of any step that records its decision in MLflow.

Both are fresh interpreters that exit normally (neither skips interpreter shutdown). Prints the
medians and their ratio (target ≤ 1.15×, issue 11; ≤ 1.3× before), and the wall time of
`cara-mlflow --help` (target < 0.5 s).

With ``--history N`` it measures instead whether a step's cost grows with the history already
processed (issue 6 §2): stores of one long synthetic stream (GAUSS-D, tiny batches, SGD
logistic regression, κ = 10⁹ so every decision is Keep), "early" initialised at batch 9 and
left there, "late" brought to batch N by one ``step --all`` (its batch N held back by hiding
its ``_SUCCESS``), and "small", like "early" but holding only the batches it measures. Then
single ``cara-mlflow step`` processes (fresh interpreters, as cron runs them) alternate between
the stores — batch ~10 vs batch ~N — so a noisy machine slows every side alike. It prints the
medians, late/early (same store size: growth with the MLflow history, target ≤ 1.2) and
late/small (the store grows as well).

    python benchmarks/bench_step.py [--runs 7] [--batch-size 1000]
    python benchmarks/bench_step.py --history 1000 [--runs 7] [--batch-size 50]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
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


def history(args, cara):
    """Step latency at batch ~10 vs batch ~``args.history`` (each step a fresh process)."""
    from cara_mlflow.store import SUCCESS_MARKER, BatchStore

    first, late = 10, args.history
    if late < first + args.runs:
        raise SystemExit(f"--history: expected at least {first + args.runs}, got {late}")
    batch_size = args.batch_size or 50
    n_batches = late + args.runs + 1
    with tempfile.TemporaryDirectory() as tmp:
        # one stream, three stores: "early" and "late" hold all of it (so the store's size is the
        # same on both sides and only the MLflow history differs); "small" holds only the batches
        # up to the ones it measures, as when a producer is that far (store listing counts too)
        stream = Path(tmp) / "stream"
        timed(cara + ["make-stream", "gauss-d", "--out", str(stream), "--n-batches", str(n_batches),
                      "--batch-size", str(batch_size)], {**os.environ})
        sides = {"early": n_batches, "small": first + args.runs, "late": n_batches}
        envs = {}
        for label, n in sides.items():
            store = Path(tmp) / label
            (store / "batches").mkdir(parents=True)
            for info in BatchStore(stream).list()[:n]:
                shutil.copytree(info.path, store / "batches" / info.path.name)
            env = {**os.environ, "CARA_NAME": "bench", "CARA_STORE": str(store),
                   "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
            env.pop("MLFLOW_TRACKING_URI", None)
            for cmd in (["tune", "--offline", "0:9", "--kappa", "1e9", "--model", "lr"], ["init", "--batch", "9"]):
                timed(cara + cmd, env)
            envs[label] = env
        # bring the late store to batch `late`: hold that batch back so `step --all` stops before it
        marker = BatchStore(Path(tmp) / "late").info(late).path / SUCCESS_MARKER
        held = marker.with_name(SUCCESS_MARKER + ".held")
        marker.rename(held)
        t_all, out = timed(cara + ["step", "--all"], envs["late"])
        held.rename(marker)
        lines = out.strip().splitlines()
        if f"waiting for batch {late}" not in lines[-1]:
            raise SystemExit(f"step --all did not stop before batch {late}: {lines[-1]}")
        n_all = len(lines) - 1
        retrains_all = sum(" retrain (" in line for line in lines)
        timings = {label: [] for label in sides}
        for _ in range(args.runs):
            for label in sides:                  # alternated: a noisy machine slows all sides alike
                elapsed, out = timed(cara + ["step"], envs[label])
                if " keep (" not in out:
                    raise SystemExit(f"expected a Keep decision ({label}), got: {out}")
                timings[label].append(elapsed)
        print(f"{platform.machine()}, {os.cpu_count()} cores, python {sys.version.split()[0]}; gauss-d, "
              f"batch size {batch_size}, lr, kappa 1e9; {args.runs} single-step processes per side, alternated")
        print(f"step --all from batch 10 to {late - 1}: {n_all} batches in {t_all:.0f} s "
              f"({t_all / max(n_all, 1) * 1000:.0f} ms per batch in one process), {retrains_all} retrains")
        med = {k: statistics.median(v) for k, v in timings.items()}
        rows = {"early": f"batch {first}..{first + args.runs - 1}, store of {n_batches} batches",
                "small": f"batch {first}..{first + args.runs - 1}, store of {first + args.runs} batches",
                "late": f"batch {late}..{late + args.runs - 1}, store of {n_batches} batches"}
        for label, text in rows.items():
            print(f"step at {text:42s} median {med[label]:.3f} s   runs {[round(s, 3) for s in timings[label]]}")
        print(f"late/early = {med['late'] / med['early']:.3f}   (same store size: growth with the MLflow "
              f"history; target <= 1.2)")
        print(f"late/small = {med['late'] / med['small']:.3f}   (the store grows as well)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="points per batch (default 1000; 50 with --history)")
    parser.add_argument("--history", type=int, default=None, metavar="N",
                        help="measure step latency at batch ~10 vs batch ~N instead")
    args = parser.parse_args()

    cara = [sys.executable, "-m", "cara_mlflow.cli"]
    if args.history is not None:
        history(args, cara)
        return
    args.batch_size = args.batch_size or 1000
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
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; "
          f"{args.runs} runs each, batch size {args.batch_size}")
    print(f"(a) cara-mlflow step (Keep)   median {step_median:.2f} s   runs {[round(s, 2) for s in steps]}")
    print(f"(b) bare MLflow step          median {bare_median:.2f} s   runs {[round(s, 2) for s in bares]}")
    print(f"(a)/(b) = {step_median / bare_median:.2f}x   (target <= 1.15)")
    print(f"cara-mlflow --help            median {statistics.median(helps):.3f} s   (target < 0.5)")


if __name__ == "__main__":
    main()
