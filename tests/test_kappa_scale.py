"""Where κ matters on an offline window: the ORACLE's κ range against brute force over every strategy."""

import itertools

import numpy as np
import pytest

from cara_mlflow.kappa_scale import kappa_advice, oracle_kappa_range


def fewest_retrains_slow(psi_bar, kappa):
    """Every set of retrain batches, its cost summed batch by batch; the fewest retrains among the cheapest."""
    T = psi_bar.shape[0]
    best = None
    for r in range(T):
        for retrains in itertools.combinations(range(1, T), r):
            cost, model = kappa, 0
            for t in range(1, T):
                if t in retrains:
                    cost, model = cost + kappa, t
                else:
                    cost += psi_bar[model, t]
            if best is None or cost < best[0] - 1e-9:
                best = (cost, r)
    return best[1]


@pytest.mark.parametrize("seed", range(6))
def test_oracle_kappa_range_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    T = 6
    # staleness growing with the model's age, with noise (and a few negative entries for odd seeds)
    age = np.subtract.outer(np.arange(T), np.arange(T)).T.astype(float)
    psi_bar = np.triu(np.clip(age, 0, None) * rng.uniform(0.2, 2.0) + rng.normal(0, 0.3 if seed % 2 else 0.05,
                                                                                   (T, T)), k=1)
    always, never = oracle_kappa_range(psi_bar)
    assert fewest_retrains_slow(psi_bar, never * (1 + 1e-6)) == 0
    assert fewest_retrains_slow(psi_bar, never * (1 - 1e-4)) > 0
    if always is None:
        assert fewest_retrains_slow(psi_bar, 1e-9) < T - 1
    else:
        assert fewest_retrains_slow(psi_bar, always * (1 - 1e-6)) == T - 1
        assert fewest_retrains_slow(psi_bar, always * (1 + 1e-4)) < T - 1
    # the count never increases with κ (the property the bisections rely on)
    counts = [fewest_retrains_slow(psi_bar, k) for k in np.geomspace(1e-3, 2 * never, 40)]
    assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_advice_warns_at_both_ends_and_is_quiet_in_between():
    T = 8
    psi_bar = np.triu(np.subtract.outer(np.arange(T), np.arange(T)).T.astype(float) * 0.5, k=1)
    always, never = oracle_kappa_range(psi_bar)
    assert 0 < always < never
    high = kappa_advice(psi_bar, never * 10, "cara-t", 0, 0)
    assert "warning: κ=" in high.notes[-1] and "never retrains there" in high.notes[-1]
    low = kappa_advice(psi_bar, always / 10, "cara-t", 7, 7)
    assert "warning: κ=" in low.notes[-1] and "every offline batch" in low.notes[-1]
    middle = kappa_advice(psi_bar, float(np.sqrt(always * never)), "cara-t", 2, 2)
    assert not any(n.startswith("warning") for n in middle.notes)
    assert middle.oracle_always == pytest.approx(always) and middle.oracle_never == pytest.approx(never)
    q5, median, q95 = middle.psi_bar_quantiles
    upper = psi_bar[np.triu_indices(T, 1)]
    assert median == pytest.approx(np.median(upper)) and q5 <= median <= q95


def test_a_window_where_retraining_never_helps_has_no_always():
    psi_bar = np.triu(-np.ones((5, 5)), k=1)   # every model does better on later batches than on its own
    always, never = oracle_kappa_range(psi_bar)
    assert always is None and fewest_retrains_slow(psi_bar, never * 1.001) == 0
