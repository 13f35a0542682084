"""Is scikit-learn's tree-based ``KernelDensity`` a faster exact-within-tolerance path for Ψ here?

On the COVERTYPE-sized batch of ``bench_staleness.py`` (d = 54), for ``--queries`` queries
against Ψ_then's wrong points, it times the exact blocked kernel sums and a kd-tree
``KernelDensity`` (Gaussian kernel with the same γ: bandwidth 1/√(2γ)) at two relative
tolerances, and prints the kd-tree's error on the total. A tree wins in low dimension; this
checks whether it does at d = 54.

    python benchmarks/bench_kde_tree.py [--queries 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from bench_staleness import load
from sklearn.neighbors import KernelDensity

from cara_mlflow.staleness import MAX_BLOCK_BYTES, _weighted_kernel_sums, resolve_gamma


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=2000)
    args = parser.parse_args()
    Q, P_now, P_then, _ = load(1_000_000, 100_000, seed=0)
    gamma = resolve_gamma("scale", np.vstack([P_now[:10_000], Q[:10_000]]))   # as bench_staleness
    part = Q[:args.queries]
    start = time.perf_counter()
    exact = _weighted_kernel_sums(part, P_then, None, gamma, MAX_BLOCK_BYTES).sum()
    took = time.perf_counter() - start
    print(f"{args.queries} queries × {P_then.shape[0]} points, d = {Q.shape[1]}, γ = {gamma:.4g}")
    print(f"exact blocks: {took:.2f} s")
    h, d = 1 / np.sqrt(2 * gamma), Q.shape[1]
    for rtol in (0.01, 0.1):
        kde = KernelDensity(kernel="gaussian", bandwidth=h, rtol=rtol, algorithm="kd_tree")
        start = time.perf_counter()
        kde.fit(P_then)
        fit = time.perf_counter() - start
        start = time.perf_counter()
        log_density = kde.score_samples(part)
        query = time.perf_counter() - start
        # score_samples is log(Σ_x K(q, x) / (n (2π h²)^{d/2})): undo the normalisation
        total = np.exp(log_density + np.log(P_then.shape[0]) + d / 2 * np.log(2 * np.pi * h * h)).sum()
        print(f"kd-tree rtol={rtol:g}: fit {fit:.2f} s + query {query:.2f} s = "
              f"{(fit + query) / took:.1f}× the exact blocks; error of the total {total / exact - 1:+.3%}")


if __name__ == "__main__":
    main()
