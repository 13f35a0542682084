"""Figures in the style of the paper (matplotlib, headless Agg backend).

* :func:`cost_matrix_figure` — the cost matrix as a heat map with strategies drawn on it
  (Fig. 3a): a marker where a model is trained, a line along the batches it is kept.
* :func:`cumulative_cost_figure` — cumulative strategy cost over the batches (Fig. B.10).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["cost_matrix_figure", "cumulative_cost_figure"]

_COLORS = ("tab:red", "tab:cyan", "tab:orange", "tab:green", "tab:purple", "tab:olive")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def cost_matrix_figure(C: np.ndarray, strategies: Mapping[str, Sequence[int]], *, start: int = 0,
                       title: str = "cost matrix"):
    """Heat map of ``C`` (rows: model t', columns: batch t) with each strategy drawn on it.

    Strategies are local (one model index per batch, as :func:`cara_mlflow.costs.check_strategy`);
    axis labels show absolute batch indices ``start + i``. Returns the matplotlib Figure.

    >>> C = np.array([[2.0, 0.5, 3.0], [np.inf, 2.0, 0.1], [np.inf, np.inf, 2.0]])
    >>> fig = cost_matrix_figure(C, {"ORACLE": [0, 1, 1]})
    >>> [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    ['ORACLE']
    """
    plt = _pyplot()
    T = C.shape[0]
    shown = np.where(np.isfinite(C), C, np.nan)
    shown[np.diag_indices(T)] = np.nan            # κ would dominate the colour scale
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    image = ax.imshow(shown, cmap="Greys", origin="upper", interpolation="nearest")
    fig.colorbar(image, ax=ax, label=r"$\bar{\Psi}$: staleness cost of keeping model t' at batch t")
    for (name, strategy), color in zip(strategies.items(), _COLORS):
        s = np.asarray(strategy)
        t = np.arange(s.size)
        ax.plot(t, s, color=color, linewidth=1.5, label=name)
        trained = s == t
        ax.scatter(t[trained], s[trained], color=color, marker="o", s=18, zorder=3)
    ticks = np.linspace(0, T - 1, min(T, 6)).round().astype(int)
    ax.set_xticks(ticks, [str(start + i) for i in ticks])
    ax.set_yticks(ticks, [str(start + i) for i in ticks])
    ax.set_xlabel("batch t")
    ax.set_ylabel("model trained on batch t'")
    ax.set_title(title)
    if strategies:
        ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    return fig


def cumulative_cost_figure(costs_by_policy: Mapping[str, Sequence[float]], *, start: int = 0,
                           title: str = "cumulative strategy cost"):
    """Cumulative strategy cost per policy over the batches (Fig. B.10). Returns the Figure.

    >>> fig = cumulative_cost_figure({"nr": [1.0, 3.0], "oracle": [1.0, 2.0]}, start=25)
    >>> fig.axes[0].get_xlabel()
    'batch'
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    for name, values in costs_by_policy.items():
        values = np.asarray(values, dtype=float)
        ax.plot(start + np.arange(values.size), values, label=name)
    ax.set_xlabel("batch")
    ax.set_ylabel("cumulative strategy cost")
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def metrics_vs_kappa_figure(rows, *, title: str = ""):
    """Strategy cost, number of retrains and query accuracy against κ, one line per policy (Fig. 4–7).

    ``rows``: dicts with ``policy``, ``kappa``, ``strategy_cost``, ``n_retrains``,
    ``query_accuracy`` (one per policy, κ and seed; seeds are averaged, the band is ±1 sd).

    >>> rows = [{"policy": "nr", "kappa": k, "strategy_cost": 1.0, "n_retrains": 0,
    ...          "query_accuracy": 0.5} for k in (1, 10)]
    >>> [ax.get_ylabel() for ax in metrics_vs_kappa_figure(rows).axes]
    ['strategy cost', '# retrains', 'query accuracy']
    """
    import pandas as pd

    plt = _pyplot()
    frame = pd.DataFrame(list(rows))
    fig, axes = plt.subplots(1, 3, figsize=(13.0, 3.8))
    for name, group in frame.groupby("policy", sort=False):
        metrics = ["strategy_cost", "n_retrains", "query_accuracy"]
        stats = group.groupby("kappa")[metrics].agg(["mean", "std"]).fillna(0.0)
        for ax, metric in zip(axes, ("strategy_cost", "n_retrains", "query_accuracy")):
            mean, sd = stats[(metric, "mean")], stats[(metric, "std")]
            ax.plot(mean.index, mean.values, marker=".", label=name)
            ax.fill_between(mean.index, mean - sd, mean + sd, alpha=0.15)
    for ax, label in zip(axes, ("strategy cost", "# retrains", "query accuracy")):
        ax.set_xscale("log")
        ax.set_xlabel("retraining cost κ")
        ax.set_ylabel(label)
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
