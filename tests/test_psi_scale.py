"""Ψ on the expected-loss scale (issue 16): ψ(q) = Σ_x K(q, x) ℓ(x) / Σ_x K(q, x), a Nadaraya–Watson
estimate of the loss near q, so that Ψ counts expected query losses. Checked against per-point loops,
against a stream whose error rate near the queries is known, and where the kernel underflows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cara_mlflow import costs, staleness
from cara_mlflow.staleness import (
    MASS_SAMPLE_ROWS,
    PSI_SCALES,
    _expected_loss_sums,
    check_psi_scale,
    mass_sample,
    psi_from_losses,
    relative_staleness,
)
from tests.reference import psi_slow


def psi_expected_slow(queries, X, losses, gamma, mass_points=None, mass_weight=1.0):
    """Σ_q [Σ_x K(q, x) ℓ(x)] / [Σ_m w_m K(q, m)], one Python loop per query and per point (mass over X
    when no mass points are given); no stabilisation, so only for queries near the points."""
    mass_points = X if mass_points is None else mass_points
    weights = [mass_weight] * len(mass_points) if np.ndim(mass_weight) == 0 else list(mass_weight)
    total = 0.0
    for q in queries:
        num = mass = 0.0
        for x, loss in zip(X, losses):
            num += math.exp(-gamma * sum((a - b) ** 2 for a, b in zip(q, x))) * loss
        for m, w in zip(mass_points, weights):
            mass += w * math.exp(-gamma * sum((a - b) ** 2 for a, b in zip(q, m)))
        total += num / mass
    return total


class WrongWhere:
    """A fixed model: predicts 0 everywhere (so it is wrong exactly where y = 1)."""

    def predict(self, X):
        return np.zeros(len(X), dtype=int)


def _small(seed, n=120, n_q=40, d=2):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Q = rng.normal(size=(n_q, d)) * 0.8
    losses = (rng.random(n) < 1 / (1 + np.exp(-2 * X[:, 0]))) * rng.uniform(0.5, 1.5, n)
    return Q, X, losses


# -- against the per-point loops -------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_exact_matches_the_per_point_loops(seed):
    Q, X, losses = _small(seed)
    slow = psi_expected_slow(Q, X, losses, 0.7)
    assert psi_from_losses(Q, X, losses, 0.7, scale="expected-loss") == pytest.approx(slow, rel=1e-12)
    # mass points apart, with the default weight n_rows / len(mass_points) and with explicit weights
    M, w = X[::3], np.linspace(0.5, 2.0, len(X[::3]))
    slow_m = psi_expected_slow(Q, X, losses, 0.7, M, len(X) / len(M))
    assert psi_from_losses(Q, X, losses, 0.7, scale="expected-loss", mass_points=M) == pytest.approx(slow_m, rel=1e-12)
    slow_w = psi_expected_slow(Q, X, losses, 0.7, M, w)
    got = psi_from_losses(Q, X, losses, 0.7, scale="expected-loss", mass_points=M, mass_weight=w)
    assert got == pytest.approx(slow_w, rel=1e-12)
    # the kept table of a batch (rows with a loss + a zero-loss sample), weighted per row
    index, weight = mass_sample(X, 30, losses=losses, seed=seed)
    slow_t = psi_expected_slow(Q, X[index], losses[index], 0.7, None, weight)
    got = psi_from_losses(Q, X[index], losses[index], 0.7, len(X), scale="expected-loss", mass_weight=weight)
    assert got == pytest.approx(slow_t, rel=1e-12)


def test_both_terms_of_the_relative_staleness_match_the_loops():
    rng = np.random.default_rng(3)
    X_now, X_then = rng.normal(size=(80, 2)) + 0.3, rng.normal(size=(70, 2))
    y_now, y_then = (rng.random(80) < 0.4).astype(int), (rng.random(70) < 0.2).astype(int)
    Q = rng.normal(size=(30, 2))
    model = WrongWhere()
    now = psi_expected_slow(Q, X_now, y_now.astype(float), 0.5)
    then = psi_expected_slow(Q, X_then, y_then.astype(float), 0.5)
    got = relative_staleness(Q, (X_now, y_now), (X_then, y_then), model, gamma=0.5, scale="expected-loss")
    assert got == pytest.approx(now - then, rel=1e-12)
    assert staleness.absolute_staleness(Q, (X_then, y_then), model, gamma=0.5,
                                        scale="expected-loss") == pytest.approx(then, rel=1e-12)


def test_sampled_queries_are_within_their_interval():
    rng = np.random.default_rng(20)
    X = rng.normal(size=(150, 2))
    Q = rng.normal(size=(1200, 2))
    losses = (rng.random(150) < 0.2 + 0.2 * (X[:, 0] > 0)).astype(float)
    slow = psi_expected_slow(Q, X, losses, 0.5)
    for seed in range(5):
        est = _expected_loss_sums(Q, X, losses.reshape(-1, 1), None, np.ones(150), 0.5, "sample", 0.05, 0.99, seed,
                                  staleness.MAX_BLOCK_BYTES)
        assert est.method == "sample" and est.n_pairs < 1200 * 150   # the estimate, not a fallback
        assert est.half_width[0] <= 0.05 * est.value[0]
        assert abs(est.value[0] - slow) <= est.half_width[0]
        public = psi_from_losses(Q, X, losses, 0.5, method="sample", rel_error=0.05, seed=seed,
                                 scale="expected-loss")
        assert public == est.value[0]
        # "rff" has no feature form for a ratio: it samples queries as "sample" does
        assert psi_from_losses(Q, X, losses, 0.5, method="rff", rel_error=0.05, seed=seed,
                               scale="expected-loss") == public
    # with the mass over points apart: the same discipline
    M = X[::2]
    slow_m = psi_expected_slow(Q, X, losses, 0.5, M, 2.0)
    est = psi_from_losses(Q, X, losses, 0.5, method="sample", rel_error=0.05, seed=0, scale="expected-loss",
                          mass_points=M)
    assert est != pytest.approx(slow_m, rel=1e-9) and est == pytest.approx(slow_m, rel=0.05)


def test_sampling_falls_back_to_every_query_when_it_would_cost_as_much():
    rng = np.random.default_rng(21)
    X, Q = rng.normal(size=(100, 2)), rng.normal(size=(900, 2))
    losses = (rng.random(100) < 0.05).astype(float)   # rare, spread: the ratios vary a lot
    exact = psi_from_losses(Q, X, losses, 3.0, scale="expected-loss")
    est = _expected_loss_sums(Q, X, losses.reshape(-1, 1), None, np.ones(100), 3.0, "sample", 0.001, 0.99, 0,
                              staleness.MAX_BLOCK_BYTES)
    assert est.method == "exact" and est.half_width[0] == 0.0
    assert est.value[0] == pytest.approx(exact, rel=1e-12)


def test_auto_is_exact_below_the_switch_and_samples_above(monkeypatch):
    rng = np.random.default_rng(22)
    X, Q = rng.normal(size=(200, 2)), rng.normal(size=(2000, 2))
    losses = (rng.random(200) < 0.3).astype(float)
    exact = psi_from_losses(Q, X, losses, 0.5, scale="expected-loss")
    assert psi_from_losses(Q, X, losses, 0.5, method="auto", scale="expected-loss") == exact
    monkeypatch.setattr(staleness, "AUTO_EXACT_PAIRS", 10**4)
    auto = psi_from_losses(Q, X, losses, 0.5, method="auto", seed=4, scale="expected-loss")
    assert auto != exact and auto == pytest.approx(exact, rel=0.01)
    assert auto == psi_from_losses(Q, X, losses, 0.5, method="sample", seed=4, scale="expected-loss")


# -- the paper's scale is untouched ----------------------------------------------------------------

def test_paper_scale_is_unchanged():
    rng = np.random.default_rng(42)
    Q, X = rng.normal(size=(12000, 5)), rng.normal(size=(2400, 5))
    losses = (rng.random(2400) < 0.6) * 1.0
    # the values of the function before the scale existed (same inputs, same seeds; "sample" and "rff" sampled)
    before = {"exact": 1299.383556843651, "sample": 1301.8601096310117, "rff": 1297.272746833342}
    for method, value in before.items():
        got = psi_from_losses(Q, X, losses, 0.2, 3000, method=method, seed=(7, 1), rel_error=0.05, scale="paper",
                              mass_points=X[:10])   # mass arguments: not used on this scale
        assert got == pytest.approx(value, rel=1e-12)
    assert psi_from_losses(Q, X, losses, 0.2, 3000, seed=(7, 1)) == psi_from_losses(Q, X, losses, 0.2, 3000,
                                                                                    seed=(7, 1), scale="paper")
    q, x, ls = _small(5)
    model = type("M", (), {"predict": lambda self, X: (X[:, 0] > 0).astype(int)})()
    y = (ls > 0).astype(int)
    assert staleness.absolute_staleness(q, (x, y), model, gamma=0.7) == pytest.approx(
        psi_slow(q, x, y, model, 0.7), rel=1e-12)


# -- the scale means what it says -----------------------------------------------------------------

def test_psi_counts_the_expected_query_errors_where_the_error_rate_is_known():
    """Labels y ~ Bernoulli(p(x)) with p = 0.1 left of x₁ = 1 and 0.4 right of it; a model that always says 0
    is wrong with probability p(x). The queries' expected number of wrong answers is Σ_q p(q)."""
    rng = np.random.default_rng(30)
    n, gamma = 60_000, 200.0                    # kernel σ = 1/√(2γ) = 0.05, halves of length 1
    X = np.column_stack([rng.uniform(0.0, 2.0, n), rng.uniform(0.0, 1.0, n)])
    p = np.where(X[:, 0] < 1.0, 0.1, 0.4)
    y = (rng.random(n) < p).astype(int)
    Q = np.vstack([np.column_stack([rng.uniform(0.1, 0.9, 200), rng.uniform(0.1, 0.9, 200)]),
                   np.column_stack([rng.uniform(1.1, 1.9, 300), rng.uniform(0.1, 0.9, 300)])])
    expected_errors = 200 * 0.1 + 300 * 0.4     # = 140
    psi = staleness.absolute_staleness(Q, (X, y), WrongWhere(), gamma=gamma, scale="expected-loss")
    assert psi == pytest.approx(expected_errors, rel=0.03)   # the labels' noise: ~1% (seeds 30–39: within 1.3%)
    # with the error probabilities themselves as the loss, only the kernel's smoothing is left
    assert psi_from_losses(Q, X, p, gamma, scale="expected-loss") == pytest.approx(expected_errors, rel=0.002)
    # the paper's scale is the same sum times the kernel's mass per row: density 1/2 × π/γ here (≈ 0.0079)
    paper = staleness.absolute_staleness(Q, (X, y), WrongWhere(), gamma=gamma)
    mean_mass = staleness.kernel_sums(X, Q, gamma).mean() / n
    assert mean_mass == pytest.approx(0.5 * np.pi / gamma, rel=0.03)
    assert paper == pytest.approx(expected_errors * mean_mass, rel=0.05)
    assert paper < 0.01 * expected_errors


