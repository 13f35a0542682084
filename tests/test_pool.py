"""``tune --pool``: other models' offline windows in a threshold's tuning (issue 21), on a real MLflow store."""

import json

import numpy as np
import pytest

from cara_mlflow.policies import CaraCT
from cara_mlflow.policy_doc import PolicyDocument
from cara_mlflow.tracking import Registry, default_tracking_uri
from cara_mlflow.tuning import PolicyTuner

from .helpers import NAME, registry, snapshot

SIBLING = "demo-east"
LR = ("--model", "lr", "--n-estimators", "10")


def tune(cara, store, *args, name=NAME):
    return cara(store, "tune", "--name", name, "--kappa", "5", *LR, *args)


def tuned_matrix(store, name):
    """The active policy's document and its tuning run's cost matrix, read back through MLflow."""
    reg = Registry(default_tracking_uri(store), name)
    text, version, run_id = reg.active_policy_source()
    doc = PolicyDocument.from_json(text, name, version=version)
    local = reg.runs.download(run_id, "tuning/cost_matrix.npy", str(store.parent / f"m-{name}-{version}"))
    return doc, np.load(local), run_id


@pytest.fixture
def with_sibling(fresh, cara):
    """``fresh`` plus a second model of the same process, tuned on batches 5:10 at κ = 2."""
    result = cara(fresh, "tune", "--name", SIBLING, "--offline", "5:10", "--kappa", "2", "--policy", "cara-t", *LR)
    assert result.returncode == 0, result.stderr
    return fresh


def test_pooled_tune_minimises_the_summed_cost_and_says_so(with_sibling, cara):
    result = tune(cara, with_sibling, "--offline", "0:5", "--policy", "cara-t", "--pool", SIBLING)
    assert result.returncode == 0, result.stderr
    assert f"pooled history: the threshold minimises the offline cost summed over this window and {SIBLING} (v1, " \
           "5 batches)" in result.stdout and "(this window alone: " in result.stdout
    doc, C, run_id = tuned_matrix(with_sibling, NAME)
    sibling_doc, S, _ = tuned_matrix(with_sibling, SIBLING)
    assert sibling_doc.kappa == 2.0 and np.all(np.diag(S) == 2.0)
    # The sibling's Ψ̄ re-priced at this κ, then the exact pooled search: the same θ*, bit for bit.
    repriced = S.copy()
    np.fill_diagonal(repriced, 5.0)
    expected = PolicyTuner("cara-t").fit(C, pool=[repriced])
    assert doc.params == expected.best_params_
    assert doc.params != PolicyTuner("cara-t").fit(C).best_params_          # the sibling's window mattered
    assert doc.tuning["pool"] == [{"name": SIBLING, "policy_version": 1, "batches": 5}]
    assert doc.tuning["pooled_cost"] == pytest.approx(expected.best_cost_)
    assert doc.tuning["offline_cost"] == pytest.approx(expected.result_.details["own_cost"])
    assert doc.tuning["strategy"] == expected.best_strategy_
    run = registry(with_sibling).runs.get(run_id)
    assert run.params["pool"] == SIBLING and run.metrics["pooled_cost"] == pytest.approx(expected.best_cost_)
    status = cara(with_sibling, "status")
    assert status.returncode == 0 and f"; tuned on 0:5 pooled with {SIBLING} v1" in status.stdout
    # The document, pool and all, round-trips through its JSON.
    again = PolicyDocument.from_json(json.dumps(doc.to_dict()).encode(), "again", version=doc.version)
    assert again.tuning == doc.tuning and again.params == doc.params


def test_a_pool_changes_the_threshold_only_through_the_summed_cost(with_sibling, cara):
    # Without --pool the same window tunes as before: the pool is not kept by a later tune, which says so.
    assert tune(cara, with_sibling, "--offline", "0:5", "--policy", "cara-t", "--pool", SIBLING).returncode == 0
    again = tune(cara, with_sibling, "--offline", "0:5", "--policy", "cara-t")
    assert again.returncode == 0
    assert f"was tuned with --pool {SIBLING}; this tune pools nothing (give --pool again to keep it)" in again.stdout
    doc, C, _ = tuned_matrix(with_sibling, NAME)
    assert "pool" not in doc.tuning and doc.params == PolicyTuner("cara-t").fit(C).best_params_


def test_a_pooled_dual_annealing_tune_keeps_its_own_cost_apart(with_sibling, cara):
    result = tune(cara, with_sibling, "--offline", "0:5", "--policy", "cara-ct", "--pool", SIBLING,
                  "--tuning-method", "dual_annealing")
    assert result.returncode == 0, result.stderr
    doc, C, _ = tuned_matrix(with_sibling, NAME)
    _, S, _ = tuned_matrix(with_sibling, SIBLING)
    np.fill_diagonal(S, 5.0)

    def cost(W):             # CARA-CT at the annealed threshold on one window, from its first batch
        return float(CaraCT.offline_costs(W, tau_cum=doc.params["tau_cum"], kappa=doc.params["kappa"])[0][0])

    assert doc.tuning["method"] == "dual_annealing"
    assert doc.tuning["offline_cost"] == pytest.approx(cost(C))
    assert doc.tuning["pooled_cost"] == pytest.approx(cost(C) + cost(S))


