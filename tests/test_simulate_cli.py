"""simulate() end to end, its metrics against slow references, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from cara_mlflow.cli import cli
from cara_mlflow.costs import strategy_cost
from cara_mlflow.policies import POLICIES
from cara_mlflow.simulate import make_model, simulate
from cara_mlflow.streams import make_stream

SMALL = dict(n_batches=14, batch_size=150, n_offline=5, model="lr")


@pytest.fixture(scope="module")
def covcon_d_kappa20():
    """The paper's default setting: CovCon-D, 100 batches of 1000, κ = 20, Random Forest, seed 0."""
    return simulate("covcon-d", kappa=20, seed=0)


def test_cara_t_beats_never_retrain_and_adwin_on_covcon_d(covcon_d_kappa20):
    r = covcon_d_kappa20
    assert r["cara-t"].strategy_cost < r["nr"].strategy_cost
    assert r["cara-t"].strategy_cost < r["adwin"].strategy_cost
    assert [p.policy for p in r.results] == list(POLICIES)


def test_report_is_internally_consistent(covcon_d_kappa20):
    r = covcon_d_kappa20
    C_on = r.online_matrix
    for p in r.results:
        local = [s - r.n_offline for s in p.strategy]
        assert p.strategy_cost == pytest.approx(strategy_cost(C_on, local))
        assert p.strategy_cost >= p.oracle_cost - 1e-9
        assert p.n_retrains == len(p.retrain_at) == p.decisions.count("retrain")
        assert len(p.decisions) == r.n_batches - r.n_offline - 1
        assert 0.0 <= p.query_accuracy <= 1.0
    assert r["oracle"].scpe == 0.0 and r["nr"].n_retrains == 0
    assert set(r.timings) == {"training", "predictions", "kernels", "policies"}


def test_query_accuracy_matches_a_slow_prequential_reference():
    stream = make_stream("covcon-s", n_batches=SMALL["n_batches"], batch_size=SMALL["batch_size"], seed=3)
    report = simulate(stream, kappa=2.0, policies=["cara-t", "adwin"], n_offline=SMALL["n_offline"],
                      model="lr", seed=3)
    for result in report.results:
        hits = []
        for k in range(1, len(result.strategy)):          # online batches after the first
            t = report.n_offline + k
            used = result.strategy[k - 1]                   # the model in use before the decision at t
            model = make_model("lr", stream[used].X, stream[used].y, seed=3)
            hits.append(np.mean(model.predict(stream[t].queries) == stream[t].query_labels))
        assert result.query_accuracy == pytest.approx(np.mean(hits))


def test_reproducible_by_seed():
    a = simulate("gauss-d", kappa=3.0, seed=1, **SMALL).to_json()
    b = simulate("gauss-d", kappa=3.0, seed=1, **SMALL).to_json()
    c = simulate("gauss-d", kappa=3.0, seed=2, **SMALL).to_json()
    assert a == b and a != c


@pytest.mark.parametrize("kwargs, match", [
    ({"kappa": 0.0}, "kappa"),
    ({"kappa": -5.0}, "kappa"),
    ({"kappa": float("nan")}, "kappa"),
    ({"kappa": 1.0, "policies": ["cara-x"]}, "unknown policy 'cara-x'"),
    ({"kappa": 1.0, "n_offline": 13}, "n_offline"),
    ({"kappa": 1.0, "model": "svm"}, "unknown model 'svm'"),
])
def test_simulate_rejects_bad_input(kwargs, match):
    args = {**SMALL, **kwargs}
    with pytest.raises(ValueError, match=match):
        simulate("covcon-d", **args)