# -- far from every point ----------------------------------------------------------------------------

def test_far_queries_get_their_nearest_points_loss_not_nan():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    losses = np.array([1.0, 0.0, 0.5])
    far = np.array([[-300.0, -300.0], [300.0, 0.0], [0.0, 400.0]])   # nearest: row 0, row 1, row 2
    assert np.exp(-1.0 * 299.0 ** 2) == 0.0                        # every kernel underflows
    assert psi_from_losses(far, X, losses, 1.0, scale="expected-loss") == pytest.approx(1.0 + 0.0 + 0.5)
    for i, q in enumerate(far):
        assert psi_from_losses(q[None], X, losses, 1.0, scale="expected-loss") == pytest.approx(losses[i])
    # mass points apart (a sample of the batch): the sums are shifted each by its own nearest point
    got = psi_from_losses(far, X, losses, 1.0, scale="expected-loss", mass_points=X, mass_weight=1.0)
    assert got == pytest.approx(1.5)
    # a mass sample that misses the loss row nearest to a far query: large, finite, never NaN
    lonely = psi_from_losses(far[:1], X, losses, 1.0, scale="expected-loss", mass_points=X[1:2] + [0.0, 0.01])
    assert np.isfinite(lonely) and lonely > 1.0
    # the cost matrix's per-point weights Σ_q K(q, x) / m(q): the far query's weight goes to its nearest row
    w = staleness._nw_point_weights(far, X, 1.0, staleness.MAX_BLOCK_BYTES)
    np.testing.assert_allclose(w, [1.0, 1.0, 1.0])
    C = costs.cost_matrix([(X, [0, 0, 0]), (X, [1, 0, 1])], [WrongWhere(), WrongWhere()], 1.0,
                          queries=[far, far], gamma=1.0, scale="expected-loss")
    assert np.isfinite(C[0, 1]) and C[0, 1] == pytest.approx(2.0)


