"""Beyond the paper (issue 21): policies for the high-κ gap, scored from the reproduction's cache.

At high κ the offline window (25 batches) holds 0–2 ORACLE retrains, so CARA-T's exact tuning
reduces to the tie-break inside a wide optimal interval (the midpoint of the widest). Every policy
here keeps CARA-T's rule (Retrain iff Ψ̄ ≥ τ·κ_t/κ̄) and differs in the information τ is tuned on,
never the online batches it is scored on beyond those already seen:

New (``cara_mlflow.tuning`` pool, ``cara_mlflow.retune``):

* ``pool``: τ tuned exactly on the summed cost of the own offline window and the offline windows of
  the stream's other seeds at the same κ (a team's other models of the same process);
* ``grow``: τ re-tuned every 5 batches on the offline window plus the online batches seen so far
  (:func:`cara_mlflow.retune.run_retuned`);
* ``pool+grow``: both.

Baselines: ``mid`` (CARA-T as tuned, the reference), ``cara-ct`` and ``nr`` as tuned, the ORACLE of the
online window, and the spike's τ estimators read off the offline matrix alone: ``rr``, the
renewal-reward rate g* = min_L (κ̄ + Σ_{a<L} f(a)) / L of the mean staleness-by-age curve f, and
``ens``, the median of five estimates (``mid``; ``high``, the midpoint of the highest optimal interval;
``multi``, exact tuning summed over the runs from batches 0, 3, 6, 9, 12; ``rr``; ``boot``, the median
τ* of 25 random sub-windows), the baseline to beat.

On the real datasets the seeds share their batches and differ in the query sample only, so ``pool``
there pools near-copies of the own window: it has no independent history to add.

Scored at the 10 κ of each dataset's paper-implied sweep
(:func:`cara_mlflow.streams.kappa_ranges.kappa_sweep`) against the ORACLE of batches 25–99; per
dataset and κ half (steps 0–4 low, 5–9 high), the mean SCPE and each policy's paired difference to
CARA-T (per seed: the mean over the half's κ; a 95% t-interval over seeds). Writes
``benchmarks/results/beyond.md``, ``beyond.json`` and ``beyond.png``.

Needs the cache of ``reproduce.py --prepare-only --cache DIR`` (the κ-independent part: models,
offline and online Ψ̄); datasets or seeds missing from it are skipped and named.

    nice .venv/bin/python benchmarks/beyond.py --cache /tmp/cara-cache [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
from reproduce import HIGH_STEPS, ROWS, SEEDS, STREAM_VERSIONS

from cara_mlflow.kappa_schedule import kappa_per_batch
from cara_mlflow.oracle import solve
from cara_mlflow.policies import CaraT, make_policy, mean_kappa
from cara_mlflow.retune import run_retuned
from cara_mlflow.simulate import run_policy, scpe, strategy_cost
from cara_mlflow.streams.kappa_ranges import kappa_sweep
from cara_mlflow.tuning import PolicyTuner

CANDIDATES = ("mid", "high", "multi", "rr", "boot", "ens")
BASELINES = ("cara-ct", "nr")
NEW = ("pool", "grow", "pool+grow")
EVERY = 5           # grow: re-tune every 5 online batches
SENSITIVITY = (2, 10)   # and every 2 or 10, to show how much the choice of 5 matters
REPORTED = ("mid", "cara-ct", "nr", "rr", "ens", *NEW)
LABELS = {"mid": "CARA-T", "cara-ct": "CARA-CT", "nr": "NR", "rr": "rr", "ens": "ens",
          "pool": "pool", "grow": "grow", "pool+grow": "pool+grow"}
STARTS = (0, 3, 6, 9, 12)
PAD = 0.1           # as the tuner: the outer intervals reach 10% of the thresholds' spread beyond them


def _intervals(C_list: list[np.ndarray], kbar: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every interval of τ (left, right] between the candidate thresholds of the windows ``C_list``
    and the summed offline cost of CARA-T (relative to κ̄) on each, as the tuner bounds them."""
    values = np.unique(np.concatenate([CaraT.offline_thresholds(C, kappa=kbar) for C in C_list]))
    taus = np.concatenate([values, [np.inf]])
    # the tuner's own kernel (τ = ∞, "never", is not a τ the constructor takes)
    cost = sum(CaraT._offline_costs(C, {"tau": taus, "kappa": np.array(kbar)}, 0)[0] for C in C_list)
    spread = float(values[-1] - values[0])
    lo, hi = values[0] - PAD * spread, max(values[-1] + PAD * spread, kbar)
    return np.concatenate([[lo], values]), np.concatenate([values, [hi]]), cost


