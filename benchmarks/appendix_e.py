"""Appendix E of the paper: retraining versus incremental updating with a Hoeffding tree.

Base model: river's ``HoeffdingTreeClassifier`` (the paper used scikit-multiflow's, which is
no longer maintained; river is its successor). Three retraining algorithms, which discard the
model and fit a new tree on the current batch:
    ALWAYS-RETRAIN  every online batch;
    ADWIN-RETRAIN   when river's ADWIN fires on the model's per-sample errors;
    CARA-T-RETRAIN  CARA-T tuned offline, over the κ sweep of ``reproduce.py``;
and three incremental ones, which keep one tree and feed it the current batch:
    ALWAYS-UPDATE   every online batch;
    ADWIN-UPDATE    when ADWIN fires;
    HAT-UPDATE      river's ``HoeffdingAdaptiveTreeClassifier`` (ADWIN inside every node),
                    updated on every batch.
Each gives the mean prequential query accuracy over online batches 26–99 (queries answered by
the model in use before the decision, as in ``cara_mlflow.simulate``) and the total wall time
spent fitting/updating on online batches (the initial model on batch 25 is common to all and
not counted). Fit times are measured per batch, once per (dataset, seed), and summed over the
batches each algorithm retrained on, so CARA-T's sweep does not refit anything.

Usage (from the repository root):
    .venv/bin/python benchmarks/appendix_e.py [--streams covcon-d,electricity,...] [--seeds 3]
Writes benchmarks/results/appendix_e.md, appendix_e.csv and appendix_e.png.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce import DATA_DIR, DATA_FILES, MULTIPLES, RESULTS, _write_json, offline_scale  # noqa: E402

ALGORITHMS = ["ALWAYS-RETRAIN", "ADWIN-RETRAIN", "CARA-T-RETRAIN", "ALWAYS-UPDATE", "ADWIN-UPDATE", "HAT-UPDATE"]


class RiverTree:
    """A river Hoeffding tree behind the ``fit``/``predict`` interface the simulation expects.

    ``fit`` starts a new tree (a Retrain); ``update`` feeds more rows to the same tree (an
    Update). ``fit_seconds`` keeps the wall time of every ``fit``, in call order.

    >>> X, y = np.array([[0.0], [1.0]] * 50), np.array([0, 1] * 50)
    >>> RiverTree().fit(X, y).predict(np.array([[0.0], [1.0]])).tolist()
    [0, 1]
    """

    fit_seconds: list = []

    def __init__(self, adaptive: bool = False, seed: int = 0):
        self.adaptive, self.seed = adaptive, seed
        self.tree = None

    def _new_tree(self):
        from river.tree import HoeffdingAdaptiveTreeClassifier, HoeffdingTreeClassifier

        return HoeffdingAdaptiveTreeClassifier(seed=self.seed) if self.adaptive else HoeffdingTreeClassifier()

    @staticmethod
    def _rows(X):
        return [dict(enumerate(row)) for row in np.asarray(X).tolist()]

    def fit(self, X, y):
        clock = time.perf_counter()
        self.tree = self._new_tree()
        self._learn(X, y)
        RiverTree.fit_seconds.append(time.perf_counter() - clock)
        return self

    def update(self, X, y) -> float:
        """Learn ``X, y`` into the current tree; return the seconds it took."""
        clock = time.perf_counter()
        self._learn(X, y)
        return time.perf_counter() - clock

    def _learn(self, X, y):
        for row, label in zip(self._rows(X), np.asarray(y).tolist()):
            self.tree.learn_one(row, label)

    def predict(self, X):
        fallback = 0
        return np.array([fallback if (p := self.tree.predict_one(row)) is None else p for row in self._rows(X)])


def _retraining(stream, seed: int) -> list[dict]:
    """ALWAYS-, ADWIN- and CARA-T-RETRAIN from one shared preparation (one tree per batch)."""
    from cara_mlflow.simulate import evaluate, prepare

    RiverTree.fit_seconds = []
    prepared = prepare(stream, model=lambda s: RiverTree(seed=s), seed=seed)
    fit_seconds = np.array(RiverTree.fit_seconds)
    if len(fit_seconds) != prepared.n_batches:
        raise RuntimeError("a batch with one class got a constant model: fit times do not line up")
    start = prepared.n_offline
    rows = []
    always = np.mean([prepared.query_hits[k - 1][1].mean() for k in range(1, prepared.n_batches - start)])
    rows.append({"algorithm": "ALWAYS-RETRAIN", "kappa_multiple": None, "query_accuracy": float(always),
                 "seconds": float(fit_seconds[start + 1:].sum()), "n_decisions": prepared.n_batches - start - 1})
    scale = offline_scale(prepared)
    for m in MULTIPLES:
        report = evaluate(prepared, kappa=float(m * scale), policies=["cara-t", "adwin"])
        for r in report.results:
            if r.policy == "adwin" and m != MULTIPLES[0]:
                continue   # ADWIN does not depend on κ
            rows.append({"algorithm": "CARA-T-RETRAIN" if r.policy == "cara-t" else "ADWIN-RETRAIN",
                         "kappa_multiple": float(m) if r.policy == "cara-t" else None,
                         "query_accuracy": r.query_accuracy, "seconds": float(fit_seconds[r.retrain_at].sum()),
                         "n_decisions": r.n_retrains})
    return rows


def _updating(stream, seed: int, n_offline: int = 25) -> list[dict]:
    """ALWAYS-, ADWIN- and HAT-UPDATE: one tree from batch 25, fed later batches."""
    from cara_mlflow.policies import Observation, make_policy

    batches = list(stream)
    rows = []
    for algorithm in ("ALWAYS-UPDATE", "ADWIN-UPDATE", "HAT-UPDATE"):
        model = RiverTree(adaptive=algorithm == "HAT-UPDATE", seed=seed).fit(batches[n_offline].X,
                                                                               batches[n_offline].y)
        detector = make_policy("adwin") if algorithm == "ADWIN-UPDATE" else None
        hits, seconds, updates, last = [], 0.0, 0, n_offline
        for t in range(n_offline + 1, len(batches)):
            b = batches[t]
            predicted = model.predict(b.X)
            answers = predicted[b.query_index] if b.query_index is not None else model.predict(b.queries)
            hits.append(float(np.mean(answers == b.query_labels)))      # before this batch is learnt
            if detector is not None:
                decision = detector.decide(Observation(t=t, trained_on=last, psi_bar=0.0, kappa=1.0,
                                                       errors=(predicted != b.y).astype(np.int8)))
                if not decision.retrain:
                    continue
                detector.reset(t)
            seconds += model.update(b.X, b.y)
            updates += 1
            last = t
        rows.append({"algorithm": algorithm, "kappa_multiple": None, "query_accuracy": float(np.mean(hits)),
                     "seconds": seconds, "n_decisions": updates})
    return rows


def run_task(task) -> dict:
    from cara_mlflow.streams import make_stream

    name, seed, data_dir = task
    extra = {"data": str(Path(data_dir) / DATA_FILES[name])} if name in DATA_FILES else {}
    stream = make_stream(name, seed=seed, **extra)
    clock = time.perf_counter()
    rows = _retraining(stream, seed) + _updating(stream, seed)
    return {"stream": name, "seed": seed, "rows": rows, "seconds": time.perf_counter() - clock}


def figure(frame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    streams = list(dict.fromkeys(frame["stream"]))
    fig, axes = plt.subplots(1, len(streams), figsize=(4.2 * len(streams), 3.8), squeeze=False)
    markers = {"ALWAYS-RETRAIN": ("purple", "s"), "ADWIN-RETRAIN": ("tab:orange", "s"),
               "ALWAYS-UPDATE": ("c", "s"), "ADWIN-UPDATE": ("tab:red", "s"), "HAT-UPDATE": ("navy", "s")}
    for ax, name in zip(axes[0], streams):
        part = frame[frame["stream"] == name]
        cara = part[part["algorithm"] == "CARA-T-RETRAIN"].sort_values("seconds")
        ax.plot(cara["seconds"], cara["query_accuracy"], "-o", color="green", label="CARA-T-RETRAIN (κ sweep)")
        for algorithm, (color, marker) in markers.items():
            row = part[part["algorithm"] == algorithm]
            ax.plot(row["seconds"], row["query_accuracy"], marker, color=color, markersize=9, linestyle="",
                    label=algorithm)
        ax.set_title(name)
        ax.set_xlabel("time spent retraining / updating (s)")
        ax.set_ylabel("mean prequential query accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="covcon-d,gauss-d,circle-d,electricity")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    streams = [s.strip() for s in args.streams.split(",") if s.strip()]
    raw = args.out / "raw" / "appendix_e"
    todo = [(s, k, str(args.data_dir)) for s in streams for k in range(args.seeds)
            if not (raw / f"{s}-seed{k}.json").exists()]
    clock = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for done, result in enumerate(pool.imap_unordered(run_task, todo), 1):
            _write_json(raw / f"{result['stream']}-seed{result['seed']}.json", result)
            print(f"[{done}/{len(todo)}] {result['stream']} seed {result['seed']}: {result['seconds']:.0f} s",
                  flush=True)
    wall = time.perf_counter() - clock
    records = []
    for s in streams:
        for k in range(args.seeds):
            doc = json.loads((raw / f"{s}-seed{k}.json").read_text())
            records += [{"stream": s, "seed": k, **row} for row in doc["rows"]]
    frame = pd.DataFrame(records)
    frame["kappa_multiple"] = frame["kappa_multiple"].fillna(-1)
    means = (frame.groupby(["stream", "algorithm", "kappa_multiple"], sort=False)
             [["query_accuracy", "seconds", "n_decisions"]].mean().reset_index())
    means["kappa_multiple"] = means["kappa_multiple"].where(means["kappa_multiple"] >= 0)
    means.to_csv(args.out / "appendix_e.csv", index=False, float_format="%.6g")
    figure(means, args.out / "appendix_e.png")
    lines = ["# Appendix E: retraining vs incremental updating (river Hoeffding tree)", "",
             "Generated by `benchmarks/appendix_e.py`. Means over seeds "
             f"0–{args.seeds - 1}; time = wall seconds spent fitting/updating on online batches 26–99 "
             f"on this machine ({os.cpu_count()} cores, one process per core). Figure: `appendix_e.png` "
             "(like the paper's Fig. E.14). CARA-T-RETRAIN rows are the κ sweep of `reproduce.py` "
             "(κ = m · Ψ̄_off).", ""]
    if todo:
        lines += [f"Wall time of the run that computed {len(todo)} (dataset, seed) cells: {wall / 60:.1f} min.", ""]
    for s in streams:
        part = means[means["stream"] == s]
        lines += [f"## {s}", "", "| algorithm | κ / Ψ̄_off | query accuracy | time (s) | # retrains / updates |",
                  "|---|---:|---:|---:|---:|"]
        for row in part.itertuples():
            m = "" if row.kappa_multiple != row.kappa_multiple else f"{row.kappa_multiple:.3g}"
            lines.append(f"| {row.algorithm} | {m} | {row.query_accuracy:.3f} | {row.seconds:.2f} | "
                         f"{row.n_decisions:.1f} |")
        lines.append("")
    (args.out / "appendix_e.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'appendix_e.md'}")


if __name__ == "__main__":
    main()
