"""Label delay (cara_mlflow.label_delay): both ORACLE solvers against brute force, the wait and provisional
runs on hand-checked matrices, L = 0 as today's simulate bit for bit, a real stream, the CLI and compare."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from cara_mlflow.cli import cli
from cara_mlflow.costs import check_strategy, strategy_cost, with_kappa
from cara_mlflow.errors import InputError
from cara_mlflow.label_delay import (
    PsiEstimates,
    delayed_oracle,
    delayed_strategy_cost,
    evaluate_delayed,
    run_provisional,
    run_waiting,
)
from cara_mlflow.oracle import solve
from cara_mlflow.policies import make_policy
from cara_mlflow.simulate import evaluate, prepare, run_policy

SMALL = dict(n_batches=16, batch_size=200, n_offline=6, model="lr")


def _slow_cost(C, landings: dict) -> float:
    """The cost of a delayed strategy, batch by batch: ``landings`` {batch: model it brings}."""
    model, total = 0, C[0, 0]
    for t in range(1, C.shape[0]):
        if t in landings:
            model = landings[t]
            total += C[t, t]
        total += 0.0 if model == t else C[model, t]
    return float(total)


def _random_matrix(rng, T: int) -> np.ndarray:
    """Ψ̄ growing with the model's age plus noise (some entries negative, as on ELECTRICITY), κ per batch."""
    age = np.subtract.outer(np.arange(T), np.arange(T)).T.astype(float)
    return with_kappa(age * rng.uniform(0.2, 1.5) + rng.normal(0, 0.8, (T, T)), rng.uniform(0.5, 4.0, T))


@pytest.mark.parametrize("seed", range(12))
def test_both_oracles_are_the_best_of_every_strategy(seed):
    rng = np.random.default_rng(seed)
    T = int(rng.integers(3, 9))
    C = _random_matrix(rng, T)
    # the standard ORACLE: every strategy s_t in {s_{t-1}, t}
    standard = min(strategy_cost(C, check_strategy(np.maximum.accumulate(np.array((0,) + m) * np.arange(T)), T))
                   for m in itertools.product((0, 1), repeat=T - 1))
    assert solve(C).cost == pytest.approx(standard)
    for L in range(0, T - 1):
        # the delayed one: every set of landing batches t > L, each bringing M_{t-L}
        best = min(_slow_cost(C, {t: t - L for t in subset})
                   for k in range(T) for subset in itertools.combinations(range(L + 1, T), k))
        result = delayed_oracle(C, L)
        assert result.cost == pytest.approx(best)
        landings = {t: t - L for t in result.retrain_at[1:]}
        assert result.cost == pytest.approx(_slow_cost(C, landings))
        assert result.strategy == [max([0] + [m for t, m in landings.items() if t <= b]) for b in range(T)]
    assert delayed_oracle(C, 0).cost == pytest.approx(solve(C).cost)


def test_delayed_strategy_cost_matches_the_slow_sum_and_refuses_a_model_from_the_future():
    C = _random_matrix(np.random.default_rng(1), 6)
    strategy, retrained = [0, 0, 0, 1, 1, 3], [True, False, False, True, False, True]
    assert delayed_strategy_cost(C, strategy, retrained) == pytest.approx(_slow_cost(C, {3: 1, 5: 3}))
    with pytest.raises(InputError, match="strategy"):
        delayed_strategy_cost(C, [0, 2, 2, 2, 2, 2], [True, True, False, False, False, False])


HAND = with_kappa(np.triu(np.ones((6, 6)), 1), 1.0)         # every model 1 staler per later batch, κ = 1


def test_wait_runs_the_policy_on_the_labelled_batches_and_lands_its_model_late():
    run = run_waiting(make_policy("cara-ct", tau_cum=2.5), HAND, label_delay=1, start=20)
    # t=1 nothing labelled; t=2..4 see batches 1..3 of M_0: ΣΨ̄ = 1, 2, 3 ≥ 2.5 → M_3 lands at t=4
    assert run.decisions == ["wait", "keep", "keep", "retrain", "keep"]
    assert (run.retrain_at, run.trained_on, run.strategy) == ([24], [23], [0, 0, 0, 0, 3, 3])
    assert run.cost == 1 + 1 + 1 + 1 + (1 + 1) + 1                  # κ_0, M_0 at 1..3, κ_4 + Ψ̄_{4,3}, Ψ̄_{5,3}


