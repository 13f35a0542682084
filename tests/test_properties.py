"""Property-based checks (hypothesis) of the ORACLE, the tuner and the cost matrix contract.

Derandomised, so CI is deterministic; the example counts are large enough to matter.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from cara_mlflow.costs import strategy_cost, strategy_from_retrains, with_kappa
from cara_mlflow.oracle import solve
from cara_mlflow.tuning import PolicyTuner


@st.composite
def cost_matrices(draw, max_T=9):
    T = draw(st.integers(2, max_T))
    values = draw(st.lists(st.floats(-2.0, 10.0, allow_nan=False), min_size=T * T, max_size=T * T))
    kappa = draw(st.floats(0.01, 20.0))
    return with_kappa(np.array(values).reshape(T, T), kappa)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(C=cost_matrices(), retrains=st.sets(st.integers(1, 8)))
def test_oracle_is_never_beaten_by_any_strategy(C, retrains):
    T = C.shape[0]
    other = strategy_from_retrains([r for r in retrains if r < T], T)
    assert solve(C).cost <= strategy_cost(C, other) + 1e-9


@settings(max_examples=100, deadline=None, derandomize=True)
@given(C=cost_matrices())
def test_tuned_policies_are_bounded_by_oracle_and_never_retrain(C):
    oracle_cost = solve(C).cost
    never = strategy_cost(C, [0] * C.shape[0])
    for policy in ("cara-t", "cara-ct", "cara-p"):
        cost = PolicyTuner(policy).fit(C).best_cost_
        assert oracle_cost - 1e-9 <= cost
        if policy != "cara-p":           # a threshold can always express "never retrain"
            assert cost <= never + 1e-9


@settings(max_examples=50, deadline=None, derandomize=True)
@given(C=cost_matrices(), scale=st.floats(1.5, 100.0))
def test_raising_kappa_never_adds_oracle_retrains(C, scale):
    cheap = solve(C)
    dear = C.copy()
    np.fill_diagonal(dear, np.diag(C) * scale)
    assert solve(dear).n_retrains <= cheap.n_retrains