def widest_optimal(C_list: list[np.ndarray], kbar: float) -> float:
    left, right, cost = _intervals(C_list, kbar)
    optimal = np.flatnonzero(cost == cost.min())
    k = optimal[np.argmax((right - left)[optimal])]
    return float(0.5 * (left[k] + right[k]))


def highest_optimal(C: np.ndarray, kbar: float) -> float:
    left, right, cost = _intervals([C], kbar)
    k = np.flatnonzero(cost == cost.min())[-1]
    return float(0.5 * (left[k] + right[k]))


def age_curve(C: np.ndarray) -> np.ndarray:
    """f(a), a = 1 … T−1: the mean Ψ̄ of a model a batches after its own (every pair of the window)."""
    T = C.shape[0]
    return np.array([np.mean(np.diagonal(C, offset=a)) for a in range(1, T)])


def renewal_rate(C: np.ndarray, kbar: float) -> float:
    """g* = min over cycle lengths L = 1 … T of (κ̄ + Σ_{a=1}^{L−1} f(a)) / L."""
    paid = np.concatenate([[0.0], np.cumsum(age_curve(C))])
    return float(np.min((kbar + paid) / np.arange(1, paid.size + 1)))


def bootstrap_median(C: np.ndarray, kbar: float, draws: int = 25, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    T = C.shape[0]
    taus = []
    for _ in range(draws):
        n = int(rng.integers(T // 2, T + 1))
        a = int(rng.integers(0, T - n + 1))
        sub = C[a:a + n, a:a + n]
        taus.append(PolicyTuner("cara-t").fit(sub).best_params_["tau"] * kbar / mean_kappa(sub))
    return float(np.median(taus))


def estimates(C: np.ndarray) -> tuple[dict[str, float], float]:
    """Every candidate τ (at κ̄) on the offline matrix ``C``, and κ̄."""
    kbar = mean_kappa(C)
    tau = {"mid": PolicyTuner("cara-t").fit(C).best_params_["tau"], "high": highest_optimal(C, kbar),
           "multi": widest_optimal([C[s:, s:] for s in STARTS if s < C.shape[0] - 2], kbar),
           "rr": renewal_rate(C, kbar), "boot": bootstrap_median(C, kbar)}
    tau["ens"] = float(np.median(list(tau.values())))
    return tau, kbar


def _row(policy: str, cost: float, strategy: list[int], oracle, **where) -> dict:
    retrains = sum(1 for t in range(1, len(strategy)) if strategy[t] == t)
    return {**where, "policy": policy, "scpe": scpe(cost, oracle.cost) if oracle.cost > 0 else np.nan,
            "retrains": retrains, "oracle_retrains": len(oracle.retrain_at) - 1}


def windows(prepared, kappa: float) -> tuple[np.ndarray, np.ndarray]:
    kappas = kappa_per_batch(float(kappa), None, prepared.n_batches)
    return (prepared.offline_terms.cost_matrix(kappas[:prepared.n_offline]),
            prepared.online_terms.cost_matrix(kappas[prepared.n_offline:]))


def score_cell(C_off: np.ndarray, C_on: np.ndarray, pool: list[np.ndarray], start: int, where: dict) -> list[dict]:
    """Every policy on one (dataset, seed, κ): its online run against the ORACLE of ``C_on``."""
    oracle = solve(C_on)
    rows = []
    tau, kbar = estimates(C_off)
    for name, value in tau.items():
        strategy, _ = run_policy(CaraT(tau=value, kappa=kbar), C_on, start=start)
        rows.append({**_row(name, strategy_cost(C_on, strategy), strategy, oracle, **where), "tau": value})
    for name in BASELINES:
        params = PolicyTuner(name).fit(C_off).best_params_
        strategy, _ = run_policy(make_policy(name, **params), C_on, start=start)
        rows.append(_row(name, strategy_cost(C_on, strategy), strategy, oracle, **where))
    variants = [("pool", 0, pool), ("grow", EVERY, []), ("pool+grow", EVERY, pool)]
    variants += [(f"{name}{every}", every, pooled) for every in SENSITIVITY
                 for name, pooled in (("grow", []), ("pool+grow", pool))]
    for name, every, pooled in variants:
        run = run_retuned("cara-t", C_off, C_on, every=every, pool=pooled, start=start)
        rows.append({**_row(name, run.cost, run.strategy, oracle, **where), "tau": run.thresholds[-1][1]})
    return rows


def score_stream(prepared: dict, stream: str) -> list[dict]:
    """Every seed and κ of one dataset; ``prepared``: seed → the cache's prepared pair."""
    rows = []
    for step, kappa in enumerate(kappa_sweep(stream)):
        mats = {seed: windows(p, kappa) for seed, p in prepared.items()}
        for seed, (C_off, C_on) in mats.items():
            pool = [mats[other][0] for other in mats if other != seed]
            where = {"stream": stream, "seed": seed, "step": step, "kappa": float(kappa)}
            rows += score_cell(C_off, C_on, pool, prepared[seed].n_offline, where)
    return rows


def summarise(rows: list[dict]):
    """Mean SCPE per (stream, half, policy) and each policy's paired difference to CARA-T ("mid")."""
    import pandas as pd
    from scipy.stats import t

    frame = pd.DataFrame(rows)
    frame["half"] = np.where(frame["step"].isin(HIGH_STEPS), "high", "low")
    wide = frame.pivot_table(index=["stream", "half", "seed", "step"], columns="policy", values="scpe")
    retrains = frame.pivot_table(index=["stream", "half"], columns="policy", values="retrains")
    oracle_retrains = frame.groupby(["stream", "half"])["oracle_retrains"].mean()
    out = []
    for (stream, half), g in wide.groupby(level=["stream", "half"]):
        per_seed = g.groupby(level="seed").mean()
        for policy in per_seed.columns:
            diff = (per_seed[policy] - per_seed["mid"]).dropna()
            n = diff.size
            hw = float(t.ppf(0.975, n - 1) * diff.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
            base = float(per_seed["mid"].mean())
            out.append({"stream": stream, "half": half, "policy": policy, "seeds": int(n),
                        "scpe": float(per_seed[policy].mean()), "diff": float(diff.mean()),
                        "ci95": [float(diff.mean()) - hw, float(diff.mean()) + hw],
                        "relative": float(diff.mean() / base) if base else float("nan"),
                        "retrains": float(retrains.loc[(stream, half), policy]),
                        "oracle_retrains": float(oracle_retrains.loc[(stream, half)])})
    return out


def _cell(r: dict) -> str:
    if r["policy"] == "mid":
        return f"{r['scpe']:.1f}"
    base = r["scpe"] - r["diff"]
    if not base:                    # CARA-T matched the ORACLE on every seed: no relative change
        return f"{r['scpe']:.1f} (Δ {r['diff']:+.2f})"
    lo, hi = (100 * x / base for x in r["ci95"])
    return f"{r['scpe']:.1f} ({100 * r['relative']:+.0f}% [{lo:+.0f}, {hi:+.0f}])"


def goal_table(summary: list[dict]) -> list[str]:
    """Per new policy: the rows where the goal holds (high half ≥ 20% lower, low half ≤ 5% worse)."""
    by = {(r["stream"], r["half"], r["policy"]): r for r in summary}
    streams = [s for _, s in ROWS if (s, "high", "mid") in by]
    lines = ["| policy | high half ≥ 20% lower than CARA-T | low half ≤ 5% worse | goal met on |",
             "|---|---|---|---|"]
    for policy in ("rr", "ens", *NEW):
        high = [s for s in streams if by[(s, "high", policy)]["relative"] <= -0.2]
        low = [s for s in streams if by[(s, "low", policy)]["relative"] <= 0.05]
        both = [s for s in high if s in low]
        lines.append(f"| {LABELS[policy]} | {len(high)}/{len(streams)} | {len(low)}/{len(streams)} | "
                     f"{len(both)}/{len(streams)}: {', '.join(both) or 'none'} |")
    return lines


def sensitivity_table(summary: list[dict]) -> list[str]:
    """How much the re-tuning period matters: high-κ change vs CARA-T at every 2, 5 and 10 batches."""
    by = {(r["stream"], r["half"], r["policy"]): r for r in summary}
    streams = [s for _, s in ROWS if (s, "high", "mid") in by]
    names = [f"{n}{e}" if e != EVERY else n for n in ("grow", "pool+grow") for e in sorted((*SENSITIVITY, EVERY))]
    lines = ["Re-tuning period (high-κ half, change vs CARA-T; the tables above re-tune every "
             f"{EVERY} batches):", "", "| dataset | " + " | ".join(
                 n if n[-1].isdigit() else f"{n}{EVERY}" for n in names) + " |", "|---|" + "---|" * len(names)]
    for s in streams:
        lines.append(f"| {s} | " + " | ".join(f"{100 * by[(s, 'high', n)]['relative']:+.0f}%" for n in names) + " |")
    return lines


def report(summary: list[dict], missing: list[str], wall: float, out: Path) -> None:
    by = {(r["stream"], r["half"], r["policy"]): r for r in summary}
    streams = [s for _, s in ROWS if (s, "high", "mid") in by]
    lines = ["# Beyond the paper: the high-κ gap (issue 21)", "",
             "Written by `benchmarks/beyond.py` (its docstring defines every policy) from the reproduction's cache "
             f"(Random Forest; {wall:.0f} s). SCPE (%) against the ORACLE of the online batches 25–99, mean over "
             "the seeds and the half's 5 κ of the paper-implied sweep; in brackets the paired difference to "
             "CARA-T relative to CARA-T's SCPE, with its 95% t-interval over seeds (each seed's mean over "
             "the half's κ is one observation). ORACLE: its mean online retrains (its SCPE is 0).", ""]
    for half in ("high", "low"):
        lines += [f"## {half}-κ half", "",
                  "| dataset | seeds | ORACLE retrains | " + " | ".join(LABELS[p] for p in REPORTED) + " |",
                  "|---|---|---|" + "---|" * len(REPORTED)]
        for s in streams:
            r0 = by[(s, half, "mid")]
            cells = [_cell(by[(s, half, p)]) for p in REPORTED]
            lines.append(f"| {s} | {r0['seeds']} | {r0['oracle_retrains']:.1f} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Mean online retrains (high half)", "",
              "| dataset | ORACLE | " + " | ".join(LABELS[p] for p in REPORTED) + " |",
              "|---|---|" + "---|" * len(REPORTED)]
    for s in streams:
        lines.append(f"| {s} | {by[(s, 'high', 'mid')]['oracle_retrains']:.1f} | "
                     + " | ".join(f"{by[(s, 'high', p)]['retrains']:.1f}" for p in REPORTED) + " |")
    lines += ["", "## The goal (every dataset row)", "", *goal_table(summary), "",
              *sensitivity_table(summary), "",
              "![paired difference to CARA-T](beyond.png)", ""]
    if missing:
        lines += [f"Not in the cache, skipped: {', '.join(missing)}.", ""]
    (out / "beyond.md").write_text("\n".join(lines))


def figure(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {(r["stream"], r["half"], r["policy"]): r for r in summary}
    streams = [s for _, s in ROWS if (s, "high", "mid") in by]
    shown = ("cara-ct", "ens", *NEW)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    for ax, half in zip(axes, ("high", "low")):
        for k, policy in enumerate(shown):
            x = np.arange(len(streams)) + (k - (len(shown) - 1) / 2) * 0.16
            rel = [by[(s, half, policy)] for s in streams]
            base = [r["scpe"] - r["diff"] for r in rel]
            y = [100 * r["relative"] for r in rel]
            err = [[100 * (r["diff"] - r["ci95"][0]) / b if b else 0.0 for r, b in zip(rel, base)],
                   [100 * (r["ci95"][1] - r["diff"]) / b if b else 0.0 for r, b in zip(rel, base)]]
            ax.errorbar(x, np.clip(y, -100, 150), yerr=err, fmt="o", ms=4, capsize=2, label=LABELS[policy])
        ax.axhline(0, color="k", lw=0.8)
        ax.axhline(-20 if half == "high" else 5, color="grey", ls="--", lw=0.8)
        ax.set_xticks(np.arange(len(streams)), streams, rotation=30)
        ax.set_ylim(-100, 150)
        ax.set_title(f"{half}-κ half: SCPE vs CARA-T (%, 95% CI over seeds; clipped at 150)")
    axes[0].set_ylabel("paired difference / CARA-T's SCPE (%)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    import time

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True, help="reproduce.py's --cache directory")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"),
                        help="where beyond.md, beyond.json and beyond.png go")
    args = parser.parse_args()
    clock = time.perf_counter()
    rows, missing = [], []
    for _, stream in ROWS:
        prepared = {}
        for seed in range(SEEDS[stream]):
            path = Path(args.cache) / "rf" / f"{stream}-v{STREAM_VERSIONS.get(stream, 1)}-seed{seed}.pkl"
            if path.exists():
                prepared[seed] = pickle.loads(path.read_bytes())
            else:
                missing.append(f"{stream}:{seed}")
        rows += score_stream(prepared, stream) if prepared else []
        print(f"{stream}: {len(prepared)} seeds ({time.perf_counter() - clock:.0f} s)", flush=True)
    summary = summarise(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "beyond.json").write_text(json.dumps({"summary": summary, "missing": missing}, default=float, indent=1))
    report(summary, missing, time.perf_counter() - clock, out)
    figure(summary, out / "beyond.png")
    print((out / "beyond.md").read_text())


if __name__ == "__main__":
    main()
