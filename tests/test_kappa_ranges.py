"""The paper-implied κ ranges: the fit against a brute-force reference, and the frozen ranges' rule."""

import math

import numpy as np
import pytest

from cara_mlflow.streams import STREAM_NAMES
from cara_mlflow.streams.kappa_ranges import (
    PAPER_KAPPA_RANGES,
    SWEEP_LENGTH,
    TEXT_ANCHORS,
    fit_kappa_range,
    kappa_sweep,
    meets_anchors,
    sweep_means,
)


def mean_over_sweep_slow(grid, curve, lo, hi, n):
    """Point by point: each κ of the sweep, its two grid neighbours, a straight line in log κ."""
    total = 0.0
    for i in range(n):
        k = math.exp(math.log(lo) + i * (math.log(hi) - math.log(lo)) / (n - 1))
        j = max(a for a in range(len(grid)) if grid[a] <= k * (1 + 1e-12))
        if j == len(grid) - 1:
            total += curve[j]
            continue
        w = (math.log(k) - math.log(grid[j])) / (math.log(grid[j + 1]) - math.log(grid[j]))
        total += (1 - w) * curve[j] + w * curve[j + 1]
    return total / n


def fit_slow(grid, curves, target, lo_max, hi_min, min_ratio, max_ratio, n):
    best = None
    for a, lo in enumerate(grid):
        for hi in grid[a + 1:]:
            if lo > lo_max or hi < hi_min or hi < min_ratio * lo or hi > max_ratio * lo * (1 + 1e-9):
                continue
            means = [mean_over_sweep_slow(grid, c, lo, hi, n) for c in curves]
            rms = math.sqrt(sum((m - t) ** 2 for m, t in zip(means, target)) / len(target))
            if best is None or rms < best[0] - 1e-12:
                best = (rms, lo, hi)
    return best


@pytest.mark.parametrize("seed", range(4))
def test_fit_matches_the_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    grid = np.geomspace(0.5, 400, 19)
    # decreasing retrain curves, like the ORACLE's and the CARA variants' as κ grows
    curves = np.sort(rng.uniform(0, 80, (3, grid.size)), axis=1)[:, ::-1]
    target = rng.uniform(1, 20, 3)
    lo_max, hi_min = (np.inf, 0.0) if seed % 2 else (10.0, 50.0)
    fit = fit_kappa_range(grid, curves, target, lo_max=lo_max, hi_min=hi_min, min_ratio=8, max_ratio=100, n=7)
    rms, lo, hi = fit_slow(grid, curves, target, lo_max, hi_min, 8, 100, 7)
    assert (fit.lo, fit.hi) == (lo, hi)
    assert fit.rms == pytest.approx(rms, rel=1e-9)
    for c, m in zip(curves, fit.means):
        assert m == pytest.approx(mean_over_sweep_slow(grid, c, lo, hi, 7), rel=1e-9)
    assert fit.lo <= lo_max and fit.hi >= hi_min and 8 * fit.lo <= fit.hi <= 100 * fit.lo * (1 + 1e-9)


def test_fit_finds_a_planted_range():
    grid = np.geomspace(1, 1024, 31)
    curves = np.array([100 / grid, 40 / np.sqrt(grid)])
    lo, hi = grid[6], grid[24]
    target = sweep_means(grid, curves, lo, hi)
    fit = fit_kappa_range(grid, curves, target)
    assert (fit.lo, fit.hi) == (lo, hi) and fit.rms < 1e-12


def test_fit_refuses_anchors_no_sweep_meets():
    with pytest.raises(ValueError, match="anchors"):
        fit_kappa_range(np.geomspace(1, 10, 5), np.ones((1, 5)), [1.0], hi_min=100)


def test_every_paper_dataset_has_a_range_that_meets_its_text_anchors():
    paper_rows = {"covcon-d", "covcon-s", "circle-d", "circle-s", "gauss-d", "gauss-s", "electricity",
                  "airlines", "covertype"}
    assert set(PAPER_KAPPA_RANGES) == paper_rows and paper_rows <= set(STREAM_NAMES)
    for stream, (lo, hi) in PAPER_KAPPA_RANGES.items():
        # a sweep, not a point, at most 256 wide (20 %: both ends rounded outward to 2 significant digits)
        assert 0 < lo and 8 * lo <= hi <= 256 * lo * 1.2
        assert meets_anchors(stream, lo, hi), stream
        anchors = TEXT_ANCHORS.get(stream, {})
        for kappa in anchors.get("contains", ()):
            assert lo <= kappa <= hi, (stream, kappa)
        assert lo < anchors.get("lo_below", np.inf) and lo <= anchors.get("lo_max", np.inf)
        assert hi >= anchors.get("hi_min", 0.0)
        sweep = kappa_sweep(stream)
        assert len(sweep) == SWEEP_LENGTH
        np.testing.assert_allclose(sweep[[0, -1]], [lo, hi])
        np.testing.assert_allclose(np.diff(np.log(sweep)), np.log(hi / lo) / (SWEEP_LENGTH - 1))


def test_anchors_bound_the_ends_of_a_sweep():
    # ELECTRICITY: the sweep must start strictly below the κ where every CARA variant and the ORACLE
    # drop under ten retrains, and end above it
    k10 = TEXT_ANCHORS["electricity"]["lo_below"]
    assert meets_anchors("electricity", k10 / 2, k10 * 4)
    assert not meets_anchors("electricity", k10, k10 * 4) and not meets_anchors("electricity", k10 / 4, k10 / 2)
    # CovCon-D: down into CARA-P's φ* = 2 regime, up to 125, through 20 and 46
    assert meets_anchors("covcon-d", 5.0, 130.0) and not meets_anchors("covcon-d", 6.0, 130.0)
    assert not meets_anchors("covcon-d", 5.0, 100.0)
    assert meets_anchors("gauss-d", 1e-3, 1e3)   # no anchor in the text: Table 4 alone


def test_fit_honours_a_strict_lower_anchor():
    grid = np.geomspace(1, 1000, 31)
    curves = np.array([100 / grid])
    free = fit_kappa_range(grid, curves, [1.0])
    bound = fit_kappa_range(grid, curves, [1.0], lo_below=free.lo)
    assert bound.lo < free.lo


def test_unknown_stream_names_the_known_ones():
    with pytest.raises(KeyError, match="no paper-implied κ range for stream 'nope'; known: covcon-d"):
        kappa_sweep("nope")
