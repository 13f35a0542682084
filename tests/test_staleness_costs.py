"""Ψ, Ψ̄ and the cost matrix against slow per-point references, and their input checks."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

from cara_mlflow import costs, staleness
from tests.reference import cost_matrix_slow, psi_slow


class Threshold:
    """A fixed classifier: label 1 iff the first feature exceeds a cut."""

    def __init__(self, cut):
        self.cut = cut

    def predict(self, X):
        return (np.asarray(X)[:, 0] > self.cut).astype(int)


def _batches(rng, T, n, d, cuts):
    out = []
    for t in range(T):
        X = rng.normal(size=(n, d)) * 0.5 + 0.1 * t
        out.append((X, (X[:, 0] > cuts[t]).astype(int)))
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("gamma", [0.3, 1.0, 4.0])
def test_absolute_staleness_matches_slow_reference(seed, gamma):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(40, 3))
    y = rng.integers(0, 2, size=40)
    Q = rng.normal(size=(15, 3))
    model = Threshold(0.0)
    fast = staleness.absolute_staleness(Q, (X, y), model, gamma=gamma)
    assert fast == pytest.approx(psi_slow(Q, X, y, model, gamma), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_relative_staleness_matches_slow_reference(seed):
    rng = np.random.default_rng(seed)
    Xn, Xt = rng.normal(size=(30, 2)), rng.normal(size=(25, 2))
    yn, yt = (Xn[:, 1] > 0).astype(int), (Xt[:, 0] > 0).astype(int)
    Q = rng.normal(size=(10, 2))
    model = Threshold(0.0)
    g = staleness.resolve_gamma("scale", np.vstack([Xn, Xt]))
    expected = psi_slow(Q, Xn, yn, model, g) - psi_slow(Q, Xt, yt, model, g)
    assert staleness.relative_staleness(Q, (Xn, yn), (Xt, yt), model) == pytest.approx(expected, abs=1e-12)


def test_blocking_gives_the_same_sums_as_one_block():
    rng = np.random.default_rng(1)
    Q, X = rng.normal(size=(300, 4)), rng.normal(size=(200, 4))
    whole = staleness.kernel_sums(Q, X, gamma=0.7)
    tiny_blocks = staleness.kernel_sums(Q, X, gamma=0.7, max_block_bytes=8 * 300 * 3)  # 3 rows a block
    np.testing.assert_allclose(tiny_blocks, whole, rtol=1e-13)
    slow = [sum(np.exp(-0.7 * np.sum((q - x) ** 2)) for q in Q) for x in X]
    np.testing.assert_allclose(whole, slow, rtol=1e-10)


def test_large_inputs_stay_within_the_block_budget():
    import tracemalloc

    rng = np.random.default_rng(0)
    Q, X = rng.random((100_000, 2)), rng.random((10_000, 2))  # the full kernel would be 8 GB
    tracemalloc.start()
    sums = staleness.kernel_sums(Q, X, gamma=1.0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sums.shape == (10_000,) and np.isfinite(sums).all()
    assert peak < 3 * staleness.MAX_BLOCK_BYTES


def test_custom_and_squared_losses():
    rng = np.random.default_rng(2)
    X, Q = rng.normal(size=(20, 2)), rng.normal(size=(5, 2))
    y = rng.normal(size=20)

    class Linear:
        def predict(self, X):
            return X[:, 0]

    expected = psi_slow(Q, X, y, Linear(), 0.5, loss=lambda a, b: (a - b) ** 2)
    assert staleness.absolute_staleness(Q, (X, y), Linear(), gamma=0.5, loss="squared") == pytest.approx(expected)
    custom = staleness.absolute_staleness(Q, (X, y), Linear(), gamma=0.5, loss=lambda a, b: np.abs(a - b))
    assert custom == pytest.approx(psi_slow(Q, X, y, Linear(), 0.5, loss=lambda a, b: abs(a - b)))


def test_zero_staleness_when_nothing_changes():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 2))
    y = (X[:, 0] > 0).astype(int)
    assert staleness.relative_staleness(X[:5], (X, y), (X, y), Threshold(0.3), gamma=1.0) == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_fast_cost_matrix_matches_per_pair_recomputation(seed):
    rng = np.random.default_rng(seed)
    T = 5
    batches = _batches(rng, T, 30, 2, cuts=[0.0, 0.2, -0.2, 0.5, 0.1])
    queries = [rng.normal(size=(8, 2)) for _ in range(T)]
    models = [DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y) for X, y in batches]
    g = 0.8
    fast = costs.cost_matrix(batches, models, kappa=3.0, queries=queries, gamma=g)
    np.testing.assert_allclose(fast, cost_matrix_slow(batches, queries, models, 3.0, g), rtol=1e-10, atol=1e-12)


def test_cost_matrix_defaults_queries_to_the_data_and_resolves_scale_once():
    rng = np.random.default_rng(4)
    batches = _batches(rng, 3, 20, 2, cuts=[0.0, 0.3, 0.6])
    models = [Threshold(c) for c in (0.0, 0.3, 0.6)]
    g = staleness.resolve_gamma("scale", np.vstack([X for X, _ in batches]))
    fast = costs.cost_matrix(batches, models, kappa=[1.0, 2.0, 3.0])
    slow = cost_matrix_slow(batches, [X for X, _ in batches], models, 0.0, g)
    np.fill_diagonal(slow, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12)


def test_staleness_terms_split_and_kappa_only_touches_the_diagonal():
    rng = np.random.default_rng(5)
    batches = _batches(rng, 4, 25, 2, cuts=[0.0, 0.4, -0.4, 0.0])
    models = [Threshold(c) for c in (0.0, 0.4, -0.4, 0.0)]
    terms = costs.staleness_terms(batches, models, gamma=1.0)
    a, b = terms.cost_matrix(5.0), terms.cost_matrix(50.0)
    off = ~np.eye(4, dtype=bool)
    np.testing.assert_array_equal(a[off], b[off])
    assert np.diag(b).tolist() == [50.0] * 4
    X1, y1 = batches[1]
    assert terms.psi_now[0, 1] == pytest.approx(psi_slow(X1, X1, y1, models[0], 1.0))


@pytest.mark.parametrize("bad, match", [
    ({"kappa": -1.0}, "kappa"),
    ({"kappa": 0.0}, "kappa"),
    ({"kappa": float("nan")}, "kappa"),
    ({"kappa": [1.0, 2.0]}, "kappa"),
])
def test_cost_matrix_rejects_bad_kappa(bad, match):
    X = np.zeros((3, 2))
    with pytest.raises(ValueError, match=match):
        costs.cost_matrix([(X, [0, 1, 0])] * 3, [Threshold(0)] * 3, **bad)


def test_bad_batches_are_named():
    good = (np.zeros((3, 2)), np.array([0, 1, 0]))
    models = [Threshold(0)] * 2
    with pytest.raises(ValueError, match=r"batches\[1\] X: has 3 features, expected 2"):
        costs.cost_matrix([good, (np.zeros((3, 3)), [0, 1, 0])], models, kappa=1)
    with pytest.raises(ValueError, match=r"batches\[1\] X: is empty"):
        costs.cost_matrix([good, (np.zeros((0, 2)), [])], models, kappa=1)
    with pytest.raises(ValueError, match=r"batches\[0\] X: contains NaN or inf"):
        costs.cost_matrix([(np.array([[np.nan, 0.0]]), [0]), good], models, kappa=1)
    with pytest.raises(ValueError, match=r"queries\[0\]: has 1 features, expected 2"):
        costs.cost_matrix([good, good], models, kappa=1, queries=[np.zeros((2, 1)), np.zeros((2, 2))])
    with pytest.raises(ValueError, match="models: expected 2"):
        costs.cost_matrix([good, good], [Threshold(0)], kappa=1)


def test_staleness_input_errors():
    X, y = np.zeros((3, 2)), np.array([0, 1, 0])
    with pytest.raises(ValueError, match="queries: has 3 features, expected 2"):
        staleness.absolute_staleness(np.zeros((1, 3)), (X, y), Threshold(0))
    with pytest.raises(ValueError, match="data_then X: has 1 features"):
        staleness.relative_staleness(np.zeros((1, 2)), (X, y), (np.zeros((3, 1)), y), Threshold(0))
    with pytest.raises(ValueError, match="data X: contains NaN or inf"):
        staleness.absolute_staleness(np.zeros((1, 2)), (np.full((3, 2), np.inf), y), Threshold(0))
    with pytest.raises(ValueError, match="data: X has 3 rows but y has 2"):
        staleness.absolute_staleness(np.zeros((1, 2)), (X, y[:2]), Threshold(0))
    with pytest.raises(ValueError, match="gamma"):
        staleness.absolute_staleness(np.zeros((1, 2)), (X, y), Threshold(0), gamma=-1)
    with pytest.raises(ValueError, match="loss: unknown loss 'hinge'"):
        staleness.absolute_staleness(np.zeros((1, 2)), (X, y), Threshold(0), loss="hinge")
    with pytest.raises(ValueError, match="queries: is empty"):
        staleness.absolute_staleness(np.zeros((0, 2)), (X, y), Threshold(0))


@pytest.mark.parametrize("C, match", [
    (np.ones((2, 3)), "square"),
    (np.array([[1.0, 0.5], [0.3, 1.0]]), "below the diagonal"),
    (np.array([[1.0, np.nan], [np.inf, 1.0]]), "NaN or inf"),
    (np.array([[0.0, 0.5], [np.inf, 1.0]]), "kappa > 0"),
])
def test_cost_matrix_contract_is_checked(C, match):
    with pytest.raises(ValueError, match=match):
        costs.strategy_cost(C, [0, 0])


def test_strategy_cost_and_helpers():
    C = costs.with_kappa(np.array([[0, 1.0, 2.0], [0, 0, 0.5], [0, 0, 0]]), 3.0)
    assert costs.strategy_cost(C, [0, 0, 0]) == 6.0
    assert costs.strategy_cost(C, [0, 1, 1]) == 3.0 + 3.0 + 0.5
    np.testing.assert_array_equal(costs.cumulative_strategy_cost(C, [0, 0, 2]), [3.0, 4.0, 7.0])
    assert costs.strategy_from_retrains([1], 3).tolist() == [0, 1, 1]
    assert costs.retrains_from_strategy([0, 1, 1]) == [1]
    with pytest.raises(ValueError, match="s_2 = 1 is neither"):
        costs.strategy_cost(C, [0, 0, 1])
    with pytest.raises(ValueError, match="s_0 = 0"):
        costs.strategy_cost(C, [1, 1, 1])
    assert costs.scpe(11.0, 10.0) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="oracle_cost"):
        costs.scpe(1.0, 0.0)


def _one_hot_batch(rng, n, n_categories=40):
    """A dense numeric column plus a one-hot categorical: (dense X, sparse X, y)."""
    from scipy import sparse

    codes = rng.integers(0, n_categories, size=n)
    dense = np.zeros((n, n_categories + 1))
    dense[np.arange(n), codes] = 1.0
    dense[:, -1] = rng.random(n)
    y = ((codes % 3 == 0) ^ (dense[:, -1] > 0.7)).astype(int)
    return dense, sparse.csr_matrix(dense), y


def test_sparse_one_hot_batches_give_the_same_staleness_as_their_dense_copy():
    from scipy import sparse

    rng = np.random.default_rng(8)
    Xd, Xs, y = _one_hot_batch(rng, 120)
    Q = Xd[:20]
    np.testing.assert_allclose(staleness.kernel_sums(sparse.csr_matrix(Q), Xs, gamma=0.3),
                               staleness.kernel_sums(Q, Xd, gamma=0.3), rtol=1e-12)
    assert staleness.resolve_gamma("scale", Xs) == pytest.approx(staleness.resolve_gamma("scale", Xd))
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(Xd[60:], y[60:])
    dense = staleness.relative_staleness(Q, (Xd[:60], y[:60]), (Xd[60:], y[60:]), model)
    sparse_value = staleness.relative_staleness(sparse.csr_matrix(Q), (Xs[:60], y[:60]), (Xs[60:], y[60:]), model)
    assert sparse_value == pytest.approx(dense, rel=1e-12, abs=1e-14)


def test_sparse_cost_matrix_equals_dense_cost_matrix():
    rng = np.random.default_rng(9)
    dense_batches, sparse_batches = [], []
    for _ in range(4):
        Xd, Xs, y = _one_hot_batch(rng, 80)
        dense_batches.append((Xd, y))
        sparse_batches.append((Xs, y))
    models = [DecisionTreeClassifier(max_depth=4, random_state=0).fit(X, y) for X, y in dense_batches]
    C_dense = costs.cost_matrix(dense_batches, models, kappa=2.0)
    C_sparse = costs.cost_matrix(sparse_batches, models, kappa=2.0)
    np.testing.assert_allclose(C_sparse, C_dense, rtol=1e-10, atol=1e-13)
    with pytest.raises(ValueError, match=r"batches\[1\] X: contains NaN"):
        bad = sparse_batches[1][0].copy()
        bad.data[0] = np.nan
        costs.cost_matrix([sparse_batches[0], (bad, sparse_batches[1][1])], models[:2], kappa=1.0)
