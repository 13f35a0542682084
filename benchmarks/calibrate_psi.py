"""Does the documented error bound of ``method="sample"`` / ``"rff"`` hold? Coverage over many seeds.

For a few kinds of input (smooth Gaussian, clustered, sparse one-hot, a COVERTYPE subsample
with the 0-1 errors of a tree), the exact sum is computed once and the estimate is drawn
with ``--seeds`` different seeds. It prints, per input and method: how often the estimate was
within ``rel_error`` of the exact sum (the documented bound: ≈ 99%), how often within its own
reported half-width (the interval's coverage), the worst error, and the mean share of pairs
computed (1.0 would be the exact cost; runs that fell back to exact are counted apart).

    python benchmarks/calibrate_psi.py [--seeds 100] [--rel-error 0.01]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.tree import DecisionTreeClassifier

from cara_mlflow.staleness import pair_sums, resolve_gamma

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "covtype.csv.gz"


def inputs():
    rng = np.random.default_rng(0)
    yield "gaussian d=6, γ=0.05", rng.normal(size=(12000, 6)), rng.normal(size=(8000, 6)), np.ones(8000), 0.05
    centres = rng.normal(size=(5, 6))
    Q = centres[rng.integers(0, 5, 12000)] + rng.normal(size=(12000, 6))
    X = centres[rng.integers(0, 5, 8000)] + rng.normal(size=(8000, 6))
    yield "clustered d=6, γ=0.1", Q, X, (rng.random(8000) < 0.6) * 1.0, 0.1
    def hot(n):
        return sparse.csr_matrix(np.hstack([np.eye(k)[rng.integers(0, k, n)] for k in (40, 25, 12)]))

    Qs, Xs = hot(12000), hot(8000)
    yield "one-hot sparse 77 cols, γ=scale", Qs, Xs, np.ones(8000), resolve_gamma("scale", Xs)
    frame = pd.read_csv(DATA, nrows=120_000)
    y = (frame.pop("Cover_Type").to_numpy() == 2).astype(int)
    Xc = frame.to_numpy(dtype=np.float64)
    span = Xc.max(axis=0) - Xc.min(axis=0)
    Xc = (Xc - Xc.min(axis=0)) / np.where(span > 0, span, 1.0)
    model = DecisionTreeClassifier(max_depth=8, random_state=0).fit(Xc[:20000], y[:20000])
    now = slice(60_000, 120_000)
    wrong = (model.predict(Xc[now]) != y[now]).astype(float)
    yield ("COVERTYPE rows 60k-120k, d=54, γ=scale", Xc[now][rng.choice(60_000, 12000, replace=False)],
           Xc[now], wrong, resolve_gamma("scale", Xc[now]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--rel-error", type=float, default=0.01)
    parser.add_argument("--methods", default="sample,rff")
    args = parser.parse_args()
    print(f"{args.seeds} seeds, rel_error {args.rel_error:g}, confidence 0.99\n")
    print("| input | method | within rel_error | within own half-width | worst error | "
          "pairs computed / exact | fell back to exact |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, Q, X, w, gamma in inputs():
        exact = pair_sums(Q, X, w, gamma, method="exact")
        for method in args.methods.split(","):
            errors, inside, shares, fallbacks = [], 0, [], 0
            for seed in range(args.seeds):
                est = pair_sums(Q, X, w, gamma, method=method, rel_error=args.rel_error, seed=seed)
                if est.method == "exact":
                    fallbacks += 1
                    continue
                err = abs(est.value - exact.value)
                errors.append(err / exact.value)
                inside += err <= est.half_width
                shares.append(est.n_pairs / exact.n_pairs)
            n = len(errors)
            if n == 0:
                print(f"| {label} | {method} | – | – | – | – | {fallbacks}/{args.seeds} |")
                continue
            errors = np.array(errors)
            print(f"| {label} | {method} | {np.mean(errors <= args.rel_error):.1%} | {inside / n:.1%} | "
                  f"{errors.max():.3%} | {np.mean(shares):.3f} | {fallbacks}/{args.seeds} |")


if __name__ == "__main__":
    main()