# -- a batch's mass from a sample of its rows --------------------------------------------------------

def test_mass_sample_keeps_the_loss_rows_and_weighs_the_rest():
    losses = np.zeros(10_000)
    losses[::50] = 1.0
    index, weight = mass_sample(np.zeros((10_000, 3)), 500, losses=losses, seed=1)
    assert np.all(np.diff(index) > 0) and index.size == 200 + 500
    assert set(np.flatnonzero(losses)) <= set(index.tolist())
    np.testing.assert_array_equal(weight[losses[index] != 0], 1.0)
    np.testing.assert_allclose(weight[losses[index] == 0], 9800 / 500)
    assert weight.sum() == pytest.approx(10_000)
    again = mass_sample(np.zeros((10_000, 3)), 500, losses=losses, seed=1)
    np.testing.assert_array_equal(index, again[0])
    plain, w = mass_sample(10_000, 400, seed=2)
    assert plain.size == 400 and w.sum() == pytest.approx(10_000)
    assert MASS_SAMPLE_ROWS == 2000
    with pytest.raises(ValueError, match="one loss per row"):
        mass_sample(np.zeros((5, 1)), losses=np.zeros(4))


def test_psi_with_a_sampled_mass_is_close_to_the_one_with_every_row():
    rng = np.random.default_rng(40)
    n = 20_000
    X = rng.normal(size=(n, 2))
    losses = (rng.random(n) < 0.05 + 0.25 * (X[:, 0] > 0.5)).astype(float)
    Q = rng.normal(size=(300, 2)) * 0.8
    every = psi_from_losses(Q, X, losses, 1.0, scale="expected-loss")
    index, weight = mass_sample(X, losses=losses, seed=0)   # what the lifecycle keeps with a version
    assert index.size < n / 3
    kept = psi_from_losses(Q, X[index], losses[index], 1.0, n, scale="expected-loss", mass_weight=weight)
    assert kept == pytest.approx(every, rel=0.02)
    rows, _ = mass_sample(X, seed=0)                        # a plain sample: weight n_rows / len(sample)
    wrong = np.flatnonzero(losses)
    plain = psi_from_losses(Q, X[wrong], losses[wrong], 1.0, n, scale="expected-loss", mass_points=X[rows])
    assert plain == pytest.approx(every, rel=0.02)
    with pytest.raises(ValueError, match=r"pass mass_points .* or mass_weight"):
        psi_from_losses(Q, X[wrong], losses[wrong], 1.0, n, scale="expected-loss")


