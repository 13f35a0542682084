"""The rent-or-buy policy: its rule against a per-batch reference, its competitive bound against the
ORACLE (and a counterexample where the bound's assumption fails), its state, its cold start."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cara_mlflow.costs import strategy_cost
from cara_mlflow.errors import InputError
from cara_mlflow.oracle import solve
from cara_mlflow.policies import POLICIES, Observation, RentOrBuy, make_policy, policy_from_dict
from cara_mlflow.simulate import run_policy
from cara_mlflow.tuning import PolicyTuner
from tests.reference import strategy_cost_slow

# --------------------------------------------------------------------------- helpers


def rent_slow(C: np.ndarray) -> list[int]:
    """The rule batch by batch, straight from its definition: pay Ψ̄, retrain once the sum reaches κ_t."""
    strategy, tp, paid = [0], 0, 0.0
    for t in range(1, C.shape[0]):
        paid = paid + C[tp, t]
        if paid >= C[t, t]:
            tp, paid = t, 0.0
        strategy.append(tp)
    return strategy


def matrix(psi: np.ndarray, kappa) -> np.ndarray:
    """C from an upper triangle of Ψ̄ (C[t', t] = Ψ̄_{t,t'}) and κ on the diagonal."""
    T = psi.shape[0]
    C = np.full((T, T), np.inf)
    upper = np.triu_indices(T, 1)
    C[upper] = psi[upper]
    C[np.diag_indices(T)] = kappa
    return C


def age_matrix(f, kappa: float) -> np.ndarray:
    """Ψ̄_{t,t'} = f[t − t'] (f[0] unused): staleness that depends on the model's age only."""
    f = np.asarray(f, dtype=np.float64)
    T = f.size
    age = np.arange(T)[None, :] - np.arange(T)[:, None]
    return matrix(f[np.clip(age, 0, T - 1)], kappa)


def meets_assumption(C: np.ndarray) -> bool:
    """(A): constant κ, no Ψ̄ < 0 and, at every batch t, Ψ̄_{t,p} >= Ψ̄_{t,q} for p <= q < t."""
    T = C.shape[0]
    upper = np.triu(np.ones((T, T), bool), 1)
    column_ok = all(np.all(np.diff(C[:t, t]) <= 0) for t in range(1, T))  # rows 0..t-1: older first
    return bool(np.all(np.diag(C) == C[0, 0]) and np.all(C[upper] >= 0) and column_ok)


def ratio_and_phases(C: np.ndarray) -> tuple[float, float, float, int]:
    """(cost(rent), cost(ORACLE), their ratio, rent's trainings k + 1)."""
    _, strategies = RentOrBuy.offline_costs(C)
    rent = strategy_cost(C, strategies[0])
    oracle = solve(C).cost
    trainings = int(np.sum(strategies[0] == np.arange(C.shape[0])))
    return rent, oracle, rent / oracle, trainings


# --------------------------------------------------------------------------- (1) the rule vs a reference


@pytest.mark.parametrize("seed", range(40))
def test_offline_costs_equal_the_per_batch_reference(seed):
    rng = np.random.default_rng(seed)
    T = int(rng.integers(1, 16))
    # Quarters: Ψ̄ sums hit κ exactly (ties must retrain), Ψ̄ may be negative, κ varies per batch.
    psi = rng.integers(-2, 9, size=(T, T)) / 4.0
    kappa = rng.integers(1, 13, size=T) / 4.0
    C = matrix(psi, kappa)
    costs, strategies = RentOrBuy.offline_costs(C)
    expected = rent_slow(C)
    assert strategies.shape == (1, T) and strategies[0].tolist() == expected
    assert costs[0] == pytest.approx(strategy_cost_slow(C, expected), rel=1e-12, abs=1e-12)
    # decide(), batch by batch (obs.kappa = C[t, t] wins over the parameter), gives the same.
    assert run_policy(make_policy("rent", kappa=99.0), C)[0] == expected


def test_it_is_cara_ct_with_tau_cum_kappa_when_kappa_is_constant():
    rng = np.random.default_rng(5)
    C = matrix(rng.uniform(-0.5, 2.0, (30, 30)), 3.0)
    assert np.array_equal(RentOrBuy.offline_costs(C)[1], POLICIES["cara-ct"].offline_costs(C, tau_cum=3.0)[1])


# --------------------------------------------------------------------------- (2) the bound, under (A)