def test_cli_json_output():
    result = CliRunner().invoke(cli, ["simulate", "--stream", "circle-s", "--kappa", "2", "--seed", "0",
                                      "--model", "lr", "--n-batches", "14", "--batch-size", "150",
                                      "--offline", "5", "--policies", "cara-t,nr,oracle", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["policy"] for r in rows] == ["cara-t", "nr", "oracle"]
    for row in rows:
        assert {"policy", "strategy_cost", "oracle_cost", "scpe", "query_accuracy", "n_retrains",
                "retrain_at", "params"} <= set(row)
    assert "tau" in rows[0]["params"] and rows[1]["n_retrains"] == 0


def test_cli_loss_is_used_and_absolute_equals_zero_one_on_binary_labels():
    """On 0/1 labels |y − ŷ| is I(y ≠ ŷ): the same table; the squared loss of a 0/1 label is too,
    so a loss that differs (0-1 counted twice) must change the costs."""
    base = ["simulate", "--stream", "gauss-d", "--kappa", "3", "--model", "lr", "--n-batches", "12",
            "--batch-size", "120", "--offline", "4", "--policies", "cara-t,oracle", "--json"]
    rows = {loss: json.loads(CliRunner().invoke(cli, [*base, "--loss", loss]).output)
            for loss in ("zero_one", "absolute", "squared")}
    assert rows["absolute"] == rows["zero_one"] == rows["squared"]
    doubled = CliRunner().invoke(cli, [*base, "--loss", "tests.reference:doubled_zero_one"])
    assert doubled.exit_code == 0, doubled.output
    assert json.loads(doubled.output)[1]["oracle_cost"] != rows["zero_one"][1]["oracle_cost"]


def test_cli_table_output():
    result = CliRunner().invoke(cli, ["simulate", "--kappa", "5", "--model", "lr", "--n-batches", "14",
                                      "--batch-size", "150", "--offline", "5"])
    assert result.exit_code == 0, result.output
    for name in POLICIES:
        assert name in result.output
    assert "SCPE" in result.output


@pytest.mark.parametrize("args, needle", [
    (["simulate", "--kappa", "-1"], "--kappa"),
    (["simulate", "--kappa", "1", "--policies", "cara-x"], "unknown policy cara-x"),
    (["simulate", "--kappa", "1", "--stream", "nope"], "--stream"),
    (["simulate", "--kappa", "1", "--offline", "99"], "n_offline"),
    (["simulate", "--kappa", "1", "--loss", "no_such_module:f"], "loss: cannot import module 'no_such_module'"),
])
def test_cli_bad_input_is_one_line_and_exit_1(args, needle):
    proc = subprocess.run([sys.executable, "-m", "cara_mlflow.cli", *args], capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert proc.stdout == ""


def test_cli_help_explains_kappa():
    result = CliRunner().invoke(cli, ["simulate", "--help"])
    assert result.exit_code == 0 and "Retraining cost" in result.output


def test_cli_names_come_from_the_registries():
    """Model, policy, Ψ-method and tuning-method names are defined once and feed every command's choices."""
    import click

    from cara_mlflow import names, staleness, train, tuning
    from cara_mlflow.cli import cli
    from cara_mlflow.simulate import MODELS
    from cara_mlflow.streams import STREAM_NAMES
    from cara_mlflow.validate import tunable_policies

    assert tuple(MODELS) == names.MODEL_NAMES and train.MODEL_NAMES is names.MODEL_NAMES
    assert staleness.PSI_METHODS is names.PSI_METHODS and tuning.TUNING_METHODS is names.TUNING_METHODS
    assert tunable_policies() == tuple(p for p in POLICIES if p != "oracle")
    choices = {(command, p.name): tuple(p.type.choices) for command, c in cli.commands.items()
               for p in c.params if isinstance(p.type, click.Choice)}
    expected = {"model": names.MODEL_NAMES, "psi_method": names.PSI_METHODS, "tuning_method": names.TUNING_METHODS}
    for (command, option), values in choices.items():
        if option in expected:
            assert values == expected[option], (command, option)
    assert choices[("tune", "policy")] == tunable_policies()
    assert {option for _, option in choices} >= set(expected)
    assert set(STREAM_NAMES) >= {"covcon-d", "gauss-s", "electricity"}


def test_quickstart_example_runs():
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "CARA-T online cost" in proc.stdout and "ORACLE" in proc.stdout


def test_prepare_once_evaluate_per_kappa_equals_simulate():
    from cara_mlflow.simulate import evaluate, prepare

    prepared = prepare("circle-d", seed=4, **SMALL)
    for kappa in (0.5, 3.0, 40.0):
        shared = evaluate(prepared, kappa=kappa).to_json()
        assert shared == simulate("circle-d", kappa=kappa, seed=4, **SMALL).to_json()