# -- names -----------------------------------------------------------------------------------------

def test_unknown_scale_is_refused_in_one_line():
    message = r"^psi scale: unknown 'mean'; expected one of paper, expected-loss$"
    assert PSI_SCALES == ("paper", "expected-loss") and check_psi_scale("paper") == "paper"
    Q = np.zeros((2, 1))
    for call in (lambda: check_psi_scale("mean"),
                 lambda: psi_from_losses(Q, Q, np.ones(2), 1.0, scale="mean"),
                 lambda: relative_staleness(Q, (Q, [0, 1]), (Q, [0, 1]), WrongWhere(), scale="mean"),
                 lambda: costs.cost_matrix([(Q, [0, 1]), (Q, [0, 1])], None, 1.0,
                                           predictions=[[np.zeros(2)] * 2, [np.zeros(2)]], scale="mean")):
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match="mass_weight"):
        psi_from_losses(Q, Q, np.ones(2), 1.0, scale="expected-loss", mass_weight=0.0)


# -- the cost matrix -------------------------------------------------------------------------------

class Cut:
    def __init__(self, c):
        self.c = c

    def predict(self, X):
        return (X[:, 0] > self.c).astype(int)


def _window(rng, T=4, n=150, n_q=60):
    batches, queries = [], []
    for t in range(T):
        X = rng.normal(size=(n, 2)) + 0.25 * t
        noise = rng.random(n) < 0.1
        batches.append((X, ((X[:, 0] + 0.5 * X[:, 1] > 0.3 * t) ^ noise).astype(int)))
        queries.append(rng.normal(size=(n_q, 2)) * 0.9 + 0.25 * t)
    return batches, queries


