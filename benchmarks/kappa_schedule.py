"""Policies under a changing κ (issue 16 item 3; the paper's §9 "non-static κ"), measured.

For each synthetic stream, seed and κ level of the paper-implied sweep
(:func:`cara_mlflow.streams.kappa_ranges.kappa_sweep`), the κ-independent part (a Random Forest per batch,
the offline and online Ψ̄) comes from the reproduction's cache (``reproduce.py --cache DIR``:
``DIR/rf/<stream>-v<ver>-seed<N>.pkl``). Each κ schedule (:mod:`cara_mlflow.kappa_schedule`) sets
κ_t = level × value_t on the diagonals of the offline (batches 0–24) and online (25–99) cost matrices, and
:func:`cara_mlflow.simulate.evaluate` scores on the online batches, against the ORACLE solved with κ_t:

* CARA-T and CARA-CT tuned **κ-relative** (τ tuned at κ̄, the offline window's mean κ, and scaled by
  κ_t/κ̄ online) and **κ-blind** (τ tuned on the same offline matrix, used as it is whatever κ_t);
* MARKOV and rent, which compare with κ_t by construction.

Per (stream, schedule): mean SCPE of each, and the paired difference relative − blind with a 95% t-interval
over seeds (each seed's mean over the 10 κ levels is one observation: the κ of a seed share their models, so
they are not independent). Cells where the ORACLE's cost is <= 0 are left out (SCPE is undefined there). The
constant-κ run (no schedule) is kept as the reference row of each stream (relative = blind there, bit for bit).

Usage (from the repository root; writes benchmarks/results/kappa_schedule.{md,json,png}):
    nice -n 10 .venv/bin/python benchmarks/kappa_schedule.py --cache /work/cache [--jobs 2]
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
from reproduce import DATA_DIR, RESULTS, ROWS, SEEDS, SYNTHETIC, prepared_for

from cara_mlflow.kappa_schedule import parse_kappa_schedule
from cara_mlflow.streams.kappa_ranges import PAPER_KAPPA_RANGES, kappa_sweep

MODEL = "rf"
#: The schedules, as typed after --kappa-schedule; None is the constant-κ reference.
SCHEDULES = {
    "constant": None,
    "day/night ×3, 12-batch blocks": "day-night:1.5:0.5:12",
    "day/night ×3, 3-batch blocks": "day-night:1.5:0.5:3",
    "ramp ×2": "ramp:0.7:1.4",
}
RELATIVE = ["cara-t", "cara-ct", "markov", "rent", "oracle"]
BLIND = ["cara-t", "cara-ct"]
LABELS = {"cara-t": "CARA-T", "cara-ct": "CARA-CT", "markov": "MARKOV", "rent": "rent", "oracle": "ORACLE"}


def run_task(task: tuple) -> dict:
    """One (stream, seed): every κ level × schedule, relative and blind; one row per policy run."""
    from cara_mlflow.simulate import evaluate

    stream, seed, cache = task
    clock = time.perf_counter()
    prepared = prepared_for(stream, seed, MODEL, str(DATA_DIR), cache)
    cached = bool(prepared.timings.get("from_cache"))
    loaded = time.perf_counter() - clock
    rows = []
    for label, spec in SCHEDULES.items():
        for step, level in enumerate(kappa_sweep(stream)):
            for mode, policies in (("relative", RELATIVE), ("blind", BLIND)):
                report = evaluate(prepared, kappa=float(level), policies=policies, kappa_schedule=spec,
                                  kappa_relative=mode == "relative")
                kappa_off, kappa_on = np.diag(report.offline_matrix), np.diag(report.online_matrix)
                for r in report.results:
                    threshold = r.params.get("tau", r.params.get("tau_cum"))
                    rows.append({"schedule": label, "step": step, "level": float(level), "mode": mode,
                                 "policy": r.policy, "scpe": r.scpe, "strategy_cost": r.strategy_cost,
                                 "oracle_cost": r.oracle_cost, "n_retrains": r.n_retrains,
                                 "threshold": None if threshold is None else float(threshold),
                                 "kappa_bar": float(kappa_off.mean()), "kappa_online": float(kappa_on.mean())})
    return {"stream": stream, "seed": seed, "rows": rows, "cached": cached,
            "timings": {"load": loaded, "evaluate": time.perf_counter() - clock - loaded}}


def _t95(n: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def _paired(g, a: tuple, b: tuple) -> dict:
    """Mean of a − b per seed (over the κ levels where both are defined), then a t-interval over seeds."""
    defined = g[a].notna() & g[b].notna()
    per_seed = (g[a] - g[b])[defined].groupby(level="seed").mean()
    n = int(per_seed.size)
    mean = float(per_seed.mean()) if n else float("nan")
    half = _t95(n) * float(per_seed.std(ddof=1)) / np.sqrt(n) if n > 1 else float("nan")
    return {"diff": mean, "ci95": [mean - half, mean + half], "wins": int((per_seed < 0).sum()), "seeds": n,
            "a": float(g[a][defined].mean()), "b": float(g[b][defined].mean())}


def summarise(results: list[dict]):
    """One record per (stream, schedule), one per (stream, schedule, step) for the figure, and the frame."""
    import pandas as pd

    frame = pd.concat([pd.DataFrame(r["rows"]).assign(stream=r["stream"], seed=r["seed"]) for r in results],
                      ignore_index=True)
    frame.loc[frame["oracle_cost"] <= 0, "scpe"] = np.nan      # SCPE is undefined there (as reproduce.py)
    frame["column"] = frame["policy"] + np.where(frame["policy"].isin(BLIND), ":" + frame["mode"], "")
    wide = frame.pivot_table(index=["stream", "schedule", "seed", "step"], columns="column",
                             values=["scpe", "n_retrains", "threshold"], dropna=False)
    records, by_step = [], []
    for (stream, schedule), g in wide.groupby(level=["stream", "schedule"]):
        rec = {"stream": stream, "schedule": schedule, "spec": SCHEDULES[schedule]}
        for p in BLIND:
            rec[p] = _paired(g, ("scpe", f"{p}:relative"), ("scpe", f"{p}:blind"))
            rec[p]["retrains_relative"] = float(g[("n_retrains", f"{p}:relative")].mean())
            rec[p]["retrains_blind"] = float(g[("n_retrains", f"{p}:blind")].mean())
            rec[p]["threshold_le_0"] = float((g[("threshold", f"{p}:relative")] <= 0).mean())
        for p in ("markov", "rent"):
            rec[p] = float(g[("scpe", p)].mean())
        rec["oracle_retrains"] = float(g[("n_retrains", "oracle")].mean())
        rec["cells"] = int(g[("scpe", "oracle")].notna().sum())
        records.append(rec)
        for step, h in g.groupby(level="step"):
            by_step.append({"stream": stream, "schedule": schedule, "step": int(step),
                            **{f"{p}_diff": float((h[("scpe", f"{p}:relative")] - h[("scpe", f"{p}:blind")]).mean())
                               for p in BLIND}})
    return records, by_step, frame


def _label(stream: str) -> str:
    return dict((s, label) for label, s in ROWS)[stream]


def _ci(r: dict) -> str:
    lo, hi = r["ci95"]
    return f"{r['diff']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def write_report(records: list[dict], frame, wall: float, jobs: int, out: Path) -> Path:
    streams = [s for s in SYNTHETIC if any(r["stream"] == s for r in records)]
    order = {label: k for k, label in enumerate(SCHEDULES)}
    records = sorted(records, key=lambda r: (streams.index(r["stream"]), order[r["schedule"]]))
    ranges = "; ".join(f"{_label(s)} {PAPER_KAPPA_RANGES[s][0]:g}–{PAPER_KAPPA_RANGES[s][1]:g}" for s in streams)
    seeds = sorted({rec["cara-t"]["seeds"] for rec in records})
    lines = [
        "# Policies under a changing κ: κ-relative vs κ-blind thresholds, Random Forest", "",
        "Generated by `benchmarks/kappa_schedule.py`; do not edit by hand. The paper's §9 names a retraining "
        "cost that changes from batch to batch as future work; here κ_t = level × the schedule's value "
        "(`--kappa-schedule`, `cara_mlflow/kappa_schedule.py`) sits on the diagonal of the offline (batches "
        "0–24) and online (25–99) cost matrices, and every policy is scored on the online batches by its SCPE "
        "against the ORACLE solved with κ_t.", "",
        "* **relative**: CARA-T / CARA-CT tuned at κ̄ (the offline window's mean κ_t) and retraining iff the "
        "score reaches τ·κ_t/κ̄ (the default since issue 16: `PolicyTuner`, `tune`);",
        "* **blind**: the same threshold search on the same offline matrix, used as it is whatever κ_t "
        "(`PolicyTuner(kappa_relative=False)`, the behaviour before);",
        "* MARKOV (Ψ̄ ≥ κ_t) and rent (Σ Ψ̄ since the last retrain ≥ κ_t) compare with κ_t by construction.",
        "",
        f"Schedules: {', '.join(f'{k} (`{v}`)' for k, v in SCHEDULES.items() if v)}; values are multiples of "
        "the level, day first. The levels are the 10 log-spaced κ of the paper-implied sweep per dataset "
        f"({ranges}). Seeds: {', '.join(map(str, seeds))} per stream. SCPE in percent; cells where the "
        "ORACLE's cost is ≤ 0 are left out.", "",
        "Δ = SCPE(relative) − SCPE(blind), **negative when κ-relative is better**; its 95% interval is a "
        "t-interval over seeds (one observation per seed: its mean Δ over the 10 levels). wins: seeds where "
        "relative's mean SCPE is lower (ties are not wins). Under the constant κ, relative and blind are the "
        "same policy bit for bit (Δ = 0 exactly).", "",
        "## Mean SCPE (%) against the ORACLE with κ_t", "",
        "| Dataset | schedule | CARA-T rel | blind | Δ [95% CI] | wins | CARA-CT rel | blind | Δ [95% CI] | wins "
        "| MARKOV | rent |",
        "|---|---|---:|---:|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in records:
        t, c = r["cara-t"], r["cara-ct"]
        lines.append(f"| {_label(r['stream'])} | {r['schedule']} | {t['a']:.2f} | {t['b']:.2f} | {_ci(t)} | "
                     f"{t['wins']}/{t['seeds']} | {c['a']:.2f} | {c['b']:.2f} | {_ci(c)} | {c['wins']}/{c['seeds']} "
                     f"| {r['markov']:.2f} | {r['rent']:.2f} |")
    lines += ["", "## Overall", ""]
    for label in SCHEDULES:
        rows = [r for r in records if r["schedule"] == label]
        if label == "constant" or not rows:
            continue
        for p in BLIND:
            better = sum(r[p]["ci95"][1] < 0 for r in rows)
            worse = sum(r[p]["ci95"][0] > 0 for r in rows)
            mean = np.mean([r[p]["diff"] for r in rows])
            lines.append(f"* {label}, {LABELS[p]}: mean Δ {mean:+.2f} points over the {len(rows)} streams; "
                         f"relative better (interval below 0) on {better}, worse (above 0) on {worse}.")
    lines += ["", "## Retrain decisions (mean per run)", "",
              "| Dataset | schedule | CARA-T rel | blind | CARA-CT rel | blind | ORACLE | τ ≤ 0 (rel, T / CT) |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        t, c = r["cara-t"], r["cara-ct"]
        lines.append(f"| {_label(r['stream'])} | {r['schedule']} | {t['retrains_relative']:.1f} | "
                     f"{t['retrains_blind']:.1f} | {c['retrains_relative']:.1f} | {c['retrains_blind']:.1f} | "
                     f"{r['oracle_retrains']:.1f} | {100 * t['threshold_le_0']:.0f}% / "
                     f"{100 * c['threshold_le_0']:.0f}% |")
    undefined = int((frame[frame["policy"] == "oracle"]["oracle_cost"] <= 0).sum())
    total = int((frame["policy"] == "oracle").sum())
    lines += ["", "τ ≤ 0: share of runs whose tuned threshold is ≤ 0, which the relative rule leaves unscaled "
              "(`cara_mlflow.policies.CaraT`).", "",
              f"{undefined} of {total} (stream, schedule, seed, level) cells have an ORACLE cost ≤ 0 and are left "
              "out.", "", "![Δ per stream and schedule](kappa_schedule.png)", "",
              f"Wall time: {wall:.1f} s on {jobs} process(es), models from the cache "
              f"(machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}).", ""]
    path = out / "kappa_schedule.md"
    path.write_text("\n".join(lines))
    return path


def write_figure(records: list[dict], by_step: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [s for s in SCHEDULES if s != "constant"]
    streams = [s for s in SYNTHETIC if any(r["stream"] == s for r in records)]
    colours = dict(zip(labels, ["tab:blue", "tab:orange", "tab:green"]))
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    for col, p in enumerate(BLIND):
        ax = axes[0, col]
        for k, label in enumerate(labels):
            xs, ys, lo, hi = [], [], [], []
            for i, s in enumerate(streams):
                r = next(r for r in records if r["stream"] == s and r["schedule"] == label)[p]
                xs.append(i + (k - 1) * 0.22)
                ys.append(r["diff"])
                lo.append(r["diff"] - r["ci95"][0])
                hi.append(r["ci95"][1] - r["diff"])
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, color=colours[label], label=label)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(streams)), [_label(s) for s in streams])
        ax.set_ylabel("Δ SCPE, relative − blind (points)")
        ax.set_title(f"{LABELS[p]}: κ-relative − κ-blind (mean over levels, 95% CI)")
        ax.legend(fontsize=8)
        ax = axes[1, col]
        for label in labels:
            for s in streams:
                pts = sorted((b["step"], b[f"{p}_diff"]) for b in by_step
                             if b["stream"] == s and b["schedule"] == label)
                ax.plot([x for x, _ in pts], [y for _, y in pts], color=colours[label], alpha=0.35, lw=1)
            mean = [np.nanmean([b[f"{p}_diff"] for b in by_step if b["schedule"] == label and b["step"] == k])
                    for k in range(10)]
            ax.plot(range(10), mean, color=colours[label], lw=2.5, label=f"{label} (mean of streams)")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("κ level: step of the paper-implied sweep (0 = lowest)")
        ax.set_ylabel("Δ SCPE (points), mean over seeds")
        ax.set_title(f"{LABELS[p]}: Δ by κ level (thin: one stream)")
        ax.legend(fontsize=8)
    fig.suptitle("Policies under a changing κ (RF, 6 synthetic streams, 10 seeds): negative = κ-relative better")
    fig.tight_layout()
    path = out / "kappa_schedule.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True,
                        help="the reproduction's cache of prepared streams (reproduce.py --cache DIR)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--streams", default=",".join(SYNTHETIC))
    parser.add_argument("--seeds", type=int, default=None, help="seeds per stream (default: reproduce.py's, 10)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    for spec in SCHEDULES.values():
        if spec:
            parse_kappa_schedule(spec)
    streams = [s.strip() for s in args.streams.split(",") if s.strip()]
    tasks = [(s, k, str(args.cache)) for s in streams for k in range(args.seeds or SEEDS[s])]
    clock = time.perf_counter()
    results = []
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for done, r in enumerate(pool.imap_unordered(run_task, tasks), 1):
            results.append(r)
            note = "" if r["cached"] else " (not in the cache: trained anew)"
            print(f"[{done}/{len(tasks)}] {r['stream']} seed {r['seed']}: load {r['timings']['load']:.1f} s, "
                  f"evaluate {r['timings']['evaluate']:.1f} s{note}", flush=True)
    wall = time.perf_counter() - clock
    records, by_step, frame = summarise(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kappa_schedule.json").write_text(json.dumps(
        {"model": MODEL, "schedules": SCHEDULES, "wall_seconds": wall, "jobs": args.jobs, "summary": records,
         "by_level": by_step,
         "cells": [dict(row, stream=r["stream"], seed=r["seed"])
                   for r in sorted(results, key=lambda r: (r["stream"], r["seed"])) for row in r["rows"]]},
        separators=(",", ":")))
    figure = write_figure(records, by_step, args.out)
    print(f"done in {wall:.1f} s: {write_report(records, frame, wall, args.jobs, args.out)}, {figure}")


if __name__ == "__main__":
    main()