def test_provisional_defers_a_retrain_without_new_labels():
    C = with_kappa(np.triu(np.full((6, 6), 2.0), 1), 1.0)
    run = run_provisional(make_policy("cara-t", tau=1.0), C, label_delay=2, estimate=lambda s, t: float(C[s, t]))
    # t=1, 2: Retrain, but the latest labelled batch (≤ 0) is the one M_0 trained on: deferred
    assert run.decisions == ["deferred", "deferred", "retrain", "retrain", "retrain"]
    assert (run.n_deferred, run.n_catch_ups, run.trained_on) == (2, 0, [1, 2, 3])
    assert run.cost == 1 + 2 + 2 + 3 * (1 + 2)
    assert (run.psi_bias, run.psi_mae, run.n_in_sample) == (0.0, 0.0, 2)


def test_provisional_reconciles_the_state_and_catches_up():
    # the estimate sees no staleness; the realized Ψ̄ = 1 lands one batch late and CARA-CT's sum is replayed
    policy = make_policy("cara-ct", tau_cum=2.5)
    run = run_provisional(policy, HAND, label_delay=1, estimate=lambda s, t: 0.0)
    assert run.decisions == ["keep", "keep", "keep", "catch-up", "keep"]
    assert (run.n_catch_ups, run.trained_on, run.strategy) == (1, [3], [0, 0, 0, 0, 3, 3])
    assert run.cost == 1 + 3 + (1 + 1) + 1
    assert policy.get_state() == {"cum": 0.0, "n": 1}        # reset at the catch-up, then one estimate of 0
    assert run.psi_bias == pytest.approx(-1.0) and run.psi_mae == pytest.approx(1.0)


@pytest.mark.parametrize("name, params", [("cara-t", {"tau": 1.5}), ("cara-ct", {"tau_cum": 4.0}),
                                          ("rent", {"kappa": 2.0})])
def test_a_perfect_estimate_never_catches_up_and_no_run_beats_the_delayed_oracle(name, params):
    C = _random_matrix(np.random.default_rng(3), 30)
    for L in (1, 3):
        perfect = run_provisional(make_policy(name, **params), C, label_delay=L, estimate=lambda s, t: float(C[s, t]))
        wait = run_waiting(make_policy(name, **params), C, label_delay=L)
        assert perfect.n_catch_ups == 0
        for run in (perfect, wait):
            landings = dict(zip(run.retrain_at, run.trained_on))
            assert all(t - m == L for t, m in landings.items())          # every model trains on t − L
            assert run.cost == pytest.approx(_slow_cost(C, landings)) and run.cost >= delayed_oracle(C, L).cost - 1e-9


@pytest.fixture(scope="module")
def small():
    p = prepare("covcon-d", seed=0, keep_models=True, **SMALL)
    return p, evaluate(p, kappa=20, policies=["cara-t", "cara-ct", "cara-p", "rent", "nr", "adwin", "oracle"])


def test_zero_delay_is_todays_simulate_bit_for_bit(small):
    p, report = small
    plain = prepare("covcon-d", seed=0, **SMALL)
    assert plain.models is None and p.models is not None
    for key in ("psi_now", "psi_then"):
        assert np.array_equal(getattr(plain.online_terms, key), getattr(p.online_terms, key), equal_nan=True)
        assert np.array_equal(getattr(plain.offline_terms, key), getattr(p.offline_terms, key), equal_nan=True)
    d = evaluate_delayed(p, report, 0)
    assert [r.policy for r in d.results] == ["cara-t", "cara-ct", "cara-p", "rent", "nr", "adwin"]
    for r in d.results:
        today = report[r.policy]
        local = [s - p.n_offline for s in today.strategy]
        strategy, _ = run_policy(make_policy(r.policy, **r.params), report.online_matrix, start=p.n_offline,
                                 errors=lambda tp, t: p.errors[tp][t - tp])
        assert strategy == local
        for run in (r.wait, r.provisional):
            if run is None:                       # the detector: wait mode only
                continue
            assert run.strategy == local and run.cost == today.strategy_cost and run.scpe == today.scpe
            assert run.retrain_at == today.retrain_at and run.decisions == today.decisions
    assert d.delayed_oracle_cost == d.oracle_cost == report["oracle"].oracle_cost


