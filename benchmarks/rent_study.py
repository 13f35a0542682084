"""Rent-or-buy (no tuning) against CARA-T tuned offline, on every stream of the reproduction (issue 16 item 6).

For each stream, seed and κ of the paper-implied sweep (:func:`cara_mlflow.streams.kappa_ranges.kappa_sweep`),
the κ-independent part (a Random Forest per batch, the offline and online Ψ̄) comes from the reproduction's
cache (``reproduce.py --cache DIR``: ``DIR/rf/<stream>-v<ver>-seed<N>.pkl``) and
:func:`cara_mlflow.simulate.evaluate` scores ``cara-t`` (tuned on the 25 offline batches), ``rent`` (nothing
tuned: its κ is the diagonal's) and the ORACLE on the same online batches 25–99, as ``reproduce.py`` does.
Rent needs no offline window and could run from batch 0; it is scored on the online window only, so both
policies face the same batches and the same ORACLE.

Per stream: mean SCPE of each policy in the low-κ half (the 5 smallest κ) and the high-κ half, the paired
difference rent − CARA-T with a 95% t-interval over seeds (each seed's mean over the half's κ is one
observation: the κ of a seed share their models, so they are not independent), the mean number of Retrain
decisions, the largest cost(rent)/cost(ORACLE), and how far the online Ψ̄ are from the assumption (A) of
rent's bound (:class:`cara_mlflow.policies.RentOrBuy`): the share of negative Ψ̄ and the share of adjacent
pairs of models where the newer one is the staler.

Usage (from the repository root; writes benchmarks/results/rent.md and rent.json):
    nice -n 10 .venv/bin/python benchmarks/rent_study.py --cache /work/cache [--jobs 1]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import multiprocessing
import platform
import time
from pathlib import Path

import numpy as np
from reproduce import DATA_DIR, HIGH_STEPS, RESULTS, ROWS, SEEDS, _evaluate_rows, offline_scale, prepared_for

from cara_mlflow.streams.kappa_ranges import PAPER_KAPPA_RANGES, kappa_sweep

POLICIES = ["cara-t", "rent", "oracle"]
MODEL = "rf"


def assumption_gaps(psi_bar: np.ndarray) -> dict:
    """How far a Ψ̄ matrix (upper triangle: ``psi_bar[t', t]``) is from (A), κ aside.

    ``negative``: share of Ψ̄ < 0; ``newer_staler``: share of adjacent models (t'−1, t') at a batch t
    where the newer one is the staler, Ψ̄_{t,t'} > Ψ̄_{t,t'−1}.
    """
    T = psi_bar.shape[0]
    upper = psi_bar[np.triu_indices(T, 1)]
    pairs = [np.diff(psi_bar[:t, t]) for t in range(2, T)]   # down a column: older → newer
    diffs = np.concatenate(pairs) if pairs else np.zeros(0)
    return {"negative": float(np.mean(upper < 0)), "newer_staler": float(np.mean(diffs > 0))}


def run_task(task: tuple) -> dict:
    stream, seed, cache = task
    clock = time.perf_counter()
    prepared = prepared_for(stream, seed, MODEL, str(DATA_DIR), cache)
    if not prepared.timings.get("from_cache"):
        print(f"warning: {stream} seed {seed} was not in the cache: trained anew", flush=True)
    loaded = time.perf_counter() - clock
    rows = _evaluate_rows(prepared, kappa_sweep(stream), POLICIES, offline_scale(prepared))
    return {"stream": stream, "seed": seed, "rows": rows, "gaps": assumption_gaps(prepared.online_terms.psi_bar),
            "timings": {"load": loaded, "evaluate": time.perf_counter() - clock - loaded}}


def _t95(n: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def summarise(results: list[dict]):
    """One record per (stream, half) and the frame of every cell."""
    import pandas as pd

    frames = []
    for r in results:
        f = pd.DataFrame(r["rows"])
        f["stream"], f["seed"] = r["stream"], r["seed"]
        frames.append(f)
    frame = pd.concat(frames, ignore_index=True)
    frame["half"] = np.where(frame["step"].isin(HIGH_STEPS), "high", "low")
    # SCPE means nothing where the ORACLE's cost is <= 0 (as reproduce.py): those cells are left out.
    frame.loc[frame["oracle_cost"] <= 0, "scpe"] = np.nan
    wide = frame.pivot_table(index=["stream", "seed", "half", "step"], columns="policy",
                             values=["scpe", "n_retrains", "strategy_cost", "oracle_cost"])
    records = []
    gaps = pd.DataFrame([{"stream": r["stream"], **r["gaps"]} for r in results]).groupby("stream").mean()
    for (stream, half), g in wide.groupby(level=["stream", "half"]):
        defined = g[("scpe", "rent")].notna() & g[("scpe", "cara-t")].notna()
        per_seed = (g[("scpe", "rent")] - g[("scpe", "cara-t")])[defined].groupby(level="seed").mean()
        n = per_seed.size
        mean = float(per_seed.mean())
        half_width = _t95(n) * float(per_seed.std(ddof=1)) / np.sqrt(n) if n > 1 else float("nan")
        oracle = g[("oracle_cost", "oracle")]
        ratio = (g[("strategy_cost", "rent")] / oracle)[oracle > 0]
        records.append({
            "stream": stream, "half": half, "seeds": int(n), "cells": int(defined.sum()),
            "scpe_rent": float(g[("scpe", "rent")][defined].mean()),
            "scpe_cara_t": float(g[("scpe", "cara-t")][defined].mean()),
            "diff": mean, "ci95": [mean - half_width, mean + half_width],
            "rent_wins": int((per_seed < 0).sum()),
            "retrains_rent": float(g[("n_retrains", "rent")].mean()),
            "retrains_cara_t": float(g[("n_retrains", "cara-t")].mean()),
            "retrains_oracle": float(g[("n_retrains", "oracle")].mean()),
            "max_cost_ratio": float(ratio.max()) if ratio.size else float("nan"),
            "negative_psi": float(gaps.loc[stream, "negative"]),
            "newer_staler": float(gaps.loc[stream, "newer_staler"]),
        })
    return records, frame


def _label(stream: str) -> str:
    return dict((s, label) for label, s in ROWS)[stream]


def write_report(records: list[dict], frame, wall: float, jobs: int, out: Path) -> Path:
    by = {(r["stream"], r["half"]): r for r in records}
    streams = [s for _, s in ROWS if (s, "low") in by]
    ranges = "; ".join(f"{_label(s)} {PAPER_KAPPA_RANGES[s][0]:g}–{PAPER_KAPPA_RANGES[s][1]:g}" for s in streams)
    seeds = ", ".join(f"{_label(s)} {by[(s, 'low')]['seeds']}" for s in streams)
    lines = [
        "# Rent-or-buy (no tuning) vs CARA-T (tuned offline), Random Forest", "",
        "Generated by `benchmarks/rent_study.py`; do not edit by hand. `rent` retrains once the Ψ̄ paid since "
        "the last retrain reaches κ (`cara_mlflow.policies.RentOrBuy`); CARA-T is tuned on the 25 offline "
        "batches (exact search) as in `reproduce.py`. Both are scored on the same online batches 25–99 against "
        "the same ORACLE, though rent needs no offline window and could start at batch 0.", "",
        f"κ: the 10 log-spaced values of the paper-implied sweep per dataset ({ranges}); low half = the 5 "
        f"smallest, high half = the 5 largest. Seeds: {seeds}. SCPE in percent; cells where the ORACLE's "
        "cost is ≤ 0 are left out (SCPE is undefined there).", "",
        "Δ = SCPE(rent) − SCPE(CARA-T), **negative when rent is better**; its 95% interval is a t-interval "
        "over seeds (one observation per seed: its mean Δ over the half's κ). wins: seeds where rent's mean "
        "SCPE is lower.", "",
        "## Mean SCPE (%)", "",
        "| Dataset | low κ: rent | CARA-T | Δ [95% CI] | wins | high κ: rent | CARA-T | Δ [95% CI] | wins |",
        "|---|---:|---:|---|---:|---:|---:|---|---:|",
    ]
    for s in streams:
        cells = []
        for half in ("low", "high"):
            r = by[(s, half)]
            lo, hi = r["ci95"]
            cells += [f"{r['scpe_rent']:.2f}", f"{r['scpe_cara_t']:.2f}",
                      f"{r['diff']:+.2f} [{lo:+.2f}, {hi:+.2f}]", f"{r['rent_wins']}/{r['seeds']}"]
        lines.append(f"| {_label(s)} | " + " | ".join(cells) + " |")
    oracle = frame[frame["policy"] == "oracle"]
    overall = {p: float(frame[frame["policy"] == p]["scpe"].mean()) for p in ("rent", "cara-t")}
    lines += ["", f"All streams, seeds and κ: mean SCPE rent {overall['rent']:.2f}, CARA-T {overall['cara-t']:.2f}; "
              f"{int((oracle['oracle_cost'] <= 0).sum())} of {len(oracle)} (stream, seed, κ) cells have an ORACLE "
              "cost ≤ 0 and are left out.", "",
              "## Retrain decisions (mean per run) and the bound", "",
              "cost ratio: the largest cost(rent)/cost(ORACLE) over seeds and κ of the half; the bound 2 holds "
              "only under (A) (κ constant, Ψ̄ ≥ 0, an older model at least as stale as a newer one at every "
              "batch). Ψ̄ < 0 and newer staler: the share of online Ψ̄ entries below 0, and of adjacent pairs of "
              "models at a batch where the newer is the staler (means over seeds; κ-free).", "",
              "| Dataset | low κ: rent | CARA-T | ORACLE | cost ratio | high κ: rent | CARA-T | ORACLE | cost ratio "
              "| Ψ̄ < 0 | newer staler |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in streams:
        cells = []
        for half in ("low", "high"):
            r = by[(s, half)]
            cells += [f"{r['retrains_rent']:.1f}", f"{r['retrains_cara_t']:.1f}", f"{r['retrains_oracle']:.1f}",
                      f"{r['max_cost_ratio']:.2f}"]
        r = by[(s, "low")]
        cells += [f"{100 * r['negative_psi']:.0f}%", f"{100 * r['newer_staler']:.0f}%"]
        lines.append(f"| {_label(s)} | " + " | ".join(cells) + " |")
    lines += ["", f"Wall time: {wall:.1f} s on {jobs} process(es), models from the cache "
              f"(machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}).", ""]
    path = out / "rent.md"
    path.write_text("\n".join(lines))
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True,
                        help="the reproduction's cache of prepared streams (reproduce.py --cache DIR)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--streams", default=",".join(s for _, s in ROWS))
    parser.add_argument("--seeds", type=int, default=None, help="seeds per stream (default: reproduce.py's)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    streams = [s.strip() for s in args.streams.split(",") if s.strip()]
    tasks = [(s, k, str(args.cache)) for s in streams for k in range(args.seeds or SEEDS[s])]
    clock = time.perf_counter()
    results = []
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for done, r in enumerate(pool.imap_unordered(run_task, tasks), 1):
            results.append(r)
            print(f"[{done}/{len(tasks)}] {r['stream']} seed {r['seed']}: load {r['timings']['load']:.1f} s, "
                  f"evaluate {r['timings']['evaluate']:.1f} s", flush=True)
    wall = time.perf_counter() - clock
    records, frame = summarise(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rent.json").write_text(json.dumps(
        {"model": MODEL, "policies": POLICIES, "wall_seconds": wall, "jobs": args.jobs, "summary": records,
         "cells": [{k: v for k, v in row.items() if k != "params"} | {"kappa_param": row["params"].get("kappa"),
                                                                      "tau": row["params"].get("tau")}
                   for r in sorted(results, key=lambda r: (r["stream"], r["seed"])) for row in
                   [dict(x, stream=r["stream"], seed=r["seed"]) for x in r["rows"]]]}, separators=(",", ":")))
    print(f"done in {wall:.1f} s: {write_report(records, frame, wall, args.jobs, args.out)}")


if __name__ == "__main__":
    main()
