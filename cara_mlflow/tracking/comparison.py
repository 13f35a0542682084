"""A policy comparison (:mod:`cara_mlflow.compare`) logged as an MLflow experiment.

One parent run per comparison (tag ``cara.run_type`` = ``compare``) holding the figures and the
summary table, and one nested run per (policy, κ, seed) (``compare-policy``) with params, the
comparison's metrics and per-batch curves with ``step = batch id``. With a label delay L the parent
and every nested run carry the param ``label_delay`` (nested runs also the tag ``cara.label_delay``), and
each nested run the metrics of both modes, ``wait.*`` and ``provisional.*``, and ``delayed_oracle_cost``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable

from ..compare import METRICS, ComparisonResult, comparison_figures, summarise, summary_markdown
from ..costs import cumulative_strategy_cost
from .connection import Connection
from .runs import Runs

__all__ = ["log_comparison", "local_artifact_root"]


def local_artifact_root(sqlite_uri: str) -> str:
    """``mlartifacts`` next to a sqlite file, where a new local experiment keeps its artifacts.

    >>> local_artifact_root("sqlite:////work/mlflow.db")
    '/work/mlartifacts'
    """
    return os.path.join(os.path.dirname(sqlite_uri.removeprefix("sqlite:///")), "mlartifacts")


def log_comparison(result: ComparisonResult, tracking_uri: str, *, experiment: str | None = None,
                   artifact_root: str | None = None, progress: Callable[[str], None] | None = None) -> str:
    """Log a comparison into MLflow (see the module docstring); returns the parent run id.

    ``experiment`` defaults to ``cara-compare/<stream>``; ``artifact_root`` is where a new
    experiment keeps its artifacts (None: MLflow's default).
    """
    note = progress or (lambda message: None)
    runs = Runs(Connection(tracking_uri), experiment or f"cara-compare/{result.stream}", artifact_root)
    parent = runs.start("compare", run_name=f"{result.stream}-{result.model}-{len(result.kappas)}kappa-"
                                            f"{len(result.seeds)}seed", tags={"cara.stream": result.stream})
    try:
        runs.log_params(parent, {"stream": result.stream, "model": result.model,
                                 "kappas": ",".join(f"{k:g}" for k in result.kappas),
                                 "seeds": ",".join(map(str, result.seeds)), "policies": ",".join(result.policies),
                                 **({"kappa_schedule": result.kappa_schedule} if result.kappa_schedule else {}),
                                 **({"label_delay": str(result.label_delay)} if result.label_delay else {}),
                                 **({"retune_every": str(result.retune_every)} if result.retune_every else {})})
        for (seed, kappa), report in sorted(result.reports.items()):
            note(f"logging seed {seed}, κ={kappa:g}")
            for r in report.results:
                _log_policy_run(runs, parent, result, report, r, seed, kappa)
        _log_summary(runs, parent, result)
    except BaseException:
        runs.end(parent, "FAILED")
        raise
    runs.end(parent, "FINISHED")
    result.parent_run_id, result.experiment_id = parent, runs.experiment_id()
    return parent


def _log_policy_run(runs: Runs, parent: str, result: ComparisonResult, report, r, seed: int, kappa: float) -> None:
    """The nested run of one (policy, κ, seed): params, metrics and per-batch curves."""
    delay = {"cara.label_delay": str(result.label_delay)} if result.label_delay else {}
    child = runs.start("compare-policy", run_name=f"{r.policy}-k{kappa:g}-s{seed}",
                       tags={"mlflow.parentRunId": parent, "cara.policy": r.policy, "cara.kappa": f"{kappa:g}",
                             **delay})
    runs.log_params(child, {"policy": r.policy, "kappa": f"{kappa:g}", "seed": str(seed), "model": result.model,
                            **{f"theta.{k}": v for k, v in r.params.items()},
                            **({"label_delay": delay["cara.label_delay"]} if delay else {})})
    points = [(m, float(getattr(r, m)), 0) for m in METRICS]
    # with a label delay: both modes' metrics (wait.*, provisional.*) and the delayed ORACLE's cost
    points += [(m, float(v), 0) for m, v in result.delayed_metrics(seed, kappa, r.policy).items()
               if m != "label_delay" and v is not None]
    C = report.online_matrix
    local = [s - report.n_offline for s in r.strategy]
    cumulative = cumulative_strategy_cost(C, local)
    for k in range(1, len(local)):
        batch = result.batch_id(report.n_offline + k)
        psi_seen = C[local[k - 1], k]   # what the policy saw before deciding
        points += [("cumulative_cost", cumulative[k], batch), ("decision", float(local[k] == k), batch),
                   ("psi_bar", psi_seen, batch)]
    runs.log_points(child, points)
    runs.end(child, "FINISHED")


def _log_summary(runs: Runs, parent: str, result: ComparisonResult) -> None:
    """The parent's summary tables, figures and mean SCPE per policy."""
    import matplotlib.pyplot as plt

    per_kappa, overall = summarise(result)
    with tempfile.TemporaryDirectory() as tmp:
        per_kappa.to_csv(os.path.join(tmp, "summary_by_kappa.csv"), index=False)
        overall.to_csv(os.path.join(tmp, "summary.csv"), index=False)
        with open(os.path.join(tmp, "summary.md"), "w") as fh:
            fh.write(summary_markdown(overall, result))
        for filename, fig in comparison_figures(result).items():
            fig.savefig(os.path.join(tmp, filename), dpi=110)
            plt.close(fig)
        runs.log_directory(parent, tmp)
    runs.log_metrics(parent, {f"mean_scpe.{row.policy}": float(row.scpe) for row in overall.itertuples()})