def test_estimates_are_cached_and_fall_back_to_the_training_rows(small):
    p, _ = small
    est = PsiEstimates(p)
    assert est.reference(0, 2, 3) == 0 and est.reference(0, 5, 3) == 2 and est.reference(4, 5, 3) == 4
    first = est(0, 5, 3)
    assert est(0, 5, 3) == first and len(est._fits) == 1 and np.isfinite(first)
    with pytest.raises(InputError, match="keep_models=True"):
        PsiEstimates(prepare("covcon-d", seed=0, **SMALL))
    on_data = est.with_points("data")                  # the same fitted estimator, summed over the data rows
    assert np.isfinite(on_data(0, 5, 3)) and on_data(0, 5, 3) != first and len(est._fits) == 1
    with pytest.raises(InputError, match="points"):
        PsiEstimates(p, points="rows")


def test_a_real_stream_under_delay_names_it_in_json(small):
    p, report = small
    d = evaluate_delayed(p, report, 2)
    out = json.loads(d.to_json())
    assert out["label_delay"] == 2 and out["oracle_cost"] == report["oracle"].oracle_cost
    by_policy = {r["policy"]: r for r in out["policies"]}
    assert set(by_policy) == {"cara-t", "cara-ct", "cara-p", "rent", "nr", "adwin"}
    assert by_policy["adwin"]["provisional"] is None and by_policy["adwin"]["wait"]["label_delay"] == 2
    nr = by_policy["nr"]
    assert nr["wait"]["cost"] == nr["provisional"]["cost"] == report["nr"].strategy_cost
    for r in d.results:
        for run in (r.wait, r.provisional):
            if run is not None:
                assert run.cost >= d.delayed_oracle_cost - 1e-9
                if run.mode == "wait":            # nothing online labelled before batch 3
                    assert run.decisions[:2] == ["wait", "wait"] and run.decisions[2] != "wait"
    assert "catch-up" in d.table() and "delayed ORACLE" in d.table()


def test_simulate_cli_label_delay_json_and_table():
    args = ["simulate", "--stream", "gauss-d", "--kappa", "20", "--model", "lr", "--n-batches", "16",
            "--batch-size", "200", "--offline", "6", "--policies", "cara-t,cara-ct,nr", "--label-delay", "3"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["label_delay"] == 3 and [r["policy"] for r in out["policies"]] == ["cara-t", "cara-ct", "nr"]
    assert {"wait", "provisional"} <= set(out["policies"][0]) and out["policies"][0]["provisional"]["label_delay"] == 3
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0 and "label delay L=3" in table.output and "prov cost" in table.output


def test_simulate_cli_refuses_a_delay_longer_than_the_online_window():
    proc = subprocess.run([sys.executable, "-m", "cara_mlflow.cli", "simulate", "--kappa", "1", "--n-batches", "16",
                           "--offline", "6", "--label-delay", "9"], capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "--label-delay" in lines[0] and "give at most 8" in lines[0]


def test_compare_label_delay_logs_both_modes(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = CliRunner().invoke(cli, ["compare", "--stream", "covcon-d", "--kappa", "5,20", "--policies",
                                      "cara-t,nr,oracle", "--model", "lr", "--n-batches", "12", "--batch-size", "150",
                                      "--offline", "4", "--label-delay", "2", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output[result.output.index("["):])
    assert {r["label_delay"] for r in rows} == {2}
    assert all(r["wait.strategy_cost"] is not None for r in rows if r["policy"] != "oracle")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cara-compare/covcon-d")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert parent[0].data.params["label_delay"] == "2" and len(children) == 6
    for run in children:
        assert run.data.params["label_delay"] == "2" and run.data.tags["cara.label_delay"] == "2"
        if run.data.params["policy"] == "cara-t":
            row = next(r for r in rows if r["policy"] == "cara-t" and f"{r['kappa']:g}" == run.data.params["kappa"])
            assert run.data.metrics["provisional.strategy_cost"] == pytest.approx(row["provisional.strategy_cost"])
            assert {"wait.scpe", "provisional.n_catch_ups", "delayed_oracle_cost"} <= set(run.data.metrics)
