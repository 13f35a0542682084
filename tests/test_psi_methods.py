"""Ψ on large batches (issue 6): the estimates against the exact sums, auto == exact below the
switch, sparse one-hot == dense, bounded memory, and the method reaching the command line."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from cara_mlflow import costs, staleness
from cara_mlflow.staleness import pair_sums, psi_from_losses


def _clustered(rng, n, d, centres):
    """Points around a few centres: a kernel sum with real structure, not a flat average."""
    return centres[rng.integers(0, len(centres), n)] + rng.normal(size=(n, d))


def _one_hot(rng, n, levels=(40, 25, 12)):
    """Rows of one-hot categoricals plus two numeric columns, AIRLINES-style."""
    blocks = [np.eye(k)[rng.integers(0, k, n)] for k in levels]
    return np.hstack(blocks + [rng.normal(size=(n, 2))])


@pytest.mark.parametrize("method", ["sample", "rff"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimate_is_within_its_documented_error_dense(method, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, 6))
    Q, X = _clustered(rng, 10000, 6, centres), _clustered(rng, 6000, 6, centres)
    w = (rng.random(6000) < 0.6) * rng.uniform(0.5, 2.0, 6000)   # weighted, with zero-loss rows
    exact = pair_sums(Q, X, w, gamma=0.05, method="exact")
    est = pair_sums(Q, X, w, gamma=0.05, method=method, seed=seed)
    assert est.method == method and est.n_pairs < exact.n_pairs   # the estimate, not a fallback
    assert est.half_width <= staleness.DEFAULT_REL_ERROR * est.value
    assert abs(est.value - exact.value) <= staleness.DEFAULT_REL_ERROR * exact.value


def test_a_rough_kernel_falls_back_to_the_exact_sum():
    """Tight clusters and a large γ: the blocks would need more pairs than there are."""
    rng = np.random.default_rng(3)
    centres = rng.normal(scale=3.0, size=(8, 6))
    Q, X = _clustered(rng, 8000, 6, centres), _clustered(rng, 6000, 6, centres)
    exact = pair_sums(Q, X, np.ones(6000), gamma=2.0, method="exact")
    est = pair_sums(Q, X, np.ones(6000), gamma=2.0, method="sample", seed=0)
    assert est.method == "exact" and est.value == exact.value and est.half_width == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimate_is_within_its_documented_error_sparse(seed):
    rng = np.random.default_rng(10 + seed)
    Q, X = sparse.csr_matrix(_one_hot(rng, 12000)), sparse.csr_matrix(_one_hot(rng, 8000))
    w = (rng.random(8000) < 0.5).astype(float)
    exact = pair_sums(Q, X, w, gamma=0.3, method="exact")
    est = pair_sums(Q, X, w, gamma=0.3, method="sample", seed=seed)
    assert est.method == "sample" and est.n_pairs < exact.n_pairs   # the estimate, not a fallback
    assert abs(est.value - exact.value) <= staleness.DEFAULT_REL_ERROR * exact.value


def test_several_columns_are_each_within_the_error():
    rng = np.random.default_rng(4)
    Q, X = rng.normal(size=(8000, 4)), rng.normal(size=(8000, 4))
    W = np.column_stack([(rng.random(8000) < p) * rng.uniform(0.5, 1.5, 8000) for p in (1.0, 0.9, 0.8)])
    exact = pair_sums(Q, X, W, gamma=0.05, method="exact")
    est = pair_sums(Q, X, W, gamma=0.05, method="sample", seed=4)
    assert est.value.shape == (3,) and est.method == "sample"
    np.testing.assert_array_less(np.abs(est.value - exact.value), 0.01 * exact.value)
    np.testing.assert_array_less(est.half_width, 0.01 * est.value + 1e-12)


def test_estimates_are_reproducible_by_seed():
    rng = np.random.default_rng(5)
    Q, X = rng.normal(size=(6000, 3)), rng.normal(size=(6000, 3))
    w = np.ones(6000)
    a = pair_sums(Q, X, w, gamma=0.05, method="rff", seed=7)
    b = pair_sums(Q, X, w, gamma=0.05, method="rff", seed=7)
    c = pair_sums(Q, X, w, gamma=0.05, method="rff", seed=8)
    assert a.method == "rff"
    assert a.value == b.value and a.half_width == b.half_width
    assert a.value != c.value


def test_the_exact_fallback_when_sampling_would_cost_more():
    rng = np.random.default_rng(6)
    Q, X = rng.normal(size=(300, 2)), rng.normal(size=(200, 2))   # fewer pairs than the first blocks
    exact = pair_sums(Q, X, np.ones(200), gamma=1.0, method="exact")
    est = pair_sums(Q, X, np.ones(200), gamma=1.0, method="sample", seed=0)
    assert est.method == "exact" and est.value == exact.value and est.half_width == 0.0


def test_auto_is_exact_below_the_switch_size():
    rng = np.random.default_rng(7)
    Q, X = rng.normal(size=(800, 5)), rng.normal(size=(1500, 5))
    losses = (rng.random(1500) < 0.4).astype(float)
    assert 800 * 1500 <= staleness.AUTO_EXACT_PAIRS
    assert psi_from_losses(Q, X, losses, 0.3, method="auto") == psi_from_losses(Q, X, losses, 0.3, method="exact")
    auto = pair_sums(Q, X, losses, 0.3, method="auto")
    assert auto.method == "exact" and auto.value == pair_sums(Q, X, losses, 0.3, method="exact").value
    batches = [(X[i * 500:(i + 1) * 500], (X[i * 500:(i + 1) * 500, 0] > 0.2 * i).astype(int)) for i in range(3)]

    class Cut:
        def __init__(self, c):
            self.c = c

        def predict(self, X):
            return (X[:, 0] > self.c).astype(int)

    models = [Cut(0.0), Cut(0.3), Cut(0.6)]
    a = costs.staleness_terms(batches, models, gamma=0.3, method="auto")
    e = costs.staleness_terms(batches, models, gamma=0.3, method="exact")
    np.testing.assert_array_equal(a.psi_bar, e.psi_bar)


def test_auto_samples_above_the_switch_size(monkeypatch):
    rng = np.random.default_rng(8)
    Q, X = rng.normal(size=(6000, 3)), rng.normal(size=(6000, 3))
    monkeypatch.setattr(staleness, "AUTO_EXACT_PAIRS", 10**6)   # a small switch: the same code path
    est = pair_sums(Q, X, np.ones(6000), gamma=0.05, method="auto", seed=0)
    exact = pair_sums(Q, X, np.ones(6000), gamma=0.05, method="exact")
    assert est.method == "sample" and abs(est.value / exact.value - 1) <= 0.01


def test_sampled_cost_matrix_terms_are_within_the_error(monkeypatch):
    rng = np.random.default_rng(9)
    batches = []
    for t in range(3):
        X = rng.normal(size=(6000, 3)) + 0.2 * t
        batches.append((X, (X[:, 0] + 0.3 * X[:, 1] > 0.15 * t).astype(int)))
    models = [type("Cut", (), {"predict": lambda self, X, c=c: (X[:, 0] > c).astype(int)})() for c in (-1.0, -0.5, 0.0)]
    exact = costs.staleness_terms(batches, models, gamma=0.05, method="exact")
    est = costs.staleness_terms(batches, models, gamma=0.05, method="sample", seed=1)
    upper = np.triu_indices(3, 1)
    for name in ("psi_now", "psi_then"):
        e, a = getattr(exact, name)[upper], getattr(est, name)[upper]
        np.testing.assert_array_less(np.abs(a - e), 0.01 * e + 1e-12)
    again = costs.staleness_terms(batches, models, gamma=0.05, method="sample", seed=1)
    np.testing.assert_array_equal(est.psi_bar, again.psi_bar)   # reproducible by seed


def test_sparse_one_hot_gives_the_same_psi_as_its_dense_copy():
    rng = np.random.default_rng(11)
    dense_X, dense_Q = _one_hot(rng, 3000), _one_hot(rng, 4000)
    y = (dense_X[:, 0] + dense_X[:, 41] > 0.5).astype(int)
    model = type("M", (), {"predict": lambda self, X: np.zeros(X.shape[0], dtype=int)})()
    for method in ("exact", "sample"):
        d = staleness.absolute_staleness(dense_Q, (dense_X, y), model, method=method, seed=3)
        s = staleness.absolute_staleness(sparse.csr_matrix(dense_Q), (sparse.csr_matrix(dense_X), y), model,
                                         method=method, seed=3)
        assert s == pytest.approx(d, rel=1e-10)
    d = staleness.relative_staleness(dense_Q, (dense_X, y), (dense_X[::-1], y), model, method="sample")
    s = staleness.relative_staleness(sparse.csr_matrix(dense_Q), (sparse.csr_matrix(dense_X), y),
                                     (sparse.csr_matrix(dense_X[::-1]), y), model, method="sample")
    assert s == pytest.approx(d, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("method", ["sample", "rff"])
def test_memory_stays_bounded_on_a_large_batch(method):
    import tracemalloc

    rng = np.random.default_rng(12)
    Q, X = rng.random((60_000, 8)), rng.random((40_000, 8))   # the dense kernel: 19.2 GB
    w = np.ones(40_000)
    tracemalloc.start()
    est = pair_sums(Q, X, w, gamma=2.0, method=method, seed=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert est.method == method and np.isfinite(est.value)
    dense_kernel = 60_000 * 40_000 * 8
    assert peak < 64 * 2**20 < dense_kernel / 100


def test_bad_method_and_error_are_refused_in_one_line():
    Q = np.zeros((2, 1))
    for call in (lambda: pair_sums(Q, Q, np.ones(2), 1.0, method="fast"),
                 lambda: psi_from_losses(Q, Q, np.ones(2), 1.0, method="fast"),
                 lambda: costs.staleness_terms([(Q, [0, 1]), (Q, [0, 1])], predictions=[[np.zeros(2)] * 2,
                                                                                        [np.zeros(2)]],
                                               method="fast")):
        with pytest.raises(ValueError, match=r"^psi method: unknown 'fast'; expected one of exact, sample, rff, auto$"):
            call()
    with pytest.raises(ValueError, match="rel_error"):
        pair_sums(Q, Q, np.ones(2), 1.0, method="sample", rel_error=0)
    with pytest.raises(ValueError, match="weights"):
        pair_sums(Q, Q, -np.ones(2), 1.0)



def test_cli_lists_the_same_methods_as_the_core():
    from cara_mlflow import names
    from cara_mlflow.cli import cli

    assert staleness.PSI_METHODS is names.PSI_METHODS
    (option,) = [p for p in cli.commands["step"].params if p.name == "psi_method"]
    assert tuple(option.type.choices) == staleness.PSI_METHODS