def test_cost_matrix_equals_the_relative_staleness_pair_by_pair():
    rng = np.random.default_rng(50)
    batches, queries = _window(rng)
    models = [Cut(0.3 * t) for t in range(4)]
    C = costs.cost_matrix(batches, models, 2.0, queries=queries, gamma=0.8, scale="expected-loss")
    slow = np.full((4, 4), np.inf)
    np.fill_diagonal(slow, 2.0)
    for t in range(4):
        for tp in range(t):
            slow[tp, t] = relative_staleness(queries[t], batches[t], batches[tp], models[tp], gamma=0.8,
                                             scale="expected-loss")
    np.testing.assert_allclose(C, slow, rtol=1e-10, atol=1e-12)
    terms = costs.staleness_terms(batches, models, queries=queries, gamma=0.8, scale="expected-loss")
    assert terms.scale == "expected-loss"
    # one pair, per point: the first term's weights w_t(x) = Σ_q K(q, x) / m_t(q)
    X, y = batches[3]
    assert terms.psi_now[1, 3] == pytest.approx(
        psi_expected_slow(queries[3], X, (models[1].predict(X) != y).astype(float), 0.8), rel=1e-10)
    paper = costs.cost_matrix(batches, models, 2.0, queries=queries, gamma=0.8)
    np.testing.assert_array_equal(paper, costs.cost_matrix(batches, models, 2.0, queries=queries, gamma=0.8,
                                                           scale="paper"))


def test_cost_matrix_then_terms_use_the_mass_sample_the_lifecycle_keeps():
    rng = np.random.default_rng(51)
    n = MASS_SAMPLE_ROWS + 1500                     # more zero-loss rows than the sample: the mass is sampled
    batches = []
    for t in range(2):
        X = rng.normal(size=(n, 2)) + 0.3 * t
        batches.append((X, ((X[:, 0] > 0.2 * t) ^ (rng.random(n) < 0.05)).astype(int)))
    queries = [rng.normal(size=(50, 2)) + 0.3 * t for t in range(2)]
    models = [Cut(0.0), Cut(0.2)]
    terms = costs.staleness_terms(batches, models, queries=queries, gamma=1.0, scale="expected-loss", seed=3)
    X, y = batches[0]
    own = (models[0].predict(X) != y).astype(float)
    index, weight = mass_sample(X, losses=own, seed=staleness._child_seed(3, 2, 0))
    assert index.size < n
    lifecycle = psi_from_losses(queries[1], X[index], own[index], 1.0, n, scale="expected-loss", mass_weight=weight)
    assert terms.psi_then[0, 1] == pytest.approx(lifecycle, rel=1e-12)
    every = psi_from_losses(queries[1], X, own, 1.0, scale="expected-loss")
    assert terms.psi_then[0, 1] == pytest.approx(every, rel=0.03)


def test_sampled_cost_matrix_terms_are_within_the_error(monkeypatch):
    rng = np.random.default_rng(52)
    batches, queries = _window(rng, T=3, n=300, n_q=3000)
    models = [Cut(0.3 * t) for t in range(3)]
    exact = costs.staleness_terms(batches, models, queries=queries, gamma=0.8, scale="expected-loss")
    est = costs.staleness_terms(batches, models, queries=queries, gamma=0.8, scale="expected-loss",
                                method="sample", rel_error=0.02, seed=1)
    upper = np.triu_indices(3, 1)
    for name in ("psi_now", "psi_then"):
        e, a = getattr(exact, name)[upper], getattr(est, name)[upper]
        assert not np.array_equal(a, e)
        np.testing.assert_array_less(np.abs(a - e), 0.02 * np.abs(e) + 1e-12)


def test_memory_stays_bounded():
    import tracemalloc

    rng = np.random.default_rng(53)
    Q, X = rng.random((4000, 4)), rng.random((8000, 4))          # the dense kernel: 256 MB
    losses = (rng.random(8000) < 0.3).astype(float)
    tracemalloc.start()
    exact = psi_from_losses(Q, X, losses, 5.0, scale="expected-loss")
    weights = staleness._nw_point_weights(Q, X, 5.0, staleness.MAX_BLOCK_BYTES)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert weights @ losses == pytest.approx(exact, rel=1e-10)
    assert peak < 4000 * 8000 * 8 / 8
