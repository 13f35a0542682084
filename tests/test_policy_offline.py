"""Each policy's offline evaluation against its own ``decide()``, run batch by batch.

The contract: for every policy whose decisions depend on the cost matrix alone,
``cls.offline_costs(C, **θ)`` gives, for each θ, the strategy that running ``decide()`` over
the window gives (as ``simulate.run_policy`` and the lifecycle do: Ψ̄ = C[s_{t-1}, t] of the model
in use, κ_t = C[t, t], a landed retrain resets the policy), and that strategy's cost (Eq. 6).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cara_mlflow.errors import InputError
from cara_mlflow.policies import POLICIES, CaraCT, CaraP, CaraT, make_policy
from cara_mlflow.simulate import run_policy
from cara_mlflow.tuning import PolicyTuner
from tests.reference import random_cost_matrix, strategy_cost_slow

COST_POLICIES = [name for name, cls in POLICIES.items() if cls.from_costs()]


def test_the_offline_paths_are_said_by_the_classes():
    assert COST_POLICIES == ["cara-t", "cara-ct", "cara-p", "markov", "rent", "nr"]
    assert [name for name, cls in POLICIES.items() if cls.needs_errors] == ["adwin", "ddm"]
    assert [name for name, cls in POLICIES.items() if cls.follows_oracle] == ["oracle"]


def contract_matrix(seed: int, T: int) -> np.ndarray:
    """A random cost matrix; on odd seeds a fifth of the Ψ̄ entries equal κ (MARKOV's ties)."""
    rng = np.random.default_rng(1000 * T + seed)
    C = random_cost_matrix(rng, T, negative=seed % 3 != 0)
    if seed % 2:
        rows, cols = np.triu_indices(T, 1)
        tie = rng.random(rows.size) < 0.2
        C[rows[tie], cols[tie]] = C[0, 0]
    return C


def slow_scores(C: np.ndarray, cumulative: bool) -> list[float]:
    """What CARA-T / CARA-CT compare their threshold with offline, added left to right as decide() does."""
    T = C.shape[0]
    scores = []
    for tp in range(T - 1):
        acc = 0.0
        for t in range(tp + 1, T):
            acc = acc + C[tp, t] if cumulative else C[tp, t]
            scores.append(acc)
    return sorted(set(scores))


def thetas(name: str, C: np.ndarray, rng) -> dict[str, np.ndarray]:
    """θ for the policy: thresholds at, just below and just above every score, random ones, extremes."""
    T = C.shape[0]
    if name in ("cara-t", "cara-ct"):
        v = np.array(slow_scores(C, cumulative=name == "cara-ct"))
        lo, hi = (v.min() - 1, v.max() + 1) if v.size else (-1.0, 4.0)
        taus = np.concatenate([v, np.nextafter(v, -np.inf), np.nextafter(v, np.inf),
                               rng.uniform(lo, hi, 5), [-1e3, 1e3, C[0, 0]]])
        return {POLICIES[name].tunable[0]: taus}
    if name == "cara-p":
        pairs = np.array([(phi, a) for phi in range(1, T + 2) for a in range(phi)])
        return {"phi": pairs[:, 0], "offset": pairs[:, 1]}
    return {}


@pytest.mark.parametrize("T", range(1, 13))
@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("name", COST_POLICIES)
def test_offline_costs_equal_deciding_batch_by_batch(name, seed, T):
    cls = POLICIES[name]
    C = contract_matrix(seed, T)
    start = 5 * (seed % 3)  # CARA-P's t is absolute
    theta = thetas(name, C, np.random.default_rng(seed))
    costs, strategies = cls.offline_costs(C, start=start, **theta)
    m = len(next(iter(theta.values()))) if theta else 1
    assert costs.shape == (m,) and strategies.shape == (m, T) and strategies.dtype == np.int64
    for k in range(m):
        policy = make_policy(name, **{n: v[k].item() for n, v in theta.items()})
        strategy, _ = run_policy(policy, C, start=start)
        assert strategies[k].tolist() == strategy, (name, {n: v[k] for n, v in theta.items()})
        assert costs[k] == pytest.approx(strategy_cost_slow(C, strategy), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("T", range(1, 13))
@pytest.mark.parametrize("cls", [CaraT, CaraCT])
def test_offline_thresholds_are_the_scores_compared(cls, T):
    C = contract_matrix(T, T)
    assert cls.offline_thresholds(C).tolist() == slow_scores(C, cumulative=cls is CaraCT)


@pytest.mark.parametrize("T", range(1, 8))
def test_cara_p_grid_is_every_period_and_offset_longest_first(T):
    grid = CaraP.offline_grid(np.eye(T))
    assert list(zip(grid["phi"].tolist(), grid["offset"].tolist())) == [
        (phi, a) for phi in range(T, 0, -1) for a in range(phi)]


def test_offline_costs_broadcasts_and_fills_defaults():
    C = contract_matrix(0, 6)
    by_list = CaraP.offline_costs(C, phi=[3, 3], offset=[0, 0])
    by_default = CaraP.offline_costs(C, phi=[3, 3])
    by_scalar = CaraP.offline_costs(C, phi=3, offset=[0, 0])
    for got in (by_default, by_scalar):
        assert np.array_equal(got[0], by_list[0]) and np.array_equal(got[1], by_list[1])
    assert CaraT.offline_costs(C, tau=2.0)[1].shape == (1, 6)
    assert CaraT.offline_costs(C, tau=[])[1].shape == (0, 6)


@pytest.mark.parametrize("name, kwargs, match", [
    ("cara-t", {}, "tau: the cara-t policy needs this parameter"),
    ("cara-t", {"tau_cum": 1.0}, "tau_cum: not a tuned parameter of the cara-t policy: expected tau"),
    ("markov", {"kappa": 1.0}, "kappa: not a tuned parameter of the markov policy: expected none"),
    ("cara-t", {"tau": [1.0, math.nan]}, "tau: expected a finite number"),
    ("cara-t", {"tau": math.inf}, "tau: expected a finite number"),
    ("cara-t", {"tau": [[1.0]]}, "tau: expected a number or a 1-D sequence"),
    ("cara-t", {"tau": ["a"]}, "tau: expected a number or a 1-D sequence"),
    ("cara-t", {"tau": True}, "tau: expected a number or a 1-D sequence"),
    ("cara-p", {"phi": [0]}, r"phi: expected an integer >= 1"),
    ("cara-p", {"phi": [2, 3], "offset": [2, 0]}, r"offset: expected an integer in \[0, 1\]"),
    ("cara-p", {"phi": [2.5]}, "phi: expected an integer"),
    ("cara-p", {"phi": [2, 3], "offset": [0, 0, 0]}, "theta: expected values of one length"),
    ("cara-p", {"phi": 2, "start": -1}, "start: expected an integer >= 0"),
    ("adwin", {}, "the adwin policy needs the model's per-sample errors"),
    ("ddm", {}, "the ddm policy needs the model's per-sample errors"),
    ("oracle", {}, "the oracle policy follows the ORACLE's retrain batches"),
])
def test_offline_costs_rejects_bad_input(name, kwargs, match):
    with pytest.raises(InputError, match=match):
        POLICIES[name].offline_costs(contract_matrix(0, 4), **kwargs)


def test_offline_costs_checks_the_cost_matrix():
    with pytest.raises(InputError, match="below the diagonal"):
        CaraT.offline_costs(np.ones((3, 3)), tau=1.0)


def test_the_tuner_dispatches_through_the_class_not_the_name(monkeypatch):
    """A policy registered under a new name is tuned by what its class says."""

    class Threshold(CaraCT):
        name = "my-threshold"

    class Periodic(CaraP):
        name = "my-periodic"

    monkeypatch.setitem(POLICIES, Threshold.name, Threshold)
    monkeypatch.setitem(POLICIES, Periodic.name, Periodic)
    C = contract_matrix(3, 9)
    for new, old in ((Threshold.name, "cara-ct"), (Periodic.name, "cara-p")):
        for method in ("exact", "dual_annealing"):
            got = PolicyTuner(new, method=method, start=4).fit(C).result_
            want = PolicyTuner(old, method=method, start=4).fit(C).result_
            assert (got.params, got.cost, got.strategy, got.method, got.interval, got.details) == (
                want.params, want.cost, want.strategy, want.method, want.interval, want.details)
