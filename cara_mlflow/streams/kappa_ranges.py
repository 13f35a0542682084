"""The κ sweeps of the paper's experiments, per dataset, as its text implies them.

The paper reports every table as a mean over "a range of κ" without giving the ranges. What its
text does give, per dataset (cara-paper.md §8.1–8.3, Fig. B.10, Tables 2–4):

* ELECTRICITY: "when κ > 2.5, all CARA variants (and the ORACLE) retrain fewer than ten times";
* CovCon-D: κ = 20 (Fig. 3), 46 (Fig. B.10), "φ* = 2 for κ ≤ 50, φ* = 10 for 50 ≤ κ ≤ 125";
* CovCon-S: κ = 20 (Fig. 3);
* every dataset: Table 4, the mean number of Retrain decisions of CARA-T, CARA-CT, CARA-P, the
  ORACLE and MARKOV over the sweep.

A range is chosen per dataset by :func:`fit_kappa_range`: the log-spaced sweep of 10 values,
spanning a factor 8 to 256, whose mean retrain counts best match Table 4 (RMS, in retrains),
among the sweeps that satisfy the dataset's text anchors. ``benchmarks/kappa_ranges.py``
measures the curves (Random Forest, every seed) and documents the choice cell by cell in
``benchmarks/results/kappa_ranges.md``; the result is frozen here, in absolute κ (the same for
every seed and both models, like the paper's sweep), so that the reproduction does not depend
on the order its parts run in.

Examples
--------
>>> sweep = kappa_sweep("electricity")
>>> len(sweep), bool(sweep[0] < sweep[-1])
(10, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PAPER_KAPPA_RANGES", "TEXT_ANCHORS", "meets_anchors", "SWEEP_LENGTH", "KappaRange", "kappa_sweep",
           "fit_kappa_range", "sweep_means"]

SWEEP_LENGTH = 10

#: (κ_lo, κ_hi) per stream name, in the units of our Ψ̄ (cara-paper.md Eq. 1–3, γ "scale");
#: see benchmarks/results/kappa_ranges.md for how each was chosen.
PAPER_KAPPA_RANGES: dict[str, tuple[float, float]] = {
    "covcon-d": (5.4, 280.0),
    "covcon-s": (1.2, 340.0),
    "circle-d": (1.6, 84.0),
    "circle-s": (2.3, 600.0),
    "gauss-d": (4.2, 1100.0),
    "gauss-s": (0.39, 110.0),
    "electricity": (8.7, 290.0),
    "airlines": (14.0, 120.0),
    "covertype": (41.0, 840.0),
}


#: What the paper's text demands of a dataset's sweep, as bounds on its ends: ``lo_max`` (the
#: sweep starts at or below it), ``lo_below`` (strictly below it), ``hi_min`` (it ends at or above).
#: CovCon's κ values are the text's, taken at face value in our units (they hold there:
#: benchmarks/units_study/FINDINGS.md §4); the others are measured on the fit grid by
#: ``benchmarks/kappa_ranges.py`` (which checks them): ELECTRICITY's "κ > 2.5: all CARA variants
#: and the ORACLE retrain fewer than ten times" is a statement about the κ from which they do (in
#: the paper's units, which have a ~3× narrower kernel than ours), so the sweep reaches across
#: it; CovCon-D's "φ* = 2 for κ ≤ 50" asks the sweep to reach down where CARA-P's φ* is 2.
TEXT_ANCHORS: dict[str, dict] = {
    "covcon-d": {"lo_max": 5.4446, "hi_min": 125.0, "contains": (20.0, 46.0, 125.0),
                 "why": "contains κ = 20 (Fig. 3), 46 (Fig. B.10) and 125 (§8.2); reaches down to κ = 5.44, the "
                        "largest grid κ where CARA-P's φ* is 2 (median of seeds; §8.2's φ* = 2 regime)"},
    "covcon-s": {"lo_max": 20.0, "hi_min": 20.0, "contains": (20.0,), "why": "contains κ = 20 (Fig. 3)"},
    "electricity": {"lo_below": 27.78, "hi_min": 27.78,
                    "why": "reaches across κ = 27.8, the grid κ from which CARA-T, CARA-CT, CARA-P and the ORACLE "
                           "all make fewer than ten retrains (means of seeds; §8.3's \"κ > 2.5\" in our units)"},
}


def meets_anchors(stream: str, lo: float, hi: float) -> bool:
    """Whether the sweep [lo, hi] satisfies ``stream``'s text anchors.

    >>> meets_anchors("covcon-s", 1.3, 330.0), meets_anchors("covcon-s", 25.0, 330.0)
    (True, False)
    """
    a = TEXT_ANCHORS.get(stream, {})
    return (lo <= a.get("lo_max", np.inf) and lo < a.get("lo_below", np.inf) and hi >= a.get("hi_min", 0.0)
            and all(lo <= k <= hi for k in a.get("contains", ())))


def kappa_sweep(stream: str, n: int = SWEEP_LENGTH) -> np.ndarray:
    """The ``n`` log-spaced κ values of ``stream``'s paper-implied range.

    >>> sweep = kappa_sweep("covcon-d", 3)
    >>> lo, hi = PAPER_KAPPA_RANGES["covcon-d"]
    >>> len(sweep), bool(np.isclose(sweep[0], lo) and np.isclose(sweep[1] ** 2, lo * hi))
    (3, True)
    """
    try:
        lo, hi = PAPER_KAPPA_RANGES[stream]
    except KeyError:
        raise KeyError(f"no paper-implied κ range for stream {stream!r}; "
                       f"known: {', '.join(PAPER_KAPPA_RANGES)}") from None
    return np.geomspace(lo, hi, n)


@dataclass(frozen=True)
class KappaRange:
    """A fitted sweep: its ends, the mean retrains it gives per policy, the RMS against the target."""

    lo: float
    hi: float
    means: tuple[float, ...]
    rms: float


def sweep_means(grid: np.ndarray, curves: np.ndarray, lo: float, hi: float, n: int = SWEEP_LENGTH) -> np.ndarray:
    """Mean of each curve over ``n`` log-spaced κ in [lo, hi], interpolated linearly in log κ.

    ``grid`` (k,) increasing κ values; ``curves`` (p, k), one row per policy.

    >>> sweep_means(np.array([1.0, 10.0]), np.array([[0.0, 2.0]]), 1.0, 10.0, n=3)
    array([1.])
    """
    log_grid = np.log(grid)
    points = np.log(np.geomspace(lo, hi, n))
    return np.array([np.interp(points, log_grid, row).mean() for row in np.atleast_2d(curves)])


def fit_kappa_range(grid, curves, target, *, lo_max: float = np.inf, hi_min: float = 0.0,
                    min_ratio: float = 8.0, max_ratio: float = 256.0, n: int = SWEEP_LENGTH,
                    lo_below: float = np.inf) -> KappaRange:
    """The sweep [lo, hi] (ends on ``grid``) whose mean ``curves`` best match ``target`` (RMS).

    Only sweeps with ``lo <= lo_max``, ``lo < lo_below``, ``hi >= hi_min`` and
    ``min_ratio * lo <= hi <= max_ratio * lo`` are considered: a sweep, not a point, and no
    wider than the 2^-4 … 2^4 of the first reproduction's rule (so a fit cannot pad a sweep with
    κ at which nothing ever retrains).
    Ties go to the lowest ``lo``, then the lowest ``hi``.

    >>> grid = np.geomspace(1, 1000, 31)
    >>> curves = np.array([50 / grid])            # a policy retraining 50/κ times
    >>> fit = fit_kappa_range(grid, curves, [2.0])
    >>> fit.rms < 0.3, 8 * fit.lo <= fit.hi * (1 + 1e-9)
    (True, True)
    """
    grid = np.asarray(grid, dtype=float)
    curves = np.atleast_2d(np.asarray(curves, dtype=float))
    target = np.asarray(target, dtype=float)
    best: KappaRange | None = None
    for i, lo in enumerate(grid):
        if lo > lo_max or lo >= lo_below:
            break
        for hi in grid[i + 1:]:
            if hi < hi_min or hi < min_ratio * lo * (1 - 1e-9) or hi > max_ratio * lo * (1 + 1e-9):
                continue
            means = sweep_means(grid, curves, lo, hi, n)
            rms = float(np.sqrt(np.mean((means - target) ** 2)))
            if best is None or rms < best.rms - 1e-12:
                best = KappaRange(float(lo), float(hi), tuple(float(m) for m in means), rms)
    if best is None:
        raise ValueError("no sweep on the grid satisfies the anchors (lo_max, hi_min, min_ratio, max_ratio)")
    return best
