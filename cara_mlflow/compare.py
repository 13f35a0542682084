"""Compare retraining policies as MLflow experiments (``cara-mlflow compare``).

For every seed the expensive part — a model per batch, their predictions, the Ψ terms of the
offline and online windows — is computed once (:func:`cara_mlflow.simulate.prepare`) and shared
by every policy and every κ: κ only sets the diagonal of the cost matrices, so a κ sweep never
retrains anything.

Logged (by :mod:`cara_mlflow.tracking.comparison`, the MLflow side) into the experiment
``cara-compare/<stream>``: one parent run per comparison and one
nested run per (policy, κ, seed) with params (policy, κ, tuned θ*, seed, model), metrics
(strategy_cost, oracle_cost, scpe, query_accuracy, n_retrains) and per-online-batch metrics with
``step = batch id`` (cumulative_cost, decision, psi_bar), so the MLflow UI's compare view and
charts work. The parent run holds the figures (metrics against κ, cumulative cost, the offline
cost matrix with the tuned CARA-T and ORACLE strategies) and a summary table (CSV + Markdown).

With a κ schedule (:mod:`cara_mlflow.kappa_schedule`) each κ of the sweep is the level the
schedule multiplies: the cost matrices carry κ_t = κ × value_t on their diagonal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from . import validate
from .costs import cumulative_strategy_cost
from .errors import InputError
from .features import infer_task
from .kappa_schedule import KappaSchedule, parse_kappa_schedule
from .simulate import Report, check_retune, evaluate, prepare
from .store import read_window, window_ids

__all__ = ["parse_kappas", "store_stream", "stream_task", "ComparisonResult", "compare", "summarise",
           "summary_markdown", "delayed_summary", "comparison_figures"]

METRICS = ("strategy_cost", "oracle_cost", "scpe", "query_accuracy", "n_retrains")
#: Per mode under a label delay: (metric name, attribute of cara_mlflow.label_delay.DelayedRun).
DELAYED_METRICS = (("strategy_cost", "cost"), ("scpe", "scpe"), ("n_retrains", "n_retrains"),
                   ("n_catch_ups", "n_catch_ups"), ("n_deferred", "n_deferred"))


def parse_kappas(text: str) -> list[float]:
    """``"5,10,20"`` or ``"log:START:STOP:NUM"`` (log-spaced, inclusive) into a list of κ > 0.

    >>> parse_kappas("5,10,20")
    [5.0, 10.0, 20.0]
    >>> parse_kappas("log:1:100:3")
    [1.0, 10.0, 100.0]
    """
    text = text.strip()
    try:
        if text.startswith("log:"):
            start, stop, num = text[4:].split(":")
            values = np.geomspace(float(start), float(stop), int(num)).tolist()
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except (ValueError, TypeError):
        raise InputError(f"kappa: expected a comma-separated list or log:START:STOP:NUM, got {text!r}") from None
    if not values or not all(np.isfinite(v) and v > 0 for v in values):
        raise InputError(f"kappa: expected values > 0 (the cost of one retrain), got {text!r}")
    return [float(v) for v in values]


def store_stream(store, *, offline: tuple[int, int] = (0, 25), target: str = "label",
                 features: Sequence[str] | None = None, until: int | None = None, exclude: Sequence[str] = ()):
    """A user's batch store as a stream: the offline window, then the online batches after it.

    The features (``features``, else every column but the target, minus ``exclude``) and the
    kernel space are fixed on the offline window, as ``tune`` fixes them
    (:func:`cara_mlflow.store.read_window`); every batch is in that space.

    ``offline`` is a half-open window of batch ids (``(0, 25)``: the complete batches with ids
    0–24; ids may have gaps, at least 2 are required). The online part is the complete batches
    after the window in id order, up to ``until`` (exclusive) if given; it ends at the first
    incomplete batch, so the history compared is the one ``step`` would have processed. The
    queries are the batch's queries file when it has one (query accuracy needs its target column,
    else it is NaN), else the data itself. Returns ``(stream, batch_ids)``; the stream is named after the store and
    holds the store's batches as read (:class:`cara_mlflow.batch.Batch`, each with its ``id``).

    >>> import tempfile, pandas as pd
    >>> from cara_mlflow.store import BatchStore
    >>> tmp = tempfile.TemporaryDirectory()
    >>> store = BatchStore(tmp.name)
    >>> for t in range(6):
    ...     _ = store.write(t, pd.DataFrame({"x": [0.0, 1.0, 2.0], "label": [0, 1, t % 2]}))
    >>> stream, ids = store_stream(store, offline=(0, 3))
    >>> len(stream), ids, stream[4].id
    (6, [0, 1, 2, 3, 4, 5], 4)
    >>> store_stream(store, offline=(0, 5))
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: store: expected at least 2 complete online batches after the offline window 0:5 ...
    >>> tmp.cleanup()
    """

    from .streams import Stream

    start, stop = validate.offline_window(offline)
    offline_ids = window_ids(store, (start, stop))
    online = []
    for info in store.list():           # complete batches after the window, up to the first incomplete
        if info.id < stop:
            continue
        if not info.complete or (until is not None and info.id >= until):
            break
        online.append(info.id)
    if len(online) < 2:
        raise InputError(f"store: expected at least 2 complete online batches after the offline window "
                         f"{start}:{stop} in {store.batches_dir}, found {len(online)}; "
                         "choose an earlier offline window")
    window, space = read_window(store, offline_ids, target=target, features=features, exclude=exclude)
    batches = (*window, *(store.read(i, target=target, space=space) for i in online))
    return Stream(name=store.root.name, batches=batches, seed=0), offline_ids + online


def stream_task(stream, n_offline: int) -> tuple[str, str]:
    """(task, why) inferred from the targets of the stream's first ``n_offline`` batches, as
    ``tune`` infers it (:func:`cara_mlflow.features.infer_task`).

    >>> from cara_mlflow.streams import make_stream
    >>> stream_task(make_stream("gauss-d", n_batches=4, batch_size=50), 2)[0]
    'classification'
    """
    return infer_task(np.concatenate([b.y for b in list(stream)[:n_offline]]))


@dataclass
class ComparisonResult:
    """Every report of a comparison: ``reports[(seed, kappa)]``."""

    stream: str
    model: str
    kappas: list[float]
    seeds: list[int]
    policies: list[str]
    reports: dict = field(repr=False)
    prepared: dict = field(repr=False)     # seed -> Prepared
    timings: dict = field(default_factory=dict)
    parent_run_id: str | None = None
    experiment_id: str | None = None
    batch_ids: list | None = None          # a store's batch ids by stream position (else the position)
    kappa_schedule: str | None = None      # the schedule κ multiplies, as reports name it (None: constant κ)
    label_delay: int = 0                   # labels L batches late (cara_mlflow.label_delay); 0: at once
    delayed: dict = field(default_factory=dict, repr=False)   # (seed, kappa) -> DelayReport, with label_delay
    retune_every: int = 0                  # threshold policies also re-tuned every N batches (<policy>-retuneN)

    def batch_id(self, position: int) -> int:
        """The batch id of stream position ``position`` (they differ for a store's stream)."""
        return position if self.batch_ids is None else int(self.batch_ids[position])

    def rows(self) -> list[dict]:
        """One flat row per (policy, κ, seed)."""
        out = []
        for (seed, kappa), report in sorted(self.reports.items()):
            for r in report.results:
                out.append({"policy": r.policy, "kappa": kappa, "seed": seed, "model": self.model,
                            **{m: getattr(r, m) for m in METRICS}, "params": r.params,
                            **self.delayed_metrics(seed, kappa, r.policy)})
        return out

    def delayed_metrics(self, seed: int, kappa: float, policy: str) -> dict:
        """With a label delay: the delay and both modes' metrics of one (policy, κ, seed) (None where a
        mode does not apply: the ORACLE follower, the detectors' provisional mode); else nothing."""
        if not self.label_delay:
            return {}
        d = self.delayed[(seed, kappa)]
        run = next((r for r in d.results if r.policy == policy), None)
        out = {"label_delay": self.label_delay, "delayed_oracle_cost": d.delayed_oracle_cost}
        for mode in ("wait", "provisional"):
            m = None if run is None else getattr(run, mode)
            out.update({f"{mode}.{k}": None if m is None else getattr(m, name) for k, name in DELAYED_METRICS})
        return out


def compare(stream, *, kappas: Sequence[float], policies: Sequence[str] | None = None,
            seeds: Sequence[int] = (0,), model: str = "rf", n_offline: int = 25, tuning_method: str = "exact",
            prepare_kwargs: dict | None = None, progress: Callable[[str], None] | None = None,
            batch_ids: Sequence[int] | None = None,
            kappa_schedule: str | KappaSchedule | None = None, label_delay: int = 0,
            retune_every: int = 0) -> ComparisonResult:
    """Run every policy at every κ and seed, sharing models and matrices per seed.

    ``stream`` is a stream name or a callable ``seed -> stream`` (for real data, whose batches do
    not change with the seed but whose query samples do). ``batch_ids`` names the stream's
    batches by position (a store's ids, :func:`store_stream`) in what is logged, and in a CSV
    ``kappa_schedule`` (κ_t = κ × its value; :mod:`cara_mlflow.kappa_schedule`). ``label_delay`` L > 0
    also runs every policy with labels L batches late, waiting and provisional
    (:func:`cara_mlflow.label_delay.evaluate_delayed`), into ``delayed`` and the rows.
    ``retune_every`` N > 0 adds each threshold policy re-tuned every N batches on the history seen so
    far, as ``<policy>-retune<N>`` (:func:`cara_mlflow.simulate.evaluate`).

    >>> result = compare("covcon-d", kappas=[2.0, 20.0], policies=["cara-t", "nr"], model="lr",
    ...                  prepare_kwargs={"n_batches": 12, "batch_size": 150}, n_offline=4)
    >>> sorted(result.reports), len(result.rows())
    ([(0, 2.0), (0, 20.0)], 4)
    """
    policies = validate.policy_names(policies)
    if not kappas:
        raise InputError("kappa: expected at least one retraining cost")
    kappas = [validate.kappa(k) for k in kappas]
    schedule = None if kappa_schedule is None else parse_kappa_schedule(kappa_schedule)
    if schedule is not None and (batch_ids is not None or isinstance(stream, str)):
        # a CSV's coverage of the stream, said before any training
        schedule.values(list(batch_ids) if batch_ids is not None else (prepare_kwargs or {}).get("n_batches", 100))
    note = progress or (lambda message: None)
    _check_delay(label_delay, stream, n_offline, batch_ids, prepare_kwargs)
    check_retune(policies, retune_every, label_delay)
    reports, prepared, delayed = {}, {}, {}
    timings = {"prepare": 0.0, "evaluate": 0.0}
    name = stream if isinstance(stream, str) else None
    for seed in seeds:
        clock = time.perf_counter()
        source = stream(seed) if callable(stream) else stream
        note(f"seed {seed}: training models and building cost matrices")
        prepared[seed] = prepare(source, n_offline=n_offline, model=model, seed=seed, keep_models=label_delay > 0,
                                 offline_kappa=None if schedule else min(kappas), **(prepare_kwargs or {}))
        name = name or prepared[seed].stream
        timings["prepare"] += time.perf_counter() - clock
        clock = time.perf_counter()
        for kappa in kappas:
            note(f"seed {seed}: κ={kappa:g}")
            reports[(seed, kappa)] = evaluate(prepared[seed], kappa=kappa, policies=policies,
                                              tuning_method=tuning_method, kappa_schedule=schedule,
                                              batch_ids=batch_ids, retune_every=retune_every)
        if label_delay:
            delayed.update(_delayed_runs(prepared[seed], reports, seed, kappas, label_delay))
        timings["evaluate"] += time.perf_counter() - clock
    return ComparisonResult(stream=name, model=model, kappas=kappas, seeds=list(seeds), policies=policies,
                            reports=reports, prepared=prepared, timings=timings,
                            batch_ids=None if batch_ids is None else list(batch_ids),
                            kappa_schedule=None if schedule is None else schedule.describe(),
                            label_delay=label_delay, delayed=delayed, retune_every=retune_every)


def _check_delay(label_delay: int, stream, n_offline: int, batch_ids, prepare_kwargs) -> None:
    """A label delay the online window can hold, said before any training when the window is known."""
    from .label_delay import check_label_delay

    if not label_delay:
        return
    if batch_ids is not None:
        check_label_delay(label_delay, len(batch_ids) - n_offline)
    elif isinstance(stream, str):        # a callable's window is checked once it is prepared
        check_label_delay(label_delay, (prepare_kwargs or {}).get("n_batches", 100) - n_offline)


def _delayed_runs(prepared, reports: dict, seed: int, kappas, label_delay: int) -> dict:
    """Every κ's policies of one seed under the label delay, sharing the Ψ̂ estimators; then the
    seed's models and batches are let go (a comparison keeps its prepared seeds)."""
    from .label_delay import PsiEstimates, evaluate_delayed

    estimates = PsiEstimates(prepared)
    out = {(seed, kappa): evaluate_delayed(prepared, reports[(seed, kappa)], label_delay, estimates=estimates)
           for kappa in kappas}
    prepared.models = prepared.batches = None
    return out


def summarise(result: ComparisonResult):
    """Mean and sd over seeds per (policy, κ), and the mean over the κ sweep per policy."""
    import pandas as pd

    frame = pd.DataFrame(result.rows()).drop(columns=["params"])
    per_kappa = frame.groupby(["policy", "kappa"], sort=False)[list(METRICS)].agg(["mean", "std"])
    per_kappa.columns = [f"{m}_{s}" for m, s in per_kappa.columns]
    overall = frame.groupby("policy", sort=False)[["scpe", "query_accuracy", "n_retrains", "strategy_cost"]].mean()
    return per_kappa.reset_index(), overall.reset_index()


def delayed_summary(result: ComparisonResult) -> list[str]:
    """With a label delay: per policy, both modes' mean cost, SCPE, retrains, catch-ups and deferrals
    over κ and seeds, and both ORACLEs' mean cost, as lines of text."""
    import pandas as pd

    frame = pd.DataFrame([r for r in result.rows() if r["wait.strategy_cost"] is not None]).drop(columns=["params"])
    means = frame.groupby("policy", sort=False).mean(numeric_only=True)
    lines = [f"labels {result.label_delay} batches late: (a) wait for them, (b) provisional on estimated Ψ̄ "
             f"(ORACLE {means['oracle_cost'].mean():.2f}, delayed ORACLE {means['delayed_oracle_cost'].mean():.2f})",
             f"{'policy':<8} {'wait cost':>10} {'SCPE %':>8} {'retrains':>8}  {'prov cost':>10} {'SCPE %':>8} "
             f"{'retrains':>8} {'catch-ups':>9} {'deferred':>8}"]
    for policy, row in means.iterrows():
        right = ("(wait mode only: needs the labels of the batch)" if pd.isna(row["provisional.strategy_cost"]) else
                 f"{row['provisional.strategy_cost']:>10.2f} {row['provisional.scpe']:>8.2f} "
                 f"{row['provisional.n_retrains']:>8.2f} {row['provisional.n_catch_ups']:>9.2f} "
                 f"{row['provisional.n_deferred']:>8.2f}")
        lines.append(f"{policy:<8} {row['wait.strategy_cost']:>10.2f} {row['wait.scpe']:>8.2f} "
                     f"{row['wait.n_retrains']:>8.2f}  {right}")
    return lines


def summary_markdown(overall, result: ComparisonResult) -> str:
    """The overall summary (:func:`summarise`) as a Markdown table."""
    schedule = "" if result.kappa_schedule is None else f", each × the κ schedule {result.kappa_schedule}"
    lines = [f"# {result.stream}, model {result.model}",
             f"κ ∈ {{{', '.join(f'{k:g}' for k in result.kappas)}}}{schedule}, seeds {result.seeds}; "
             "means over κ and seeds.", "",
             "| policy | SCPE % | query accuracy | # retrains | strategy cost |", "|---|---:|---:|---:|---:|"]
    for row in overall.itertuples():
        lines.append(f"| {row.policy} | {row.scpe:.2f} | {row.query_accuracy:.3f} | {row.n_retrains:.2f} | "
                     f"{row.strategy_cost:.2f} |")
    return "\n".join(lines) + "\n"


def comparison_figures(result: ComparisonResult) -> dict:
    """The parent run's figures by file name: metrics against κ, cumulative cost, offline cost matrix."""
    from .oracle import solve
    from .plots import cost_matrix_figure, cumulative_cost_figure, metrics_vs_kappa_figure
    from .tuning import PolicyTuner

    seed = result.seeds[0]
    kappa = result.kappas[len(result.kappas) // 2]
    report: Report = result.reports[(seed, kappa)]
    curves = {}
    for r in report.results:
        local = [s - report.n_offline for s in r.strategy]
        curves[r.policy] = cumulative_strategy_cost(report.online_matrix, local)
    C_off = report.offline_matrix           # κ_t on its diagonal under a κ schedule
    tuned = PolicyTuner("cara-t").fit(C_off)
    return {
        "metrics_vs_kappa.png": metrics_vs_kappa_figure(result.rows(), title=f"{result.stream} ({result.model})"),
        "cumulative_cost.png": cumulative_cost_figure(curves, start=result.batch_id(report.n_offline),
                                          title=f"{result.stream}: cumulative cost, κ={kappa:g}, seed {seed}"),
        "offline_cost_matrix.png": cost_matrix_figure(C_off, {"CARA-T (tuned)": tuned.best_strategy_,
                                                  "ORACLE": solve(C_off).strategy},
                                          title=f"{result.stream}: offline cost matrix, κ={kappa:g}"),
    }
