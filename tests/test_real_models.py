"""A real team's data and models: chosen and categorical features, string labels, DataFrame
Pipelines (the default trainer's and a user's project), regression and custom losses, a kernel
that does not depend on units, and a project URI that works from any directory.

The data is generated here (a small "shop" stream): ``day`` (text), ``temp`` (numbers),
``holiday`` (booleans), an ``id`` and a timestamp ``ts`` that are not features, and a target that
is either a string label or a float price.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cara_mlflow import lifecycle
from cara_mlflow.features import FeatureSpace
from cara_mlflow.losses import squared_loss
from cara_mlflow.staleness import relative_staleness
from cara_mlflow.store import BatchStore
from cara_mlflow.tracking import default_tracking_uri
from cara_mlflow.tracking.connection import mlflow_scope

from .helpers import NAME, cli_env, client, load_production, ok, one_line_error, registry, run_cli, snapshot

pytestmark = pytest.mark.usefixtures("mlflow_globals_untouched")

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_PROJECT = REPO / "examples" / "custom-project"
DAYS = np.array(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])


def shop_batch(rng, n: int, *, task: str, changed: bool, temp_scale: float = 1.0) -> pd.DataFrame:
    """One batch: the target depends on temp and the weekend; ``changed`` flips that dependence."""
    day = rng.choice(DAYS, n)
    temp = rng.normal(20.0, 5.0, n)
    holiday = rng.random(n) < 0.1
    weekend = np.isin(day, ["Sat", "Sun"]) | holiday
    sign = -1.0 if changed else 1.0
    signal = sign * (temp - 20.0) + 6.0 * weekend
    frame = pd.DataFrame({"id": np.arange(n), "ts": pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(n), "s"),
                          "day": day, "temp": temp * temp_scale, "holiday": holiday})
    if task == "classification":      # three classes
        noisy = signal + rng.normal(0, 1.0, n)
        frame["label"] = np.select([noisy > 3.0, noisy < -5.0], ["busy", "closed"], "quiet")
    else:
        frame["label"] = 50.0 + 3.0 * signal + rng.normal(0, 1.0, n)
    return frame


def write_shop(root: Path, *, task: str = "classification", n_batches: int = 10, size: int = 300,
               change_at: int | None = None, temp_scale: float = 1.0, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    store = BatchStore(root)
    for b in range(n_batches):
        changed = change_at is not None and b >= change_at
        frame = shop_batch(rng, size, task=task, changed=changed, temp_scale=temp_scale)
        store.write(b, frame.assign(id=frame["id"] + b * size))      # ids unique across batches
    return root


def status_json(store: Path) -> dict:
    return json.loads(ok(run_cli(store, "status", "--json")).stdout)


def decisions(store: Path) -> list[tuple[int, str]]:
    return [(r["batch"], r["decision"]) for r in json.loads(ok(run_cli(store, "history", "--json")).stdout)]


# ------------------------------------------------------------------- text features, string labels


def test_string_categoricals_and_labels_end_to_end(tmp_path):
    store = write_shop(tmp_path / "store", change_at=7)
    tuned = ok(run_cli(store, "tune", "--offline", "0:4", "--kappa", "5", "--exclude", "id,ts", "--model", "rf",
                       "--n-estimators", "20"))
    assert "task: classification, inferred from the target 'label'" in tuned.stdout
    ok(run_cli(store, "init", "--batch", "4"))
    ok(run_cli(store, "step", "--all"))
    policy = status_json(store)["policy"]
    assert policy["features"] == ["day", "temp", "holiday"]
    assert policy["feature_kinds"] == {"day": "categorical", "temp": "numeric", "holiday": "boolean"}
    assert (policy["task"], policy["loss"]) == ("classification", "zero_one")
    assert [b for b, _ in decisions(store)] == list(range(4, 10))

    import mlflow.pyfunc

    trained_on = status_json(store)["production"]["trained_on"]
    data = pd.read_parquet(store / "batches" / str(trained_on) / "data.parquet")
    shuffled = data[["holiday", "temp", "day", "id"]]           # any order, extra columns ignored
    with mlflow_scope(default_tracking_uri(store)):             # as a serving process loads it
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@production", dst_path=str(tmp_path))
    predicted = np.asarray(model.predict(shuffled))
    assert set(predicted) == {"busy", "quiet", "closed"}        # the original labels, all three classes
    assert np.mean(predicted == data["label"].to_numpy()) > 0.7


def test_features_option_and_a_later_batch_without_a_feature(tmp_path):
    store = write_shop(tmp_path / "store", n_batches=7)
    ok(run_cli(store, "tune", "--offline", "0:4", "--kappa", "5", "--features", "temp,day", "--n-estimators", "10"))
    ok(run_cli(store, "init", "--batch", "4"))
    assert status_json(store)["policy"]["features"] == ["temp", "day"]
    # batch 5 gains a column (ignored) and loses none; batch 6 lacks `day`
    five = pd.read_parquet(store / "batches" / "5" / "data.parquet").assign(extra=1.0)
    five.to_parquet(store / "batches" / "5" / "data.parquet", index=False)
    six = pd.read_parquet(store / "batches" / "6" / "data.parquet").drop(columns="day")
    six.to_parquet(store / "batches" / "6" / "data.parquet", index=False)
    ok(run_cli(store, "step"))
    line = one_line_error(run_cli(store, "step"))
    assert "batch 6" in line and "'day'" in line
    assert status_json(store)["last_batch"] == 5


def test_a_timestamp_column_must_be_excluded_and_the_message_says_how(tmp_path):
    store = write_shop(tmp_path / "store", n_batches=4)
    line = one_line_error(run_cli(store, "tune", "--offline", "0:3", "--kappa", "5"))
    assert "'ts'" in line and "--exclude ts" in line
    tuned = ok(run_cli(store, "tune", "--offline", "0:3", "--kappa", "5", "--exclude", "ts", "--n-estimators", "5"))
    assert ("warning: feature 'id' has a different value on every row of the offline window: an identifier? "
            "leave it out with --exclude id") in tuned.stderr
    line = one_line_error(run_cli(store, "tune", "--offline", "0:3", "--kappa", "5", "--features", "temp,nope"))
    assert "--features: column 'nope' is not in the batch" in line
    assert [v.version for v in registry(store).policy_versions()] == [1]     # only the good tune registered


# ----------------------------------------------------------------------------- regression and losses


def slow_psi(queries: np.ndarray, X: np.ndarray, losses: np.ndarray, gamma: float) -> float:
    """Ψ = (1/|D|) Σ_x ℓ(x) Σ_q exp(-γ||q − x||²), one pair at a time."""
    total = 0.0
    for x, loss in zip(X, losses):
        for q in queries:
            total += loss * np.exp(-gamma * np.sum((q - x) ** 2))
    return total / len(X)


def test_squared_loss_psi_bar_matches_a_per_point_reference():
    rng = np.random.default_rng(3)
    X_now, X_then, Q = rng.normal(size=(30, 3)), rng.normal(size=(25, 3)), rng.normal(size=(12, 3))
    y_now, y_then = rng.normal(size=30), rng.normal(size=25)

    class Linear:
        def predict(self, X):
            return X @ np.array([1.0, -0.5, 0.25])

    model = Linear()
    expected = (slow_psi(Q, X_now, squared_loss(y_now, model.predict(X_now)), 0.7)
                - slow_psi(Q, X_then, squared_loss(y_then, model.predict(X_then)), 0.7))
    got = relative_staleness(Q, (X_now, y_now), (X_then, y_then), model, gamma=0.7, loss="squared")
    assert got == pytest.approx(expected, rel=1e-10)


def test_regression_with_the_default_trainer_sees_an_abrupt_change(tmp_path):
    store = write_shop(tmp_path / "store", task="regression", n_batches=12, change_at=9)
    tuned = ok(run_cli(store, "tune", "--offline", "0:4", "--kappa", "50", "--exclude", "id,ts", "--model", "hgb",
                       "--n-estimators", "30"))
    assert "task: regression, inferred from the target 'label'" in tuned.stdout
    ok(run_cli(store, "init", "--batch", "4"))
    ok(run_cli(store, "step", "--all", "--no-gate"))
    policy = status_json(store)["policy"]
    assert (policy["task"], policy["loss"]) == ("regression", "squared")
    reg = registry(store)
    psi = {int(r.data.tags["cara.batch"]): r.data.metrics["psi_bar"]
           for r in client(store).search_runs([reg.runs.experiment_id()], "tags.`cara.run_type` = 'batch'")
           if "psi_bar" in r.data.metrics}
    before = [abs(psi[b]) for b in range(5, 9)]
    assert psi[9] >= 5 * np.median(before), psi

    # the step's Ψ_now on batch 5 (model v1, trained on batch 4) is the per-point reference in the
    # policy's kernel space
    doc = lifecycle.active_policy(reg)
    batch = BatchStore(store).read(5, target="label", space=doc.space)
    run = next(r for r in client(store).search_runs([reg.runs.experiment_id()], "tags.`cara.run_type` = 'batch'")
               if r.data.tags["cara.batch"] == "5")
    v1 = reg.load_model(reg.version(1), str(tmp_path / "v1"))
    losses = squared_loss(batch.y, v1.predict(batch.frame))
    assert run.data.metrics["psi_now"] == pytest.approx(slow_psi(batch.queries, batch.X, losses, doc.psi.gamma),
                                                        rel=1e-9)


def test_a_custom_regressor_and_a_custom_loss_function_stored_by_name(tmp_path):
    store = write_shop(tmp_path / "store", task="regression", n_batches=7)
    module = tmp_path / "lossmod"
    module.mkdir()
    (module / "shop_losses.py").write_text(
        "import numpy as np\n\n"
        "def capped(y_true, y_pred):\n"
        "    return np.minimum(np.abs(np.asarray(y_true, float) - np.asarray(y_pred, float)), 5.0)\n")
    env = {"PYTHONPATH": str(module)}
    line = one_line_error(run_cli(store, "tune", "--offline", "0:4", "--kappa", "5", "--exclude", "id,ts",
                                  "--loss", "no_such_module:f", **env))
    assert "loss: cannot import module 'no_such_module'" in line
    # a custom regressor too: the example project fits Ridge on a float target
    ok(run_cli(store, "tune", "--offline", "0:4", "--kappa", "5", "--exclude", "id,ts", "--loss", "shop_losses:capped",
               "--project-uri", str(EXAMPLE_PROJECT), **env))
    ok(run_cli(store, "init", "--batch", "4", **env))
    ok(run_cli(store, "step", "--all", "--force-retrain", **env))
    policy = status_json(store)["policy"]
    assert (policy["loss"], policy["task"]) == ("shop_losses:capped", "regression")
    assert [b for b, _ in decisions(store)] == [4, 5, 6] and ("5", "retrain") in [(str(b), d) for b, d in
                                                                   decisions(store)]
    reg = registry(store)
    info = reg.runs.load_json(reg.version(1).tags["cara.training_run"], "cara/training.json")
    assert info["loss"] == "shop_losses:capped"
    with_model = reg.load_model(reg.version(1), str(tmp_path / "v1"))
    doc = lifecycle.active_policy(reg)
    batch = BatchStore(store).read(4, target="label", space=doc.space)
    import importlib
    import sys as _sys

    _sys.path.insert(0, str(module))
    try:
        capped = importlib.import_module("shop_losses").capped
    finally:
        _sys.path.remove(str(module))
    losses = capped(batch.y, with_model.predict(batch.frame))
    rows = pd.read_parquet(reg.runs.download(reg.version(1).tags["cara.training_run"], "cara/losses.parquet",
                                             str(tmp_path)))
    assert rows["row"].tolist() == np.flatnonzero(losses).tolist()
    assert rows["loss"].to_numpy() == pytest.approx(losses[losses > 0])


# -------------------------------------------------------------------------------- units of the kernel


def test_one_feature_times_ten_thousand_changes_no_decision(tmp_path):
    runs = {}
    for scale in (1.0, 1e4):
        store = write_shop(tmp_path / f"store-{scale:g}", n_batches=12, change_at=8, temp_scale=scale)
        ok(run_cli(store, "tune", "--offline", "0:4", "--kappa", "3", "--exclude", "id,ts", "--n-estimators", "20"))
        ok(run_cli(store, "init", "--batch", "4"))
        ok(run_cli(store, "step", "--all"))
        runs[scale] = (decisions(store), lifecycle.active_policy(registry(store)))
    assert runs[1.0][0] == runs[1e4][0]
    assert runs[1.0][1].psi.gamma == pytest.approx(runs[1e4][1].psi.gamma)
    assert any(d == "retrain" for _, d in runs[1.0][0])


def test_tune_warns_when_the_kernel_is_degenerate(tmp_path):
    store = tmp_path / "store"
    rng = np.random.default_rng(0)
    for b in range(4):      # one constant feature: every point is the same point to the kernel
        BatchStore(store).write(b, pd.DataFrame({"x": np.ones(100), "label": rng.integers(0, 2, 100)}))
    tuned = ok(run_cli(store, "tune", "--offline", "0:3", "--kappa", "5", "--n-estimators", "5"))
    assert "warning: the kernel is degenerate on the offline window" in tuned.stderr
    assert "≈ 1" in tuned.stderr


def test_tune_says_where_kappa_matters_and_warns_outside(tmp_path):
    """`--kappa 4000` used to mean "never retrain" without a word (issue 16, choosing κ)."""
    store = write_shop(tmp_path / "store", n_batches=8, change_at=4)
    tuned = ok(run_cli(store, "tune", "--offline", "0:8", "--kappa", "3", "--exclude", "id,ts", "--n-estimators", "10"))
    assert "offline Ψ̄ of a model on a later batch: median" in tuned.stdout
    assert "the ORACLE retrains at every offline batch for κ ≤" in tuned.stdout or "never retrains" in tuned.stdout
    doc = lifecycle.active_policy(registry(store))
    never = doc.tuning["kappa_oracle_never"]
    assert never > 0 and doc.tuning["oracle_retrains"] >= 0
    high = ok(run_cli(store, "tune", "--offline", "0:8", "--kappa", f"{10 * never:g}", "--exclude", "id,ts",
                      "--n-estimators", "10"))
    assert "warning: κ=" in high.stderr and "the ORACLE never retrains there" in high.stderr
    assert lifecycle.active_policy(registry(store)).tuning["oracle_retrains"] == 0


def test_space_of_the_policy_is_the_documented_one(tmp_path):
    store = write_shop(tmp_path / "store", n_batches=5)
    ok(run_cli(store, "tune", "--offline", "0:4", "--kappa", "5", "--exclude", "id,ts", "--n-estimators", "5"))
    doc = lifecycle.active_policy(registry(store))
    frames = pd.concat([pd.read_parquet(store / "batches" / str(b) / "data.parquet") for b in range(4)])
    temp = doc.space.to_dict()["features"][1]
    assert temp["center"] == pytest.approx(frames["temp"].mean())
    assert temp["scale"] == pytest.approx(frames["temp"].std(ddof=0))
    assert doc.space.to_dict()["features"][0]["categories"] == sorted(DAYS)
    X = doc.space.transform(frames.iloc[:3])
    for i, (_, row) in enumerate(frames.iloc[:3].iterrows()):       # one row at a time, by the README's rule
        day = [np.sqrt(0.5) if row["day"] == d else 0.0 for d in sorted(DAYS)]
        assert doc.space.features == ("day", "temp", "holiday")       # the batch's column order
        expected = [*day, (row["temp"] - temp["center"]) / temp["scale"],
                    (float(row["holiday"]) - doc.space.center[2]) / doc.space.scale[2]]
        assert X[i] == pytest.approx(expected)
    assert isinstance(FeatureSpace.from_dict(doc.space.to_dict()), FeatureSpace)


# ----------------------------------------------------------------------- a user's project, any directory


def test_the_example_pipeline_project_from_a_relative_uri_and_another_directory(tmp_path):
    store = write_shop(tmp_path / "store", n_batches=9, change_at=6)
    env = cli_env(store)
    tune = subprocess.run([sys.executable, "-m", "cara_mlflow.cli", "tune", "--offline", "0:3", "--kappa", "2",
                           "--exclude", "id,ts", "--project-uri", "examples/custom-project"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    ok(tune)
    doc = lifecycle.active_policy(registry(store))
    assert doc.project_uri == str(EXAMPLE_PROJECT)                     # stored absolute
    elsewhere = tmp_path / "cron-home"
    elsewhere.mkdir()
    for args in (["init", "--batch", "3"], ["step", "--all"], ["step", "--force-retrain"]):
        ok(subprocess.run([sys.executable, "-m", "cara_mlflow.cli", *args], env=env, cwd=elsewhere,
                          capture_output=True, text=True, timeout=600))
    reg = registry(store)
    trained = [v for v in reg.versions() if v.trained_on is not None]
    assert len(trained) >= 2                                          # init and at least one retrain
    model = load_production(store, tmp_path / "model")
    data = pd.read_parquet(store / "batches" / "8" / "data.parquet")
    assert set(model.predict(data[["temp", "holiday", "day"]])) <= {"busy", "quiet", "closed"}
    # the project saw only data/target/features: it declares nothing else
    run = reg.runs.get(trained[0].tags["cara.training_run"])
    assert set(run.params) == {"data", "target", "features"}


def test_a_missing_project_is_refused_at_tune(tmp_path):
    store = write_shop(tmp_path / "store", n_batches=4)
    line = one_line_error(run_cli(store, "tune", "--offline", "0:3", "--kappa", "5", "--exclude", "id,ts",
                                  "--project-uri", str(tmp_path / "nowhere")))
    assert f"--project-uri: no directory '{tmp_path / 'nowhere'}'" in line
    (tmp_path / "empty").mkdir()
    line = one_line_error(run_cli(store, "tune", "--offline", "0:3", "--kappa", "5", "--exclude", "id,ts",
                                  "--project-uri", str(tmp_path / "empty")))
    assert "--project-uri: no MLproject file in" in line
    assert os.path.exists(store)


@pytest.mark.parametrize("command", [["step", "--force-retrain"], ["init", "--batch", "6"]])
def test_a_missing_project_is_refused_by_step_and_init_before_anything_is_written(fresh, tmp_path, command):
    (tmp_path / "empty").mkdir()
    before = snapshot(fresh)
    line = one_line_error(run_cli(fresh, *command, "--project-uri", str(tmp_path / "empty")))
    assert "--project-uri: no MLproject file in" in line
    assert snapshot(fresh) == before


# ------------------------------------------------------------------------ compare on a team's store


def test_compare_on_a_store_with_text_features_and_a_float_target(tmp_path):
    store = write_shop(tmp_path / "store", task="regression", n_batches=8, change_at=6)
    args = ["compare", "--store", str(store), "--offline", "0:4", "--exclude", "id,ts", "--kappa", "200",
            "--model", "lr", "--policies", "cara-t,nr,oracle", "--json"]
    squared = ok(run_cli(store, *args))
    assert "task: regression, inferred from the target" in squared.stderr
    rows = {r["policy"]: r for r in json.loads(squared.stdout)}
    assert rows["oracle"]["n_retrains"] >= 1 and rows["nr"]["n_retrains"] == 0   # the change at batch 6 pays
    assert rows["nr"]["query_accuracy"] is None                   # no accuracy for a regressor: null, strict JSON
    absolute = {r["policy"]: r for r in json.loads(ok(run_cli(store, *args, "--loss", "absolute")).stdout)}
    assert absolute["nr"]["strategy_cost"] < rows["nr"]["strategy_cost"]          # errors of several units
    line = one_line_error(run_cli(store, *args[:-1], "--features", "temp,nope"))
    assert "--features: column 'nope' is not in the batch" in line
