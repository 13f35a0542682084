"""Beyond the paper (issue 21, in progress): candidate thresholds for CARA-T's rule at high κ, scored
from the reproduction's cache.

At high κ the offline window (25 batches) holds 0–2 ORACLE retrains, so CARA-T's exact tuning
reduces to the tie-break inside a wide optimal interval (the midpoint of the widest). Each
candidate here is another τ for the same rule (Retrain iff Ψ̄ ≥ τ·κ_t/κ̄), read off the offline
matrix only, never off the online batches it is scored on:

* ``mid``: CARA-T as tuned (:class:`cara_mlflow.tuning.PolicyTuner`);
* ``high``: the midpoint of the highest optimal interval instead of the widest;
* ``multi``: exact tuning of the cost summed over the offline runs starting at batches 0, 3, 6,
  9 and 12 (multi-start: each start sees other drift phases);
* ``rr``: the renewal-reward rate g* = min_L (κ̄ + Σ_{a<L} f(a)) / L of the mean staleness-by-age
  curve f of the offline window (retrain when the staleness paid exceeds the long-run rate);
* ``boot``: the median τ* of CARA-T tuned on 25 random contiguous sub-windows (half the window or
  more; seeded);
* ``ens``: the median of the five above (the spike's ensemble, the baseline to beat);

and CARA-CT and NR as tuned, against the ORACLE of the online window (batches 25–99), at the 10 κ
of each dataset's paper-implied sweep (:func:`cara_mlflow.streams.kappa_ranges.kappa_sweep`).
Prints the mean SCPE per dataset and κ half, and each candidate's paired difference to CARA-T
(per seed: the mean over the half's κ; a 95% t-interval over seeds).

Needs the cache of ``reproduce.py --prepare-only --cache DIR`` (the κ-independent part: models,
offline and online Ψ̄); datasets or seeds missing from it are skipped and named.

    python benchmarks/beyond.py --cache /tmp/cara-cache [--json out.json]
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
from cara_mlflow.simulate import run_policy, scpe, strategy_cost
from cara_mlflow.streams.kappa_ranges import kappa_sweep
from cara_mlflow.tuning import PolicyTuner

CANDIDATES = ("mid", "high", "multi", "rr", "boot", "ens")
BASELINES = ("cara-ct", "nr")
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


def score_seed(prepared, stream: str, seed: int) -> list[dict]:
    rows = []
    for step, kappa in enumerate(kappa_sweep(stream)):
        kappas = kappa_per_batch(float(kappa), None, prepared.n_batches)
        C_off = prepared.offline_terms.cost_matrix(kappas[:prepared.n_offline])
        C_on = prepared.online_terms.cost_matrix(kappas[prepared.n_offline:])
        oracle = solve(C_on)
        where = {"stream": stream, "seed": seed, "step": step, "kappa": float(kappa)}
        tau, kbar = estimates(C_off)
        for name, value in tau.items():
            strategy, _ = run_policy(CaraT(tau=value, kappa=kbar), C_on, start=prepared.n_offline)
            rows.append({**_row(name, strategy_cost(C_on, strategy), strategy, oracle, **where), "tau": value})
        for name in BASELINES:
            params = PolicyTuner(name).fit(C_off).best_params_
            strategy, _ = run_policy(make_policy(name, **params), C_on, start=prepared.n_offline)
            rows.append(_row(name, strategy_cost(C_on, strategy), strategy, oracle, **where))
    return rows


def summarise(rows: list[dict]):
    """Mean SCPE per (stream, half, policy) and each policy's paired difference to CARA-T ("mid")."""
    import pandas as pd
    from scipy.stats import t

    frame = pd.DataFrame(rows)
    frame["half"] = np.where(frame["step"].isin(HIGH_STEPS), "high", "low")
    wide = frame.pivot_table(index=["stream", "half", "seed", "step"], columns="policy", values="scpe")
    out = []
    for (stream, half), g in wide.groupby(level=["stream", "half"]):
        per_seed = g.groupby(level="seed").mean()
        for policy in per_seed.columns:
            diff = (per_seed[policy] - per_seed["mid"]).dropna()
            n = diff.size
            hw = float(t.ppf(0.975, n - 1) * diff.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
            out.append({"stream": stream, "half": half, "policy": policy, "seeds": int(n),
                        "scpe": float(per_seed[policy].mean()), "diff": float(diff.mean()),
                        "ci95": [float(diff.mean()) - hw, float(diff.mean()) + hw],
                        "relative": float(diff.mean() / per_seed["mid"].mean())})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True, help="reproduce.py's --cache directory")
    parser.add_argument("--json", default=None, help="write every cell and the summary here")
    args = parser.parse_args()
    rows, missing = [], []
    for _, stream in ROWS:
        for seed in range(SEEDS[stream]):
            path = Path(args.cache) / "rf" / f"{stream}-v{STREAM_VERSIONS.get(stream, 1)}-seed{seed}.pkl"
            if not path.exists():
                missing.append(f"{stream}:{seed}")
                continue
            rows += score_seed(pickle.loads(path.read_bytes()), stream, seed)
    summary = summarise(rows)
    for r in summary:
        print(f"{r['stream']:>12} {r['half']:>4} {r['policy']:>8}: SCPE {r['scpe']:8.2f}  vs CARA-T "
              f"{100 * r['relative']:+7.1f}%  Δ {r['diff']:+8.2f} [{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}] "
              f"({r['seeds']} seeds)")
    if missing:
        print(f"not in the cache, skipped: {', '.join(missing)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary, "missing": missing}, default=float))


if __name__ == "__main__":
    main()
