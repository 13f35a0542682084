"""Does the bound of a row-sampled first term hold? Coverage over many seeds (issue 20, part 1).

:func:`cara_mlflow.row_sample.sampled_first_term` at its defaults (groups of 2048 rows × 1024
queries, 99% intervals, half-width ≤ 1% of max(κ, Ψ)), on batches of ``--rows`` rows: for each
kind of input the exact first term is computed once, then the estimate is drawn with
``--seeds`` seeds at κ = Ψ/4, Ψ, 4Ψ and 50Ψ. Printed per input and κ: the share of estimates
within the bound (|Ψ̂ − Ψ| ≤ 1% of max(κ, Ψ)), the interval's coverage (|Ψ̂ − Ψ| ≤ its
half-width), the worst error in units of the bound, the mean share of rows predicted, and how
many runs predicted every row instead.

Inputs (0-1 losses; "errors" is the model's error rate):

* smooth: d = 10 Gaussian rows and queries, errors 11.5% (3× likelier where x0 > 0.5);
* rare errors: the same rows, errors 0.06% (7× likelier where x0 > 0.5): a sample holds fewer
  than 100 of them unless it is large, and is then held to the error rate's upper bound;
* clustered queries: the queries in 5 tight clusters, errors concentrated in one of them (1.5%);
* sparse one-hot: 3 categorical features, 77 columns, errors 5% in one category;
* COVERTYPE: the real rows (54 features, standardised, repeated to ``--rows``) with the errors
  of a depth-8 tree trained on the first 20 000, queries a 2 000-row sample.

    python benchmarks/calibrate_rows.py [--rows 2000000] [--seeds 60]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.tree import DecisionTreeClassifier

from cara_mlflow.row_sample import sampled_first_term
from cara_mlflow.staleness import _weighted_kernel_sums, resolve_gamma

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "covtype.csv.gz"


def smooth(rng, n):
    X, Q = rng.normal(size=(n, 10)), rng.normal(size=(5000, 10)) * 0.8 + 0.3
    p = np.where(X[:, 0] > 0.5, 0.3, 0.03)
    return X, Q, (rng.random(n) < p).astype(float), 0.1


def rare(rng, n):
    X, Q = rng.normal(size=(n, 10)), rng.normal(size=(5000, 10)) * 0.8 + 0.3
    return X, Q, (rng.random(n) < np.where(X[:, 0] > 0.5, 0.0015, 0.0002)).astype(float), 0.1


def clustered(rng, n):
    centres = rng.normal(size=(5, 6)) * 2
    X = centres[rng.integers(0, 5, n)] + rng.normal(size=(n, 6))
    Q = centres[rng.integers(0, 5, 5000)] + 0.3 * rng.normal(size=(5000, 6))
    near = np.linalg.norm(X - centres[0], axis=1) < 1.5
    return X, Q, (rng.random(n) < np.where(near, 0.06, 0.005)).astype(float), 0.2


def one_hot(rng, n):
    codes = [rng.integers(0, k, n) for k in (40, 25, 12)]
    X = sparse.hstack([sparse.csr_matrix((np.ones(n), (np.arange(n), c)), shape=(n, k))
                       for c, k in zip(codes, (40, 25, 12))]).tocsr()
    picked = rng.choice(n, 3000, replace=False)
    losses = (rng.random(n) < np.where(codes[0] == 3, 0.6, 0.04)).astype(float)
    return X, X[picked], losses, resolve_gamma("scale", X[:50_000])


def covertype(rng, n):
    frame = pd.read_csv(DATA, nrows=200_000)
    y = frame.pop(frame.columns[-1]).to_numpy()
    X = frame.to_numpy(dtype=float)
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-12)
    tree = DecisionTreeClassifier(max_depth=8, random_state=0).fit(X[:20_000], y[:20_000])
    losses = (tree.predict(X) != y).astype(float)
    take = rng.integers(0, X.shape[0], n)
    return X[take], X[rng.choice(X.shape[0], 2000, replace=False)], losses[take], resolve_gamma("scale", X)


def exact_term(X, Q, losses, gamma) -> float:
    wrong = np.flatnonzero(losses)
    return float(losses[wrong] @ _weighted_kernel_sums(X[wrong], Q, None, gamma, 2**26)) / X.shape[0]


def calibrate(name, X, Q, losses, gamma, seeds: int) -> list[dict]:
    start = time.perf_counter()
    psi = exact_term(X, Q, losses, gamma)
    print(f"{name}: n={X.shape[0]}, queries={Q.shape[0]}, errors {losses.mean():.3%}, Ψ={psi:.5g} "
          f"(exact: {time.perf_counter() - start:.1f} s)", flush=True)
    rows = []
    for kappa_over in (0.25, 1.0, 4.0, 50.0):
        kappa, within, covered, worst, share, whole, seconds = kappa_over * psi, 0, 0, 0.0, [], 0, []
        for seed in range(seeds):
            t = time.perf_counter()
            est = sampled_first_term(Q, X, lambda r: losses[r], gamma, kappa=kappa, seed=seed)
            seconds.append(time.perf_counter() - t)
            if not est.sampled:
                whole += 1
                continue
            bound = 0.01 * max(kappa, psi)
            err = abs(est.value - psi)
            within += err <= bound
            covered += err <= est.half_width
            worst = max(worst, err / bound)
            share.append(est.n_predicted / X.shape[0])
        sampled = seeds - whole
        row = {"input": name, "κ/Ψ": kappa_over, "sampled": sampled, "every row": whole,
               "within 1% of max(κ,Ψ)": f"{within}/{sampled}", "interval coverage": f"{covered}/{sampled}",
               "worst / bound": round(worst, 2), "rows predicted": f"{np.mean(share):.1%}" if share else "-",
               "s per estimate": round(float(np.median(seconds)), 2)}
        print("   ", row, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--seeds", type=int, default=60)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    table = []
    for name, make in (("smooth d=10", smooth), ("rare errors d=10", rare), ("clustered queries d=6", clustered),
                       ("one-hot sparse", one_hot), ("COVERTYPE d=54", covertype)):
        table += calibrate(name, *make(rng, args.rows), args.seeds)
    print()
    print(markdown(table))


def markdown(rows: list[dict]) -> str:
    """The rows as a markdown table (for benchmarks/README.md)."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return "\n".join(lines + ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows])


if __name__ == "__main__":
    main()
