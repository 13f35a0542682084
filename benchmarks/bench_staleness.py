"""Benchmark of Ψ on large batches: exact vs ``method="rff"``, against the machine's own limits.

COVERTYPE-like batches (issue 6): B_D = 10⁶ labelled rows, B_Q = 10⁵ queries, d = 54, drawn
with replacement from ``../shared/data/covtype.csv.gz`` (min-max scaled as the COVERTYPE
loader does), a model trained on the first half of the stream (D_t', the "then" batch) and
queried on the second half (D_t and Q_t, "now"); its 0-1 losses give both Ψ terms:

  Ψ_now  = Ψ(Q_t, D_t,  M_t')   (errors of the old model on today's data, near the queries)
  Ψ_then = Ψ(Q_t, D_t', M_t')   (its errors on its own training data, near the same queries)

It prints

  1. the machine's limits measured in this run: ``np.exp`` rate (elements/s, in place on a
     64 MB array) and GEMM rate (flop/s on the exact path's shapes), and the bound they put on
     the exact path (pairs/s: one exp and 2d flops per pair), against the exact path's rate;
  2. the exact terms (every pair, timed, kept in results/staleness_exact.json for later runs;
     ``--exact-queries N`` computes them on N sampled queries instead and extrapolates);
  3. the error/time curve of the approximations, on both terms, over several seeds: plain
     random Fourier features (no correction), ``method="sample"`` (exact sums over random
     blocks; what ``auto`` uses above its switch) at several target errors, and
     ``method="rff"`` (features as control variate + the blocks); relative error of each
     term and Ψ̄'s error as a share of Ψ_now.

    python benchmarks/bench_staleness.py [--n-data 1000000] [--n-queries 100000] [--seeds 3]

``--mass-study`` measures instead how many rows :func:`cara_mlflow.staleness.mass_sample` needs
(``MASS_SAMPLE_ROWS``): on paper streams with batches larger than the sample (COVERTYPE, 5810 rows,
d = 54; CovCon-D at 20 000 rows a batch), a model per batch (LR and HGB: an RF gets almost none of
its own rows wrong) and its "then" term on the expected-loss scale at the next batch's queries,
with its batch's mass exact (every row) against the stratified sample (the rows it gets wrong + n
zero-loss rows) and a plain uniform sample of n rows, over several sample seeds (about 3 min):

    python benchmarks/bench_staleness.py --mass-study [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.tree import DecisionTreeClassifier

from cara_mlflow.staleness import (
    MAX_BLOCK_BYTES,
    _block_rows,
    _rff_weighted_sum,
    _weighted_kernel_sums,
    mass_sample,
    pair_sums,
    psi_from_losses,
    resolve_gamma,
    stack_rows,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "covtype.csv.gz"
#: The exact terms at full size take tens of minutes: kept between runs (same data, same seed).
CACHE = Path(__file__).resolve().parent / "results" / "staleness_exact.json"


def load(n_data: int, n_queries: int, seed: int):
    frame = pd.read_csv(DATA)
    y = (frame.pop("Cover_Type").to_numpy() == 2).astype(int)
    X = frame.to_numpy(dtype=np.float64)
    span = X.max(axis=0) - X.min(axis=0)
    X = (X - X.min(axis=0)) / np.where(span > 0, span, 1.0)
    half = X.shape[0] // 2
    rng = np.random.default_rng(seed)
    fit = rng.choice(half, 50_000, replace=False)
    model = DecisionTreeClassifier(max_depth=12, random_state=seed).fit(X[fit], y[fit])
    then = rng.choice(half, n_data)                       # D_t': the old model's era
    now = half + rng.choice(X.shape[0] - half, n_data)    # D_t: today
    queries = half + rng.choice(X.shape[0] - half, n_queries)
    lost_then = model.predict(X[then]) != y[then]
    lost_now = model.predict(X[now]) != y[now]
    return X[queries], X[now][lost_now], X[then][lost_then], n_data


def rate(fn, work: float, repeats: int = 3) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return work / best


def machine_limits(d: int, n_points: int) -> dict:
    """np.exp elements/s and GEMM flop/s on the exact path's block shape, measured now."""
    rng = np.random.default_rng(0)
    block = rng.random(MAX_BLOCK_BYTES // 8)
    exp_rate = rate(lambda: np.exp(block, out=block), block.size)
    rows = _block_rows(n_points, MAX_BLOCK_BYTES)
    A, B = rng.random((rows, d)), rng.random((n_points, d))
    gemm_rate = rate(lambda: A @ B.T, 2.0 * rows * n_points * d)
    big = rng.random((2000, 2000))
    peak = rate(lambda: big @ big, 2.0 * 2000 ** 3)
    bound = 1.0 / (1.0 / exp_rate + 2.0 * d / gemm_rate)
    return {"exp": exp_rate, "gemm": gemm_rate, "gemm_square": peak, "pairs_bound": bound}


def exact_term(Q, P, n_rows, gamma, n_queries_exact: int | None, seed: int):
    """Exact Ψ (every pair) or, with ``n_queries_exact``, its value and time on a query sample
    scaled to all queries (an estimate of the exact value, used only when marked so)."""
    if n_queries_exact and n_queries_exact < Q.shape[0]:
        idx = np.random.default_rng(seed).choice(Q.shape[0], n_queries_exact, replace=False)
        start = time.perf_counter()
        s = _weighted_kernel_sums(Q[idx], P, np.ones(P.shape[0]), gamma, MAX_BLOCK_BYTES).sum()
        took = time.perf_counter() - start
        scale = Q.shape[0] / n_queries_exact
        return s * scale / n_rows, took * scale, True
    start = time.perf_counter()
    s = _weighted_kernel_sums(P, Q, None, gamma, MAX_BLOCK_BYTES).sum()
    return s / n_rows, time.perf_counter() - start, False


def plain_rff(Q, P, n_rows, gamma, D: int, seed: int) -> float:
    """Random Fourier features alone: (Σ_q z(q)) · (Σ_x z(x)), no correction."""
    omega = np.random.default_rng(seed).normal(0, np.sqrt(2 * gamma), size=(Q.shape[1], D // 2))
    return float(_rff_weighted_sum(Q, None, omega, MAX_BLOCK_BYTES)
                 @ _rff_weighted_sum(P, None, omega, MAX_BLOCK_BYTES)) / n_rows


def mass_study(seeds: int) -> None:
    """The then-term's relative error with a sampled mass, per sample size (``--mass-study``)."""
    from cara_mlflow.simulate import make_model
    from cara_mlflow.streams import make_stream

    sizes = (250, 500, 1000, 2000, 4000)
    streams = [("covertype", dict(data=str(DATA))), ("covcon-d", dict(batch_size=20_000))]
    print("Relative error of Ψ_then (expected-loss) with a sampled mass against every row's, over batches "
          "0, 10, …, 70 and the sample seeds; the last column: the stratified sample's largest error in query "
          "losses (the units of Ψ̄ and κ), and the batch's queries B_Q.\n")
    print("| stream | model | n | stratified: mean abs err | max abs err | uniform: mean abs err | max abs err "
          "| stratified: max abs err (query losses) / B_Q |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, kwargs in streams:
        stream = make_stream(name, seed=0, **kwargs)
        gamma = resolve_gamma("scale", stack_rows([stream[t].X for t in range(25)]))
        for model_name in ("lr", "hgb"):   # an RF gets (almost) none of its own rows wrong: then-term ≈ 0
            errors = {(kind, n): [] for kind in ("stratified", "uniform", "losses") for n in sizes}
            for tp in range(0, 80, 10):
                X, y = stream[tp].X, stream[tp].y
                Q = stream[tp + 1].queries
                model = make_model(model_name, X, y, seed=tp)
                own = (model.predict(X) != y).astype(float)
                if not own.any():
                    continue
                exact = psi_from_losses(Q, X, own, gamma, scale="expected-loss")
                for n in sizes:
                    for seed in range(seeds):
                        index, weight = mass_sample(X, n, losses=own, seed=seed)
                        strat = psi_from_losses(Q, X[index], own[index], gamma, X.shape[0], scale="expected-loss",
                                                mass_weight=weight)
                        rows, _ = mass_sample(X, n, seed=seed)
                        uniform = psi_from_losses(Q, X, own, gamma, X.shape[0], scale="expected-loss",
                                                  mass_points=X[rows])
                        errors["stratified", n].append(abs(strat / exact - 1))
                        errors["uniform", n].append(abs(uniform / exact - 1))
                        errors["losses", n].append(abs(strat - exact))
            for n in sizes if errors["stratified", sizes[0]] else ():
                st, un = np.array(errors["stratified", n]), np.array(errors["uniform", n])
                print(f"| {name} (B_D = {stream[0].X.shape[0]}) | {model_name} | {n} | {st.mean():.2%} | "
                      f"{st.max():.2%} | {un.mean():.2%} | {un.max():.2%} | {max(errors['losses', n]):.2f} / "
                      f"{stream[1].queries.shape[0]} |",
                      flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-data", type=int, default=1_000_000)
    parser.add_argument("--n-queries", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rate-queries", type=int, default=5000,
                        help="queries of the same-run exact-rate measurement")
    parser.add_argument("--recompute", action="store_true",
                        help=f"recompute the exact terms even if {CACHE.name} holds them")
    parser.add_argument("--exact-queries", type=int, default=0,
                        help="compute the exact terms on this many sampled queries (0: all)")
    parser.add_argument("--mass-study", action="store_true",
                        help="measure the then-term's error with a mass_sample instead (MASS_SAMPLE_ROWS)")
    args = parser.parse_args()
    if args.mass_study:
        mass_study(args.seeds)
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"numpy {np.__version__}")
    Q, P_now, P_then, n_rows = load(args.n_data, args.n_queries, seed=0)
    gamma = resolve_gamma("scale", np.vstack([P_now[:10_000], Q[:10_000]]))
    print(f"B_D = {n_rows}, B_Q = {Q.shape[0]}, d = {Q.shape[1]}, wrong points: now {P_now.shape[0]}, "
          f"then {P_then.shape[0]}, γ = {gamma:.4g}")

    limits = machine_limits(Q.shape[1], Q.shape[0])
    exact = {}
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    for name, P in (("now", P_now), ("then", P_then)):
        key = f"{args.n_data}x{args.n_queries}:{name}:{args.exact_queries}"
        if key in cache and not args.recompute:
            value, took, sampled, when = cache[key]
            print(f"(exact Ψ_{name} from {CACHE.name}, computed by this script on {when})")
        else:
            value, took, sampled = exact_term(Q, P, n_rows, gamma, args.exact_queries, seed=1)
            cache[key] = [value, took, sampled, time.strftime("%Y-%m-%d")]
            CACHE.write_text(json.dumps(cache, indent=1) + "\n")
        pairs = Q.shape[0] * P.shape[0]
        exact[name] = value
        print(f"exact Ψ_{name} = {value:.6g}{' (extrapolated from a query sample)' if sampled else ''}: "
              f"{took:.1f} s{' (extrapolated)' if sampled else ''}, {pairs:.3g} pairs, "
              f"{pairs / took:.3g} pairs/s = {pairs / took / limits['pairs_bound']:.2f} of the bound")
    print(f"limits: np.exp {limits['exp']:.3g} /s, GEMM {limits['gemm']:.3g} flop/s on the exact path's "
          f"blocks ({limits['gemm_square']:.3g} on 2000² squares) → bound {limits['pairs_bound']:.3g} pairs/s")
    # The exact path's rate in this run (the cached full sums may come from a busier machine).
    part = Q[:args.rate_queries]
    start = time.perf_counter()
    _weighted_kernel_sums(P_then, part, None, gamma, MAX_BLOCK_BYTES)
    took = time.perf_counter() - start
    pairs = part.shape[0] * P_then.shape[0]
    print(f"exact path in this run: {pairs:.3g} pairs ({part.shape[0]} queries × Ψ_then's points) in "
          f"{took:.1f} s = {pairs / took:.3g} pairs/s = {pairs / took / limits['pairs_bound']:.2f} of the bound; "
          f"the full exact Ψ_now + Ψ_then at this rate: "
          f"{Q.shape[0] * (P_now.shape[0] + P_then.shape[0]) / (pairs / took):.0f} s")
    psi_bar = exact["now"] - exact["then"]
    print(f"exact Ψ̄ = {psi_bar:.6g}")

    print("\n| setting | seed | time (s) | err Ψ_now | err Ψ_then | Ψ̄ err / Ψ_now | "
          "half-width/Ψ (now, then) | pairs computed (now, then) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")

    def report(label, seed, took, now, then, extra=""):
        e_now, e_then = now / exact["now"] - 1, then / exact["then"] - 1
        print(f"| {label} | {seed} | {took:.2f} | {e_now:+.3%} | {e_then:+.3%} | "
              f"{((now - then) - psi_bar) / exact['now']:+.3%} | {extra}")

    for D in (1024, 4096):
        for seed in range(args.seeds):
            start = time.perf_counter()
            now = plain_rff(Q, P_now, n_rows, gamma, D, seed)
            then = plain_rff(Q, P_then, n_rows, gamma, D, seed + 100)
            report(f"plain RFF, D = {D}", seed, time.perf_counter() - start, now, then, " | |")
    settings = [("sample, 5%", "sample", 0.05, None), ("sample, 2%", "sample", 0.02, None),
                ("sample, 1% (auto's default)", "sample", 0.01, None), ("sample, 0.5%", "sample", 0.005, None),
                ("sample, 0.2%", "sample", 0.002, None), ("rff, 1% (default D)", "rff", 0.01, None),
                ("rff, 1%", "rff", 0.01, 1024)]
    for label, method, rel, D in settings:
        for seed in range(args.seeds):
            start = time.perf_counter()
            now = pair_sums(Q, P_now, np.ones(P_now.shape[0]), gamma, method=method, rel_error=rel,
                            seed=seed, n_features=D)
            then = pair_sums(Q, P_then, np.ones(P_then.shape[0]), gamma, method=method, rel_error=rel,
                             seed=seed + 100, n_features=D)
            took = time.perf_counter() - start
            report(f"{label}, D = {now.n_features}", seed, took, now.value / n_rows, then.value / n_rows,
                   f"{now.half_width / now.value:.3%}, {then.half_width / then.value:.3%} | "
                   f"{now.n_pairs:.3g}, {then.n_pairs:.3g} |")


if __name__ == "__main__":
    main()