def assumption_matrices(n: int, seed: int = 0):
    """Random matrices meeting (A): age-only f >= 0 non-decreasing, and time-varying ones."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        T = int(rng.integers(2, 13))
        kappa = float(rng.uniform(0.2, 5.0))
        steps = rng.exponential(kappa / 4, T) * (rng.random(T) < 0.6)  # some flat stretches
        if i % 2 == 0:  # age only: f = cumulative sum of non-negative steps
            yield age_matrix(np.cumsum(steps), kappa)
        else:  # any (A) matrix: down each column, the older model is at least as stale
            psi = np.zeros((T, T))
            for t in range(1, T):
                inc = rng.exponential(kappa / 3, t) * (rng.random(t) < 0.5)
                psi[:t, t] = np.cumsum(inc[::-1])[::-1]  # row 0 the largest
            yield matrix(psi, kappa)


def adversarial_matrices():
    """Age-only f built to make rent pay: ε per batch then a jump just past κ, or κ exactly, or κ/L."""
    for kappa in (1.0, 2.5, 7.0):
        for T in (2, 3, 5, 8, 12):
            for L in range(1, T + 1):
                for eps in (0.0, kappa / (4 * L), kappa / L - 1e-9):
                    ages = np.arange(T)
                    below = np.where(ages < L, eps, 0.0)
                    for jump in (kappa - eps * (L - 1), np.nextafter(kappa, np.inf), 1.001 * kappa, 50 * kappa):
                        f = np.where(ages < L, below, np.maximum(eps, jump))
                        yield age_matrix(f, kappa)
                yield age_matrix(np.full(T, kappa / L), kappa)  # the tight case
                yield age_matrix(np.full(T, np.nextafter(kappa, 0.0) / L), kappa)


def test_rent_costs_less_than_twice_the_oracle_under_the_assumption():
    n = 0
    worst = 0.0
    for C in [*assumption_matrices(400), *adversarial_matrices()]:
        assert meets_assumption(C)
        kappa = C[0, 0]
        rent, oracle, ratio, trainings = ratio_and_phases(C)
        # The two steps of the proof, then the bound itself (float sums: a hair of slack).
        assert rent < 2 * kappa * trainings * (1 + 1e-12)
        assert oracle >= kappa * trainings * (1 - 1e-12)
        assert 1 - 1e-12 <= ratio <= 2 * (1 + 1e-12)
        worst = max(worst, ratio)
        n += 1
    assert n > 1000 and worst >= 1.5  # the adversarial ones get close: small T caps the ratio


def test_the_factor_two_is_tight():
    # Ψ̄ = κ/L at every age: rent pays κ(2 − 1/L) every L batches, the ORACLE never retrains.
    L, kappa, T = 8, 2.0, 800
    C = age_matrix(np.full(T, kappa / L), kappa)
    rent, oracle, ratio, trainings = ratio_and_phases(C)
    assert trainings == T // L and solve(C).n_retrains == 0
    assert ratio == pytest.approx((T // L) * (2 - 1 / L) / (T / L + 1 - 1 / L))
    assert 1.85 < ratio < 2


# --------------------------------------------------------------------------- (3) without (A): no bound


@pytest.mark.parametrize("T", [6, 20, 60])
def test_staleness_that_drops_with_age_breaks_the_bound(T):
    # Ψ̄ = κ at age 1 and 0 after: a newer model is staler than an older one, (A) fails.
    kappa = 3.0
    f = np.zeros(T)
    f[1] = kappa
    C = age_matrix(f, kappa)
    assert not meets_assumption(C)
    rent, oracle, ratio, _ = ratio_and_phases(C)
    assert rent == T * kappa          # rent retrains at every batch
    assert oracle == 2 * kappa        # the ORACLE keeps the first model: κ + κ + 0 + ...
    assert ratio == T / 2 and ratio > 2


# --------------------------------------------------------------------------- (4) state, decide() vs offline


def test_state_round_trips_and_decide_matches_the_offline_run():
    rng = np.random.default_rng(11)
    T = 40
    C = matrix(rng.uniform(-0.3, 1.5, (T, T)), rng.uniform(1.0, 3.0, T))
    offline = RentOrBuy.offline_costs(C)[1][0].tolist()

    def online(policy, start=1, tp=0, stop=T):
        strategy = []
        for t in range(start, stop):
            d = policy.decide(Observation(t=t, trained_on=tp, psi_bar=float(C[tp, t]), kappa=float(C[t, t])))
            if d.retrain:
                policy.reset(t)
                tp = t
            strategy.append(tp)
        return strategy, tp

    full, _ = online(make_policy("rent"))
    assert [0, *full] == offline and len(set(offline)) > 4
    for cut in (2, 7, 19, 33):
        head = make_policy("rent")
        prefix, tp = online(head, stop=cut)
        doc = json.loads(json.dumps(head.to_dict(), allow_nan=False))
        assert doc["policy"] == "rent" and set(doc["state"]) == {"paid", "n"}
        rebuilt = policy_from_dict(doc)
        assert isinstance(rebuilt, RentOrBuy) and rebuilt.get_state() == head.get_state()
        assert prefix + online(rebuilt, start=cut, tp=tp)[0] == full


def test_decision_reason_score_and_a_failed_retrain():
    p = RentOrBuy(kappa=3.0)
    d = p.decide(Observation(t=1, trained_on=0, psi_bar=1.2))
    assert (d.retrain, d.score, d.reason) == (False, 1.2, "paid Σ Ψ̄=1.2 < κ=3 since the last retrain")
    d = p.decide(Observation(t=2, trained_on=0, psi_bar=1.9))
    assert d.retrain and d.reason == "paid Σ Ψ̄=3.1 ≥ κ=3 since the last retrain"
    # The retrain did not land: no reset, the staleness paid carries on.
    d = p.decide(Observation(t=3, trained_on=0, psi_bar=0.5))
    assert d.retrain and d.score == pytest.approx(3.6) and p.get_state()["n"] == 3
    p.reset(3)
    assert p.get_state() == {"paid": 0.0, "n": 0}
    # obs.kappa wins over the parameter.
    assert not p.decide(Observation(t=4, trained_on=3, psi_bar=2.0, kappa=2.5)).retrain


@pytest.mark.parametrize("state, field", [
    ({"paid": 1.0}, "state.n"),
    ({"cum": 1.0, "n": 1}, "state.paid"),
    ({"paid": 1.0, "n": 1, "x": 0}, "state.x"),
    ({"paid": math.nan, "n": 1}, "state.paid"),
    ({"paid": 1.0, "n": -1}, "state.n"),
    ([], "state"),
])
def test_bad_state_is_named(state, field):
    with pytest.raises(InputError, match=field):
        RentOrBuy(kappa=1.0).set_state(state)


def test_bad_input_leaves_the_state_alone():
    p = RentOrBuy()
    with pytest.raises(InputError, match="the rent policy needs the retraining cost"):
        p.decide(Observation(t=1, trained_on=0, psi_bar=1.0))
    with pytest.raises(InputError, match="psi_bar"):
        p.decide(Observation(t=1, trained_on=0, psi_bar=math.nan, kappa=1.0))
    with pytest.raises(InputError, match="kappa"):
        p.decide(Observation(t=1, trained_on=0, psi_bar=1.0, kappa=0.0))
    assert p.get_state() == {"paid": 0.0, "n": 0}
    with pytest.raises(InputError, match="kappa"):
        RentOrBuy(kappa=-1.0)
    with pytest.raises(InputError, match="not a tuned parameter of the rent policy"):
        RentOrBuy.offline_costs(age_matrix(np.ones(3), 1.0), kappa=1.0)


# --------------------------------------------------------------------------- (5) cold start


def test_cold_start_from_batch_zero_without_offline_history():
    # No offline window, nothing tuned: the whole stream is the run, from its first batch.
    rng = np.random.default_rng(2)
    T = 60
    age = np.cumsum(rng.exponential(0.05, T))  # staleness growing with the model's age
    C = age_matrix(age, 1.5)
    strategy, decisions = run_policy(make_policy("rent"), C)
    assert strategy == RentOrBuy.offline_costs(C)[1][0].tolist() == rent_slow(C)
    assert decisions[0].reason.startswith("paid Σ Ψ̄=") and any(d.retrain for d in decisions)
    # Observations without κ: the parameter stands in (a step with no offline tuning at all).
    p = make_policy("rent", kappa=1.5)
    tp, online = 0, [0]
    for t in range(1, T):
        if p.decide(Observation(t=t, trained_on=tp, psi_bar=float(C[tp, t]))).retrain:
            p.reset(t)
            tp = t
        online.append(tp)
    assert online == strategy
    assert strategy_cost(C, strategy) < 2 * solve(C).cost


def test_the_tuner_reads_kappa_off_the_diagonal_and_tunes_nothing():
    C = age_matrix(np.linspace(0, 2, 10), 2.0)
    tuned = PolicyTuner("rent").fit(C)
    assert tuned.best_params_ == {"kappa": 2.0}
    assert tuned.best_strategy_ == rent_slow(C)
    assert PolicyTuner("rent").fit(matrix(np.ones((4, 4)), [1.0, 2.0, 1.0, 1.0])).best_params_ == {}
