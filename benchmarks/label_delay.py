"""The cost of label delay (issue 18 part 4): wait for the labels, or decide provisionally and reconcile?

For every synthetic stream and ELECTRICITY, seeds 0–9, the SGD logistic model (``lr``), κ = the geometric
middle of the stream's paper-implied range (√(κ_lo·κ_hi), :data:`cara_mlflow.streams.kappa_ranges.PAPER_KAPPA_RANGES`),
the paper's windows (100 batches, offline 0–24, online 25–99): CARA-T and CARA-CT are tuned offline as
``simulate`` tunes them (no delay offline), then run online with labels L ∈ {1, 3, 5} batches late
(:mod:`cara_mlflow.label_delay`) in mode (a) *wait* and mode (b) *provisional* (Ψ̂ from the loss estimator,
reconciled when the labels land), against the ORACLE (labels at once, the SCPE yardstick) and the
delay-constrained ORACLE. NR (never retrain) is the floor of doing nothing; L = 0 is today's simulate.

Writes ``benchmarks/results/label_delay.json`` (every run), ``label_delay.md`` (the table: per stream and L,
mean cost of each mode, both ORACLEs, SCPE, and the paired difference (b) − (a) over seeds with its 95%
t-interval) and ``label_delay.png`` (cost against L, one panel per stream).

It also measures, per run, the provisional mode fed the realized Ψ̄ (a perfect estimate, unknowable at
decision time) and with Ψ̂ summed over the batch's data rows instead of its queries: what a better
estimate could buy, and what the queries as Ψ̂'s points cost. Another model writes ``label_delay_<model>.*``.

Usage (from the repository root):
    nice -n 10 .venv/bin/python benchmarks/label_delay.py            # runs, then writes the three files
    nice -n 10 .venv/bin/python benchmarks/label_delay.py --model rf --streams gauss-d,covcon-d
    .venv/bin/python benchmarks/label_delay.py --report-only          # rewrites md + png from the json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from cara_mlflow.label_delay import PsiEstimates, evaluate_delayed, run_provisional
from cara_mlflow.policies import make_policy
from cara_mlflow.simulate import evaluate, prepare
from cara_mlflow.streams import make_stream
from cara_mlflow.streams.kappa_ranges import PAPER_KAPPA_RANGES

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DATA = Path("/work/shared/data/elec2.csv.gz")
STREAMS = ("gauss-d", "gauss-s", "circle-d", "circle-s", "covcon-d", "covcon-s", "electricity")
DELAYS = (1, 3, 5)
POLICIES = ("cara-t", "cara-ct", "nr")
REPORTED = ("cara-t", "cara-ct")


def middle_kappa(stream: str) -> float:
    lo, hi = PAPER_KAPPA_RANGES[stream]
    return float(np.sqrt(lo * hi))


def run_stream(stream: str, seed: int, model: str) -> list[dict]:
    source = make_stream(stream, data=DATA, seed=seed) if stream == "electricity" else stream
    prepared = prepare(source, model=model, seed=seed, keep_models=True)
    kappa = middle_kappa(stream)
    report = evaluate(prepared, kappa=kappa, policies=list(POLICIES))
    estimates = PsiEstimates(prepared)
    data_estimates = estimates.with_points("data")
    rows = [{"perfect": r.strategy_cost, "data": r.strategy_cost, "psi_bias_data": None, "psi_mae_data": None,
             "stream": stream, "seed": seed, "model": model, "kappa": kappa, "L": 0,
             "policy": r.policy,
             "wait": r.strategy_cost, "provisional": r.strategy_cost, "oracle": r.oracle_cost,
             "delayed_oracle": r.oracle_cost, "retrains_wait": r.n_retrains, "retrains_prov": r.n_retrains,
             "catch_ups": 0, "deferred": 0, "psi_bias": None, "psi_mae": None} for r in report.results]
    C = report.online_matrix
    for L in DELAYS:
        d = evaluate_delayed(prepared, report, L, estimates=estimates)
        for r in d.results:
            # the provisional mechanism with a perfect Ψ̂ (the realized Ψ̄, unknowable then): what a better
            # estimator could at most buy
            perfect = run_provisional(make_policy(r.policy, **r.params), C, label_delay=L, start=report.n_offline,
                                      estimate=lambda s, t: float(C[s, t]))
            # Ψ̂ over the batch's data rows, known before their labels (the lifecycle knows only the queries)
            on_data = run_provisional(make_policy(r.policy, **r.params), C, label_delay=L, start=report.n_offline,
                                      estimate=lambda s, t, L=L: data_estimates(s, t, L))
            rows.append({"perfect": perfect.cost, "data": on_data.cost, "psi_bias_data": on_data.psi_bias,
                         "psi_mae_data": on_data.psi_mae, "stream": stream, "seed": seed, "model": model,
                         "kappa": kappa, "L": L,
                         "policy": r.policy, "wait": r.wait.cost, "provisional": r.provisional.cost,
                         "oracle": d.oracle_cost, "delayed_oracle": d.delayed_oracle_cost,
                         "retrains_wait": r.wait.n_retrains, "retrains_prov": r.provisional.n_retrains,
                         "catch_ups": r.provisional.n_catch_ups, "deferred": r.provisional.n_deferred,
                         "psi_bias": r.provisional.psi_bias, "psi_mae": r.provisional.psi_mae})
    return rows


def _interval(diffs: np.ndarray) -> tuple[float, float, float]:
    from scipy import stats

    mean = float(diffs.mean())
    if diffs.size < 2:
        return mean, np.nan, np.nan
    half = float(stats.t.ppf(0.975, diffs.size - 1) * diffs.std(ddof=1) / np.sqrt(diffs.size))
    return mean, mean - half, mean + half


def summary(rows: list[dict]) -> list[dict]:
    """Per (stream, L, policy): means over seeds, and the paired (b) − (a) with its 95% t-interval."""
    out = []
    keys = sorted({(r["stream"], r["L"], r["policy"]) for r in rows}, key=lambda k: (STREAMS.index(k[0]), k[1], k[2]))
    for stream, L, policy in keys:
        part = [r for r in rows if (r["stream"], r["L"], r["policy"]) == (stream, L, policy)]
        get = {k: np.array([r[k] for r in part], dtype=float) for k in
               ("wait", "provisional", "perfect", "data", "oracle", "delayed_oracle", "catch_ups", "retrains_wait",
                "retrains_prov")}
        diff, lo, hi = _interval(get["provisional"] - get["wait"])
        pdiff, plo, phi = _interval(get["perfect"] - get["wait"])
        ddiff, dlo, dhi = _interval(get["data"] - get["wait"])
        bias_data = [r["psi_bias_data"] for r in part if r["psi_bias_data"] is not None]
        scpe = {m: float(np.mean(100 * np.abs(get[m] - get["oracle"]) / np.abs(get["oracle"])))
                for m in ("wait", "provisional")}
        bias = [r["psi_bias"] for r in part if r["psi_bias"] is not None]
        mae = [r["psi_mae"] for r in part if r["psi_mae"] is not None]
        out.append({"stream": stream, "L": L, "policy": policy, "seeds": len(part), "kappa": part[0]["kappa"],
                    **{k: float(v.mean()) for k, v in get.items()},
                    "scpe_wait": scpe["wait"], "scpe_provisional": scpe["provisional"],
                    "diff": diff, "diff_lo": lo, "diff_hi": hi, "perfect_diff": pdiff, "perfect_lo": plo,
                    "perfect_hi": phi, "data_diff": ddiff, "data_lo": dlo, "data_hi": dhi,
                    "psi_bias_data": float(np.mean(bias_data)) if bias_data else None,
                    "psi_bias": float(np.mean(bias)) if bias else None,
                    "psi_mae": float(np.mean(mae)) if mae else None})
    return out


def _ci(r: dict, key: str) -> str:
    return f"{r[key + '_diff' if key else 'diff']:+.1f} [{r[key + '_lo' if key else 'diff_lo']:+.1f}, " \
           f"{r[key + '_hi' if key else 'diff_hi']:+.1f}]"


def markdown(table: list[dict], meta: dict) -> str:
    rows = [r for r in table if r["policy"] in REPORTED and r["L"] > 0]
    lines = ["# The cost of label delay", "",
             f"Model `{meta['model']}`, seeds 0–{meta['seeds'] - 1}, 100 batches (offline 0–24, online 25–99), κ = the "
             "geometric middle of each stream's paper-implied range. Policies tuned offline with no delay, then run "
             "with labels L batches late: (a) *wait* for the labels, (b) *provisional* on the estimated Ψ̂ (over the "
             "queries, the only points known before the labels, as in the lifecycle) with reconciliation and "
             "catch-up retrains. Costs are means over seeds; SCPE is against the ORACLE with labels at once (its "
             "per-seed mean; where the ORACLE's cost is near 0, as on GAUSS-S, SCPE is not informative: read the "
             "costs); *delayed ORACLE* is the best any strategy can do with the delay. (b) − (a): the paired "
             "difference of costs over seeds, with its 95% t-interval (negative: provisional is cheaper). "
             f"Measured by `benchmarks/label_delay.py` in {meta['seconds'] / 60:.0f} min ({meta['machine']}).", "",
             "| stream | κ | L | policy | (a) wait | (b) provisional | (b) − (a) [95% CI] | SCPE (a) % | SCPE (b) % | "
             "catch-ups | retrains a / b | ORACLE | delayed ORACLE |",
             "|---|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['stream']} | {r['kappa']:.3g} | {r['L']} | {r['policy']} | {r['wait']:.1f} | "
                     f"{r['provisional']:.1f} | {_ci(r, '')} | {r['scpe_wait']:.1f} | {r['scpe_provisional']:.1f} | "
                     f"{r['catch_ups']:.1f} | {r['retrains_wait']:.1f} / {r['retrains_prov']:.1f} | "
                     f"{r['oracle']:.1f} | {r['delayed_oracle']:.1f} |")
    lines += ["", "## Where the provisional mode loses: the estimate, or the mechanism?", "",
              "Ψ̂ bias / MAE: mean (Ψ̂ − Ψ̄) and mean |Ψ̂ − Ψ̄| over the batches (b) decided on, Ψ̂ over the queries "
              "(as (b) above) and over the batch's data rows (if they came before their labels). *(b) on data − "
              "(a)*: the provisional run with Ψ̂ over the data rows. *perfect Ψ̂ − (a)*: the provisional mechanism "
              "fed the realized Ψ̄ itself (unknowable at decision time): what a better estimator could at most buy. "
              "Paired differences with 95% t-intervals.", "",
              "| stream | L | policy | Ψ̂ bias / MAE (queries) | Ψ̂ bias (data rows) | (b) on data − (a) | "
              "perfect Ψ̂ − (a) |", "|---|---:|---|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['stream']} | {r['L']} | {r['policy']} | {r['psi_bias']:+.2f} / {r['psi_mae']:.2f} | "
                     f"{r['psi_bias_data']:+.2f} | {_ci(r, 'data')} | {_ci(r, 'perfect')} |")
    lines += ["", "L = 0 (today's simulate, both modes equal) and NR (never retrain), means over seeds:", "",
              "| stream | CARA-T | CARA-CT | NR | ORACLE |", "|---|---:|---:|---:|---:|"]
    for stream in dict.fromkeys(r["stream"] for r in table):
        at0 = {r["policy"]: r for r in table if r["stream"] == stream and r["L"] == 0}
        lines.append(f"| {stream} | {at0['cara-t']['wait']:.1f} | {at0['cara-ct']['wait']:.1f} | "
                     f"{at0['nr']['wait']:.1f} | {at0['cara-t']['oracle']:.1f} |")
    return "\n".join(lines) + "\n"


def figure(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    streams = list(dict.fromkeys(r["stream"] for r in table))
    cols = min(4, len(streams) + 1)                 # one panel per stream, and one for the legend
    n_rows = -(-(len(streams) + 1) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.25 * cols, 4.25 * n_rows), squeeze=False)
    styles = {("cara-t", "wait"): ("C0", "--"), ("cara-t", "provisional"): ("C0", "-"),
              ("cara-ct", "wait"): ("C1", "--"), ("cara-ct", "provisional"): ("C1", "-")}
    for ax, stream in zip(axes.flat, streams):
        part = [r for r in table if r["stream"] == stream]
        Ls = sorted({r["L"] for r in part})
        for (policy, mode), (color, ls) in styles.items():
            ys = [next(r[mode] for r in part if r["L"] == L and r["policy"] == policy) for L in Ls]
            ax.plot(Ls, ys, color=color, ls=ls, marker="o", label=f"{policy.upper()} {mode}")
        for key, color, label in (("oracle", "k", "ORACLE (labels at once)"),
                                  ("delayed_oracle", "0.5", "delayed ORACLE")):
            ax.plot(Ls, [next(r[key] for r in part if r["L"] == L) for L in Ls], color=color, ls=":", marker="s",
                    label=label)
        nr = [next(r["wait"] for r in part if r["L"] == L and r["policy"] == "nr") for L in Ls]
        ax.axhline(nr[0], color="C3", lw=0.8, label="NR (never retrain)")
        ax.set_title(f"{stream} (κ = {part[0]['kappa']:.3g})")
        ax.set_xticks(Ls)
        ax.set_xlabel("label delay L (batches)")
        ax.set_ylabel("online strategy cost (mean of seeds)")
    for ax in axes.flat[len(streams):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    axes.flat[-1].legend(handles, labels, loc="center", fontsize=10)
    fig.suptitle("Cost against label delay: wait (dashed) vs provisional + reconciliation (solid)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _stem(model: str) -> str:
    return "label_delay" if model == "lr" else f"label_delay_{model}"


def write_outputs(payload: dict) -> None:
    table = summary(payload["rows"])
    payload["summary"] = table
    stem = _stem(payload["meta"]["model"])
    (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=1))
    (RESULTS / f"{stem}.md").write_text(markdown(table, payload["meta"]))
    figure(table, RESULTS / f"{stem}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--model", default="lr")
    parser.add_argument("--streams", default=",".join(STREAMS))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if args.report_only:
        write_outputs(json.loads((RESULTS / f"{_stem(args.model)}.json").read_text()))
        return
    clock, rows = time.perf_counter(), []
    meta = {"model": args.model, "seeds": args.seeds, "delays": list(DELAYS), "policies": list(POLICIES),
            "machine": f"{platform.machine()}, 1 process, nice 10"}
    for stream in args.streams.split(","):
        for seed in range(args.seeds):
            step = time.perf_counter()
            rows += run_stream(stream, seed, args.model)
            print(f"{stream} seed {seed}: {time.perf_counter() - step:.1f} s", flush=True)
        meta["seconds"] = time.perf_counter() - clock
        write_outputs({"meta": meta, "rows": rows})      # after every stream: a partial run keeps its streams
    print(f"done in {(time.perf_counter() - clock) / 60:.1f} min")


if __name__ == "__main__":
    main()
