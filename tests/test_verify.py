"""The check after a promotion (:mod:`cara_mlflow.verify`) against slow references: per-point
loops for the query weights and the losses, the interval's formula written out, and the rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cara_mlflow.errors import InputError
from cara_mlflow.staleness import point_weights, psi_from_losses
from cara_mlflow.verify import VERIFY_MARGIN, Verdict, check_margin, compare_models


def _weights_loop(Q, X, gamma, scale):
    """w(x) by loops: paper Σ_q K(q, x) / |D|; expected-loss Σ_q K(q, x) / Σ_x' K(q, x')."""
    K = [[math.exp(-gamma * float(np.sum((q - x) ** 2))) for x in X] for q in Q]
    if scale == "paper":
        return np.array([sum(K[i][j] for i in range(len(Q))) / len(X) for j in range(len(X))])
    return np.array([sum(K[i][j] / sum(K[i]) for i in range(len(Q))) for j in range(len(X))])


def _verdict_loop(Q, X, new, old, gamma, scale, margin, floor=0.0):
    """λ's, the half-width of λ_new − (1+m)λ_old (the larger of the row-wise one and, from 30
    rows on, that of min(30, n // 2) contiguous blocks of rows), and the rule."""
    w = _weights_loop(Q, X, gamma, scale)
    total = sum(w)
    loss_new = sum(wi * li for wi, li in zip(w, new)) / total
    loss_old = sum(wi * li for wi, li in zip(w, old)) / total
    delta = loss_new - (1 + margin) * loss_old
    mean_w = total / len(w)
    z = [wi * ((a - (1 + margin) * b) - delta) / mean_w for wi, a, b in zip(w, new, old)]
    mean_z = sum(z) / len(z)
    sd = math.sqrt(sum((v - mean_z) ** 2 for v in z) / (len(z) - 1))
    half = 2.5758293035489 * sd / math.sqrt(len(z))
    n = len(z)
    k = min(30, n // 2)
    if k >= 15:
        edges = [i * (n // k) + min(i, n % k) for i in range(k + 1)]        # numpy's array_split sizes
        sums = [sum(z[edges[i]:edges[i + 1]]) for i in range(k)]
        half = max(half, stats.t.ppf(0.995, k - 1) * math.sqrt(k / (k - 1) * sum(v * v for v in sums)) / n)
    return loss_new, loss_old, half, delta - half > floor


@pytest.mark.parametrize("scale", ["paper", "expected-loss"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_verdict_matches_the_per_point_reference(scale, seed):
    rng = np.random.default_rng(seed)
    Q, X = rng.normal(size=(15, 3)), rng.normal(size=(40, 3))
    old = (rng.random(40) < 0.2).astype(float)
    new = np.where(rng.random(40) < 0.3, 1.0 - old, old)        # flips some answers either way
    for margin, floor in ((0.0, 0.0), (0.25, 0.0), (1.0, 0.0), (0.25, 0.01)):
        verdict = compare_models(Q, X, new, old, 0.4, scale=scale, margin=margin, floor=floor)
        loss_new, loss_old, half, revert = _verdict_loop(Q, X, new, old, 0.4, scale, margin, floor)
        assert verdict.loss_new == pytest.approx(loss_new, rel=1e-9)
        assert verdict.loss_old == pytest.approx(loss_old, rel=1e-9)
        # the t quantile is a series expansion (3e-4 of scipy's from 15 degrees of freedom)
        assert verdict.half_width == pytest.approx(half, rel=1e-3)
        assert verdict.revert == revert and (verdict.rows, verdict.queries) == (40, 15)


@pytest.mark.parametrize("seed", [0, 1])
def test_blocks_of_correlated_rows_widen_the_interval_as_the_reference_says(seed):
    rng = np.random.default_rng(seed)
    Q, X = rng.normal(size=(20, 2)), rng.normal(size=(301, 2))
    old = np.repeat(rng.random(43) < 0.3, 7).astype(float)             # runs of 7 rows: correlated in order
    new = np.repeat(rng.random(43) < 0.4, 7).astype(float)
    verdict = compare_models(Q, X, new, old, 0.3, margin=0.25)
    loss_new, loss_old, half, revert = _verdict_loop(Q, X, new, old, 0.3, "paper", 0.25)
    assert verdict.half_width == pytest.approx(half, rel=1e-3) and verdict.revert == revert
    shuffled = rng.permutation(301)                                    # the same rows, order broken
    wide, narrow = verdict.half_width, compare_models(Q[:, :], X[shuffled], new[shuffled], old[shuffled], 0.3,
                                                      margin=0.25).half_width
    assert wide > 1.3 * narrow


def test_point_weights_give_psi_for_any_losses():
    rng = np.random.default_rng(3)
    Q, X = rng.normal(size=(30, 2)), rng.normal(size=(80, 2))
    losses = rng.random(80) * (rng.random(80) < 0.4)
    assert float(point_weights(Q, X, 0.7) @ losses) == pytest.approx(psi_from_losses(Q, X, losses, 0.7), rel=1e-12)
    assert float(point_weights(Q, X, 0.7, scale="expected-loss") @ losses) == pytest.approx(
        psi_from_losses(Q, X, losses, 0.7, scale="expected-loss"), rel=1e-9)


def test_the_rule_reverts_a_clearly_worse_model_and_keeps_equal_or_better_ones():
    rng = np.random.default_rng(4)
    Q, X = rng.normal(size=(300, 2)), rng.normal(size=(3000, 2))
    old = (rng.random(3000) < 0.1).astype(float)
    assert compare_models(Q, X, 1 - old, old, 0.5).revert                       # inverted: 90% wrong
    assert not compare_models(Q, X, old, old, 0.5).revert                       # the same answers
    better = np.where(old == 1, rng.random(3000) < 0.5, 0).astype(float)
    assert not compare_models(Q, X, better, old, 0.5).revert
    # 10% more errors than the old model: inside a 25% margin
    slightly = np.where((old == 0) & (rng.random(3000) < 0.01), 1.0, old)
    verdict = compare_models(Q, X, slightly, old, 0.5, margin=0.25)
    assert verdict.loss_new > verdict.loss_old and not verdict.revert
    # a small old loss, tripled: past a relative margin, within an absolute floor of one point
    rare = (rng.random(3000) < 0.002).astype(float)
    tripled = np.where((rare == 0) & (rng.random(3000) < 0.004), 1.0, rare)
    assert compare_models(Q, X, tripled, rare, 0.5, margin=0.25, floor=0.0).excess > 0
    assert not compare_models(Q, X, tripled, rare, 0.5, margin=0.25, floor=0.01).revert


def test_a_perfect_old_model_and_one_new_error_is_not_enough_to_revert():
    rng = np.random.default_rng(5)
    Q, X = rng.normal(size=(50, 2)), rng.normal(size=(500, 2))
    old, new = np.zeros(500), np.zeros(500)
    new[0] = 1.0
    verdict = compare_models(Q, X, new, old, 0.5)
    assert verdict.loss_old == 0 and verdict.loss_new > 0 and not verdict.revert    # within its own interval


def test_large_batches_are_sampled_with_the_seed_the_same_for_both_models():
    rng = np.random.default_rng(6)
    Q, X = rng.normal(size=(400, 2)), rng.normal(size=(5000, 2))
    old = (rng.random(5000) < 0.1).astype(float)
    new = np.where(rng.random(5000) < 0.05, 1 - old, old)
    a = compare_models(Q, X, new, old, 0.5, seed=(7, 3), max_rows=1000, max_queries=100)
    b = compare_models(Q, X, new, old, 0.5, seed=(7, 3), max_rows=1000, max_queries=100)
    assert a == b and (a.rows, a.queries) == (1000, 100)
    exact = compare_models(Q, X, new, old, 0.5)
    assert abs(a.difference - exact.difference) < 3 * a.half_width      # the sample's interval covers it
    assert a.half_width > exact.half_width                               # fewer rows: a wider interval


def test_a_batch_that_cannot_tell_gives_no_verdict():
    Q = np.array([[0.0, 0.0]])
    far = np.array([[100.0, 100.0], [101.0, 100.0]])
    assert compare_models(Q, far, np.ones(2), np.zeros(2), 5.0) is None          # no weight near the queries
    assert compare_models(Q, far[:1], np.ones(1), np.zeros(1), 5.0) is None     # one row


def test_losses_of_the_wrong_length_are_one_line():
    with pytest.raises(InputError, match=r"losses_old: expected one loss per row \(3\)"):
        compare_models(np.zeros((1, 1)), np.zeros((3, 1)), np.zeros(3), np.zeros(2), 1.0)


def test_margin_is_checked_and_the_default_is_documented():
    assert check_margin(VERIFY_MARGIN) == VERIFY_MARGIN
    for bad in (-0.1, float("nan"), "1", True):
        with pytest.raises(InputError, match="verify margin"):
            check_margin(bad)
    assert Verdict(True, 0.5, 0.1, 0.01, VERIFY_MARGIN, 10, 2).difference == pytest.approx(0.4)


def test_the_check_reads_only_the_rows_checked_rows_names():
    """A batch larger than the check reads: losses outside ``checked_rows`` (NaN here) never
    reach the verdict, so the lifecycle predicts only those rows."""
    from cara_mlflow.verify import VERIFY_ROWS, checked_rows, compare_models

    rng = np.random.default_rng(4)
    n = 3 * VERIFY_ROWS
    X, Q = rng.normal(size=(n, 3)), rng.normal(size=(400, 3))
    new, old = (rng.random(n) < 0.2).astype(float), (rng.random(n) < 0.1).astype(float)
    rows = checked_rows(n, seed=(9, 3))
    assert rows.size == VERIFY_ROWS
    holes = np.full(n, np.nan)
    masked = [holes.copy(), holes.copy()]
    masked[0][rows], masked[1][rows] = new[rows], old[rows]
    full = compare_models(Q, X, new, old, 0.5, seed=(9, 3))
    assert compare_models(Q, X, *masked, 0.5, seed=(9, 3)) == full and full.revert
