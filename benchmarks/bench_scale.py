"""Does a step's cost grow with the batch? A Keep step on a 5·10⁶-row batch vs one on 5·10⁴ rows
(issue 20, part 1; target ≤ 1.3×).

One synthetic stream, d = 10 (Gaussian rows, a slowly turning linear boundary with 10% label
noise, 2 000 queries per batch), a 50-tree random forest of depth ≤ 12, tuned on 6
offline batches of 5·10⁴ rows (κ in the middle of the range where tune says decisions change,
so the bound is 1% of the larger of κ and Ψ_now, not a loose one), initialised on batch 5. Two
stores share everything but batch 6: 5·10⁴ rows in "small", ``--rows`` (5·10⁶) in "large",
drawn from the same distribution as batch 5, so the decision is Keep.

Each timed run is one ``cara-mlflow step`` process (a fresh interpreter, as cron runs it) on a
fresh copy of its store's tracking database (the batches are shared through a link), the two
sizes alternating so that a noisy machine slows both alike. Three variants:

* small: the 5·10⁴-row step (every row predicted, as always);
* large: the 5·10⁶-row step, first term from a row sample (``auto``);
* large, every row: the same step with the row sample switched off (what a step did before).

Prints the medians, large/small (target ≤ 1.3) and every-row/small, and the rows predicted.

    python benchmarks/bench_scale.py [--rows 5000000] [--runs 5] [--kappa K]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cara_mlflow.store import BatchStore

D, NOISE, SMALL, QUERIES = 10, 0.1, 50_000, 2000
EVERY_ROW = "import cara_mlflow.lifecycle.observe as o; o.ROW_SAMPLE_MIN_ROWS = 10**15; " \
            "from cara_mlflow.cli import main; import sys; main(sys.argv[1:])"


def batch(rng, t: int, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Batch ``t`` of the stream: n rows and :data:`QUERIES` queries (the paper's Ψ sums over the
    queries and averages over the rows: the same queries per batch keep Ψ comparable across sizes)."""
    angle = 0.03 * t
    w = np.zeros(D)
    w[0], w[1] = np.cos(angle), np.sin(angle)
    X = rng.normal(size=(n, D)).astype(np.float32)
    y = ((X @ w) > 0).astype(np.int8)
    flip = rng.random(n) < NOISE
    y[flip] = 1 - y[flip]
    cols = [f"x{i}" for i in range(D)]
    data = pd.DataFrame(X, columns=cols)
    data["label"] = y
    queries = pd.DataFrame(rng.normal(size=(QUERIES, D)).astype(np.float32), columns=cols)
    return data, queries


def cli(store: Path, *args: str, code: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(CARA_NAME="scale", CARA_STORE=str(store), MLFLOW_DISABLE_TELEMETRY="true")
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "cara_mlflow.cli", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=store.parent)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def kappa_in_range(text: str) -> float:
    """The middle (geometric) of the range where tune's note says the ORACLE's decisions change."""
    found = re.search(r"every offline batch for κ ≤ ([0-9.e+-]+) and never for κ ≥ ([0-9.e+-]+)", text)
    if found is None:
        raise SystemExit(f"tune gave no κ range:\n{text}")
    return float(np.sqrt(float(found.group(1)) * float(found.group(2))))


def build(root: Path, rows: int, kappa: float | None) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    small = root / "small" / "store"
    for t in range(7):
        data, queries = batch(rng, min(t, 5), SMALL)              # batch 6 from batch 5's distribution: a Keep
        BatchStore(small).write(t, data, queries=queries)
    if kappa is None:
        out = cli(small, "tune", "--offline", "0:5", "--kappa", "1", "--model", "rf", "--n-estimators", "50",
                  "--max-depth", "12")
        kappa = kappa_in_range(out.stdout + out.stderr)
    cli(small, "tune", "--offline", "0:5", "--kappa", f"{kappa:.6g}", "--model", "rf", "--n-estimators", "50",
        "--max-depth", "12")
    cli(small, "init", "--batch", "5")
    large = root / "large" / "store"
    shutil.copytree(small, large)
    shutil.rmtree(large / "batches" / "6")
    data, queries = batch(np.random.default_rng(6), 5, rows)       # batch 5's distribution: a Keep
    BatchStore(large).write(6, data, queries=queries)
    print(f"κ = {kappa:.4g}; batch 6: {SMALL} rows in small, {rows} in large", flush=True)
    return small, large


def fresh_copy(store: Path, scratch: Path) -> Path:
    """The store's tracking database and artifacts copied, its batches linked: a step to time."""
    if scratch.exists():
        shutil.rmtree(scratch)
    target = scratch / "store"
    target.mkdir(parents=True)
    for item in store.iterdir():
        if item.name == "batches":
            (target / "batches").symlink_to(item)
        elif item.is_dir():
            shutil.copytree(item, target / item.name)
        elif not item.name.startswith("."):
            shutil.copy2(item, target / item.name)
    return target


def timed_step(store: Path, scratch: Path, code: str | None = None) -> tuple[float, dict]:
    copy = fresh_copy(store, scratch)
    start = time.perf_counter()
    done = cli(copy, "step", "--json", code=code)
    seconds = time.perf_counter() - start
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["decision"] == "keep", result
    from cara_mlflow.tracking import Registry, default_tracking_uri

    run = Registry(default_tracking_uri(copy), "scale").runs.find("batch", batch=6)[0]
    return seconds, run.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kappa", type=float, default=None,
                        help="κ instead of the middle of tune's range (a larger κ: a looser bound, 1%% of κ)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        small, large = build(Path(tmp), args.rows, args.kappa)
        times: dict[str, list[float]] = {"small": [], "large": [], "large, every row": []}
        metrics = {}
        for i in range(args.runs):
            for name, store, code in (("small", small, None), ("large", large, None),
                                      ("large, every row", large, EVERY_ROW)):
                # a new path per run: MLflow keeps one engine per database URI in this process
                scratch = Path(tmp) / f"run-{i}-{len(metrics)}-{name.replace(' ', '').replace(',', '')}"
                seconds, metrics[name] = timed_step(store, scratch, code)
                shutil.rmtree(scratch)
                times[name].append(seconds)
        median = {k: statistics.median(v) for k, v in times.items()}
        for name, values in times.items():
            m = metrics[name]
            print(f"{name:>17}: median {median[name]:.2f} s (runs {', '.join(f'{v:.2f}' for v in values)}); "
                  f"rows {int(m['n_data'])}, predicted {int(m.get('n_predicted', m['n_data']))}, "
                  f"Ψ_now {m['psi_now']:.5g} ± {m.get('psi_now_half_width', 0.0):.3g}, κ {m['kappa']:.4g}")
        print(f"large / small = {median['large'] / median['small']:.2f} (target ≤ 1.3); "
              f"every row / small = {median['large, every row'] / median['small']:.2f}")


if __name__ == "__main__":
    main()