@pytest.mark.parametrize("args, expected", [
    (["--policy", "cara-p", "--pool", SIBLING], "pool: pooled history tunes a threshold (cara-t, cara-ct), not the "
                                                "cara-p policy"),
    (["--pool", NAME], f"pool: {NAME} is the model being tuned"),
    (["--pool", f"{SIBLING},{SIBLING}"], "names a model twice"),
    (["--pool", "ghost"], "pool: ghost has no tuned policy ghost.policy@active"),
    (["--pool", SIBLING, "--psi-scale", "expected-loss"], f"pool: {SIBLING} measures Ψ̄ with loss zero_one, scale "
                                                          "paper; this tune with loss zero_one, scale expected-loss"),
])
def test_a_bad_pool_is_one_line_and_changes_nothing(with_sibling, cara, args, expected):
    before = snapshot(with_sibling)
    result = tune(cara, with_sibling, "--offline", "0:5", *args)
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert expected in line, line
    assert snapshot(with_sibling) == before


def test_a_pooled_model_without_a_matrix_is_refused(fresh, cara):
    rent = cara(fresh, "tune", "--name", SIBLING, "--offline", "5:6", "--kappa", "2", "--policy", "rent")
    assert rent.returncode == 0, rent.stderr
    before = snapshot(fresh)
    result = tune(cara, fresh, "--offline", "0:5", "--pool", SIBLING)
    assert result.returncode == 1
    assert f"pool: {SIBLING}.policy v1 (rent) has no offline cost matrix" in result.stderr
    assert snapshot(fresh) == before


def test_tune_on_all_history(fresh, cara):
    from cara_mlflow import lifecycle

    from .helpers import N_BATCHES, drop_batches_from

    assert tune(cara, fresh, "--offline", "all", "--policy", "cara-t").returncode == 0
    doc = lifecycle.active_policy(registry(fresh))
    assert doc.offline == (0, N_BATCHES) and len(doc.tuning["strategy"]) == N_BATCHES
    drop_batches_from(fresh, 1)
    before = snapshot(fresh)
    result = tune(cara, fresh, "--offline", "all", "--policy", "cara-t")
    assert result.returncode == 1
    assert "offline: all is 1 complete batch in" in result.stderr and "expected at least 2" in result.stderr
    assert snapshot(fresh) == before


def test_pool_warns_when_psi_seems_another_quantity():
    from types import SimpleNamespace

    from cara_mlflow.lifecycle.pool import PooledWindow, pool_warnings

    C = np.array([[5.0, 1.0, 2.0], [np.inf, 5.0, 1.5], [np.inf, np.inf, 5.0]])
    doc = SimpleNamespace(psi=SimpleNamespace(scale="paper", gamma=0.5))
    alike = PooledWindow("a", 1, "zero_one", "paper", C * 1.5, gamma=0.52, queries_per_batch=110)
    bigger = PooledWindow("b", 2, "zero_one", "paper", C, gamma=0.5, queries_per_batch=1000)
    older = PooledWindow("o", 2, "zero_one", "paper", C, gamma=0.5)          # tuned before the count was kept
    other_kernel = PooledWindow("c", 3, "zero_one", "paper", C, gamma=2.0, queries_per_batch=100)
    assert pool_warnings([alike, older], doc, 100) == []
    (size,) = pool_warnings([bigger], doc, 100)
    assert size.startswith("warning: pool: b's batches hold 1000 queries (median), this window's 100")
    (kernel,) = pool_warnings([other_kernel], doc, 100)
    assert "c's kernel γ is 2, this window's 0.5" in kernel
    assert pool_warnings([other_kernel], SimpleNamespace(psi=SimpleNamespace(scale="expected-loss", gamma=0.5)),
                         100) == []


def test_a_pooled_model_whose_artifacts_cannot_be_read_is_one_line(with_sibling, cara):
    import shutil

    from .helpers import client

    experiment = client(with_sibling).get_experiment_by_name(f"cara/{SIBLING}")
    folder = experiment.artifact_location.removeprefix("file://")
    shutil.move(folder, folder + ".away")                      # another host's store: not readable here
    try:
        before = snapshot(with_sibling)
        result = tune(cara, with_sibling, "--offline", "0:5", "--policy", "cara-t", "--pool", SIBLING)
        assert result.returncode == 1 and result.stdout == ""
        (line,) = result.stderr.strip().splitlines()
        assert f"pool: {SIBLING}.policy's artifacts cannot be read from here" in line
        assert "one tracking server that proxies artifacts" in line
        assert snapshot(with_sibling) == before
    finally:
        shutil.move(folder + ".away", folder)


def test_pool_without_a_shared_tracking_store_creates_nothing(tmp_path, cara):
    from click.testing import CliRunner

    from cara_mlflow.cli import cli

    store = tmp_path / "east"
    assert CliRunner().invoke(cli, ["make-stream", "covcon-d", "--out", str(store), "--n-batches", "4",
                                    "--batch-size", "100"]).exit_code == 0
    result = tune(cara, store, "--offline", "0:3", "--pool", SIBLING)
    assert result.returncode == 1
    assert "mlflow.db does not exist yet" in result.stderr and "set MLFLOW_TRACKING_URI" in result.stderr
    assert not (store / "mlflow.db").exists()
