"""Benchmark of the core: the cost matrix against the naive path and the prediction floor.

On CovCon-D (T batches of 1000 points, 100 queries each) with the default Random Forest
already trained on every batch, it times

  (a) ``costs.cost_matrix``: predictions of every model on its later batches in one call
      each, kernel weights shared per batch, kernels only at misclassified training points;
  (b) the naive path, as the equations read: for every pair (t', t) predict both batches
      and build both kernels anew;
  (c) the floor: every model predicting all of its later batches in one call, nothing else;

checks that (a) and (b) give the same matrix, and prints (b)/(a) and (a)/(c). Then it times a
whole ``simulate`` (every policy) and prints where the time goes. Ratios are measured in the
same run, so a noisy shared machine shifts both sides alike.

    python benchmarks/bench_core.py [--n-batches 100] [--repeats 3] [--naive-pairs all]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from cara_mlflow.costs import cost_matrix, predict_later
from cara_mlflow.simulate import make_model, simulate
from cara_mlflow.staleness import _weighted_kernel_sums, resolve_gamma, zero_one_loss
from cara_mlflow.streams import make_stream


def naive_cost_matrix(batches, queries, models, kappa, gamma):
    """Eq. 4 read literally: per pair, predict and build both kernels from scratch."""
    T = len(batches)
    C = np.full((T, T), np.inf)
    np.fill_diagonal(C, kappa)
    for t in range(T):
        X_now, y_now = batches[t]
        for tp in range(t):
            X_then, y_then = batches[tp]
            model = models[tp]
            now = zero_one_loss(y_now, model.predict(X_now))
            then = zero_one_loss(y_then, model.predict(X_then))
            k_now = _weighted_kernel_sums(X_now, queries[t], None, gamma, 64 * 2**20)
            k_then = _weighted_kernel_sums(X_then, queries[t], None, gamma, 64 * 2**20)
            C[tp, t] = (k_now @ now) / len(X_now) - (k_then @ then) / len(X_then)
    return C


def best_of(repeats, fn):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-batches", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kappa", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"numpy {np.__version__}")
    stream = make_stream("covcon-d", n_batches=args.n_batches, seed=args.seed)
    batches = [(b.X, b.y) for b in stream]
    queries = [b.queries for b in stream]
    start = time.perf_counter()
    models = [make_model("rf", X, y, args.seed) for X, y in batches]
    print(f"trained {len(models)} Random Forests in {time.perf_counter() - start:.2f} s (not part of the ratios)")
    gamma = resolve_gamma("scale", np.concatenate([X for X, _ in batches]))

    t_floor, _ = best_of(args.repeats, lambda: predict_later(models, [X for X, _ in batches]))
    t_fast, C_fast = best_of(args.repeats, lambda: cost_matrix(batches, models, args.kappa,
                                                              queries=queries, gamma=gamma))
    t_naive, C_naive = best_of(1, lambda: naive_cost_matrix(batches, queries, models, args.kappa, gamma))
    same = np.allclose(C_fast, C_naive, rtol=1e-9, atol=1e-12)
    upper = np.triu_indices(len(C_fast))
    print(f"(a) cost_matrix         {t_fast:8.3f} s   (best of {args.repeats})")
    print(f"(b) naive per pair      {t_naive:8.3f} s   (one run)")
    print(f"(c) prediction floor    {t_floor:8.3f} s   (best of {args.repeats})")
    print(f"same matrix (a) == (b): {same}   max |diff| = {np.abs(C_fast[upper] - C_naive[upper]).max():.2e}")
    print(f"(b)/(a) = {t_naive / t_fast:.1f}x faster than naive")
    print(f"(a)/(c) = {t_fast / t_floor:.3f}x the floor (target <= 1.5)")
    if not same:
        raise SystemExit("the fast and naive cost matrices differ")

    start = time.perf_counter()
    report = simulate(stream, kappa=args.kappa, seed=args.seed)
    total = time.perf_counter() - start
    print(f"\nsimulate (every policy, {args.n_batches} batches): {total:.2f} s")
    for part, seconds in report.timings.items():
        print(f"  {part:<12} {seconds:8.3f} s  {100 * seconds / total:5.1f}%")
    print(f"  {'other':<12} {total - sum(report.timings.values()):8.3f} s")


if __name__ == "__main__":
    main()
