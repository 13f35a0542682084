"""The default trainer: fitting against slow references, the CLI's errors, and the MLproject run
end to end through ``mlflow.projects.run`` (no mocks)."""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cara_mlflow import lifecycle
from cara_mlflow.errors import InputError
from cara_mlflow.lifecycle.training import complete_record
from cara_mlflow.losses import zero_one_loss
from cara_mlflow.store import BatchStore, write_stream
from cara_mlflow.streams import make_stream
from cara_mlflow.tracking.predictor import Predictor
from cara_mlflow.train import (
    MODEL_NAMES,
    TrainerSettings,
    _parser,
    fit_batch,
    main,
    project_parameters,
    split_holdout,
)

from .helpers import ok, registry, run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(n_estimators=5, max_depth=4)  # keeps the forests quick


@pytest.fixture(scope="module")
def store_root(tmp_path_factory) -> Path:
    """Two CovCon-D batches of 200."""
    root = tmp_path_factory.mktemp("store")
    write_stream(make_stream("covcon-d", n_batches=2, batch_size=200, seed=0), root)
    return root


@pytest.fixture(scope="module")
def batch(store_root):
    return BatchStore(store_root).read(1, target="label")


def mixed_frame(n: int, task: str, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Numbers, booleans and text; string labels (classification) or a float target."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"temp": rng.normal(20, 5, n), "day": rng.choice(["Mon", "Sat", "Sun"], n),
                          "holiday": rng.random(n) < 0.2})
    signal = frame["temp"].to_numpy() - 20 + 6 * frame["day"].isin(["Sat", "Sun"]).to_numpy()
    if task == "classification":
        return frame, np.where(signal + rng.normal(0, 1, n) > 2, "busy", "quiet")
    return frame, 50 + 3 * signal + rng.normal(0, 1, n)


KINDS = {"temp": "numeric", "day": "categorical", "holiday": "boolean"}


def slow_misclassified(model, X, y) -> list[int]:
    """The rows a model gets wrong, one row at a time."""
    return [i for i in range(len(y)) if model.predict(X[i : i + 1])[0] != y[i]]


# --------------------------------------------------------------------------------------------
# split_holdout and TrainerSettings
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_rows", [1, 2, 7, 200])
@pytest.mark.parametrize("holdout", [0.0, 0.1, 0.5, 0.99])
@pytest.mark.parametrize("seed", [0, 3])
def test_split_holdout_is_a_deterministic_sorted_partition(n_rows, holdout, seed):
    train, held = split_holdout(n_rows, holdout, seed)
    again = split_holdout(n_rows, holdout, seed)
    assert np.array_equal(train, again[0]) and np.array_equal(held, again[1])
    assert np.all(np.diff(train) > 0) and np.all(np.diff(held) > 0)
    assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(n_rows))
    assert held.size == min(round(holdout * n_rows), n_rows - 1)
    assert train.size >= 1


def test_split_holdout_depends_on_the_seed():
    assert not np.array_equal(split_holdout(200, 0.2, 0)[1], split_holdout(200, 0.2, 1)[1])


def test_split_holdout_zero_holds_nothing_out():
    train, held = split_holdout(50, 0.0, seed=4)
    assert held.size == 0 and np.array_equal(train, np.arange(50))


@pytest.mark.parametrize(
    "field, value",
    [("model", "svm"), ("seed", -1), ("seed", 1.5), ("holdout", 1.0), ("holdout", -0.1),
     ("holdout", True), ("n_estimators", 0), ("max_depth", 0), ("max_depth", 2.0), ("alpha", 0.0),
     ("alpha", float("nan"))],
)
def test_bad_settings_are_rejected_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^{field}: expected"):
        TrainerSettings(**{field: value})


def test_settings_round_trip_through_json():
    settings = TrainerSettings(model="lr", seed=7, holdout=0.0, max_depth=3, alpha=0.01)
    assert TrainerSettings(**json.loads(json.dumps(asdict(settings)))) == settings


# --------------------------------------------------------------------------------------------
# fit_batch
# --------------------------------------------------------------------------------------------

ESTIMATORS = {"rf": "RandomForestClassifier", "lr": "SGDClassifier", "hgb": "HistGradientBoostingClassifier"}


@pytest.mark.parametrize("model", MODEL_NAMES)
@pytest.mark.parametrize("holdout", [0.0, 0.25])
def test_fit_batch_misclassified_matches_a_slow_recomputation(batch, model, holdout):
    settings = TrainerSettings(model=model, holdout=holdout, seed=1, **SMALL)
    fit = fit_batch(batch.X, batch.y, settings)
    expected_train, expected_held = split_holdout(batch.n_rows, holdout, 1)
    assert np.array_equal(fit.train_index, expected_train)
    assert np.array_equal(fit.holdout_index, expected_held)
    assert fit.n_rows == batch.n_rows == 200
    assert fit.misclassified_index.tolist() == slow_misclassified(fit.model, batch.X, batch.y)
    assert type(fit.model).__name__ == ESTIMATORS[model]
    # The model learnt something, and fitting again gives the same model.
    assert fit.misclassified_index.size < 0.5 * batch.n_rows
    assert np.array_equal(fit_batch(batch.X, batch.y, settings).misclassified_index, fit.misclassified_index)


@pytest.mark.parametrize("model", MODEL_NAMES)
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_fit_batch_on_a_frame_is_a_pipeline_that_selects_columns_by_name(model, task):
    frame, y = mixed_frame(300, task)
    fit = fit_batch(frame, y, TrainerSettings(model=model, holdout=0.2, **SMALL), task=task, kinds=KINDS)
    assert type(fit.model).__name__ == "Pipeline"
    shuffled = frame[["holiday", "day", "temp"]].assign(extra=1)       # any order, extra columns ignored
    predicted = fit.model.predict(shuffled)
    assert np.array_equal(predicted, fit.model.predict(frame))
    slow = [fit.model.predict(frame.iloc[i : i + 1])[0] for i in range(len(frame))]
    if task == "classification":
        assert np.array_equal(predicted, slow)
    else:               # one row at a time sums in another order: equal to rounding
        np.testing.assert_allclose(predicted, slow, rtol=1e-12)
    if task == "classification":
        assert set(predicted) <= {"busy", "quiet"} and np.mean(predicted == y) > 0.7
        assert fit.misclassified_index.tolist() == np.flatnonzero(predicted != y).tolist()
    else:
        assert np.corrcoef(predicted, y)[0, 1] > 0.8
    unseen = frame.iloc[:3].assign(day="Holiday!")                     # an unseen category is ignored
    assert len(fit.model.predict(unseen)) == 3


def test_fit_batch_holdout_accuracy_counts_the_held_out_rows(batch):
    fit = fit_batch(batch.X, batch.y, TrainerSettings(holdout=0.25, **SMALL))
    slow = np.mean([fit.model.predict(batch.X[i : i + 1])[0] == batch.y[i] for i in fit.holdout_index])
    assert fit.holdout_accuracy() == pytest.approx(slow)
    assert fit_batch(batch.X, batch.y, TrainerSettings(holdout=0.0, **SMALL)).holdout_accuracy() is None


@pytest.mark.parametrize("model", MODEL_NAMES)
@pytest.mark.parametrize("labels", [("a", "b"), (True, False), (1, 0)])
def test_fit_batch_on_one_class_gives_a_constant_dummy_classifier(model, labels):
    X = np.arange(20, dtype=float).reshape(10, 2)
    held = split_holdout(10, 0.2, 0)[1]
    y = np.array([labels[0]] * 10)
    y[held] = labels[1]  # only the held-out rows differ: training sees one class
    fit = fit_batch(X, y, TrainerSettings(model=model, holdout=0.2, seed=0))
    assert type(fit.model).__name__ == "DummyClassifier"
    assert fit.model.predict(X).tolist() == [labels[0]] * 10
    assert fit.misclassified_index.tolist() == held.tolist()
    assert fit.holdout_accuracy() == 0.0


def test_fit_batch_rejects_mismatched_or_non_finite_input():
    with pytest.raises(ValueError, match="^y: expected shape"):
        fit_batch(np.zeros((3, 2)), np.zeros(4), TrainerSettings())
    with pytest.raises(ValueError, match="^X: expected finite"):
        fit_batch(np.array([[0.0], [np.nan]]), np.array([0, 1]), TrainerSettings())
    with pytest.raises(ValueError, match="^X: expected a non-empty DataFrame with the features temp, day"):
        fit_batch(pd.DataFrame({"temp": [1.0]}), np.array([0]), TrainerSettings(), kinds=KINDS)


# --------------------------------------------------------------------------------------------
# The command line's errors (in-process: they all stop before mlflow is needed)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A directory holding training rows as data.parquet, as the lifecycle writes it."""
    directory = tmp_path_factory.mktemp("training-rows")
    frame, y = mixed_frame(60, "classification")
    frame.assign(label=y, when=pd.Timestamp("2026-01-01")).to_parquet(directory / "data.parquet", index=False)
    return directory


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "{root}/nowhere"], "--data: no data.parquet or data.csv in"),
        (["--data", "{root}", "--model", "svm"], "--model: expected one of rf, lr, hgb"),
        (["--data", "{root}", "--holdout", "0.2"], "unrecognized arguments: --holdout"),
        (["--data", "{root}", "--n-estimators", "0"], "--n-estimators: expected"),
        (["--data", "{root}", "--max-depth", "-1"], "--max-depth: expected 0 (unlimited)"),
        (["--data", "{root}", "--seed", "abc"], "argument --seed: invalid int value"),
        (["--data", "{root}", "--task", "ranking"], "argument --task: invalid choice"),
        (["--data", "{root}", "--colour", "red"], "unrecognized arguments: --colour"),
        (["--data", "{root}", "--features", "temp,,day"], "--features: empty column name"),
        (["--data", "{root}", "--features", "temp,x9"], "--features: column 'x9' is not in the batch"),
        (["--data", "{root}", "--target", "y"], "--target: "),
        (["--data", "{root}"], "feature 'when' has type datetime64"),           # every column but the target
        ([], "the following arguments are required: --data"),
    ],
)
def test_main_reports_a_bad_argument_or_batch_in_one_line(data_dir, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(root=data_dir) for a in args])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cara_mlflow.train: error: ")
    assert message in err


@pytest.mark.parametrize("features, parsed", [("", ""), ("x2,x1", "x2,x1"), ("my col,x1", "my col,x1")])
def test_mlproject_command_passes_every_features_value_as_one_argument(features, parsed):
    from mlflow.projects._project_spec import load_project

    entry_point = load_project(str(REPO_ROOT)).get_entry_point("train")
    params = project_parameters(TrainerSettings(**SMALL), data="/s t/rows", target="label",
                                features=features.split(",") if features else [])
    command = entry_point.compute_command(params, None)
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "cara_mlflow.train"]
    args = _parser().parse_args(argv[3:])
    assert (args.data, args.features, args.max_depth, args.n_estimators) == ("/s t/rows", parsed, 4, 5)


def test_project_parameters_pass_only_what_the_project_declares():
    params = project_parameters(TrainerSettings(), data="/d", target="y", features=["a", "b"], declared=["seed"])
    assert params == {"data": "/d", "target": "y", "features": "a,b", "seed": "0"}
    assert "holdout" not in project_parameters(TrainerSettings(), data="/d", target="y", features=["a"])


# --------------------------------------------------------------------------------------------
# Logging a model: a pyfunc that takes a frame in any column order and returns the labels
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """A sqlite tracking store in a temp dir, set for projects.run (which reads only the env)."""
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
        client = MlflowClient(uri)
        experiment_id = client.create_experiment("cara-train-test", artifact_location=str(tmp / "artifacts"))
        yield client, experiment_id


@pytest.mark.parametrize("model", MODEL_NAMES)
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_a_logged_model_loads_as_pyfunc_with_a_signature(tracking, tmp_path, monkeypatch, model, task):
    import mlflow

    from cara_mlflow.tracking.training import log_model_run

    client, experiment_id = tracking
    frame, y = mixed_frame(200, task, seed=1)
    settings = TrainerSettings(model=model, holdout=0.0, **SMALL)
    fit = fit_batch(frame, y, settings, task=task, kinds=KINDS)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)     # the store comes from the fixture's env
    model_uri = log_model_run(fit.model, frame, settings, task)
    loaded = mlflow.pyfunc.load_model(model_uri, dst_path=str(tmp_path))
    assert loaded.metadata.get_input_schema().input_names() == ["temp", "day", "holiday"]
    got = np.asarray(loaded.predict(frame[["day", "holiday", "temp"]]))
    assert np.array_equal(got, fit.model.predict(frame))
    # a batch whose float column arrives as whole numbers (int64), as a csv export may give it
    whole = frame.assign(temp=frame["temp"].round().astype("int64"))
    assert np.array_equal(Predictor(loaded).predict(whole), fit.model.predict(whole.astype({"temp": float})))
    with pytest.raises(InputError, match=r"^the model refused the batch's features \(.*holiday"):
        Predictor(loaded).predict(frame.drop(columns="holiday"))


def test_project_run_on_a_bad_directory_fails_with_the_childs_one_line_error(tracking, tmp_path, capfd):
    import mlflow
    from mlflow.exceptions import ExecutionException

    client, experiment_id = tracking
    params = project_parameters(TrainerSettings(**SMALL), data=tmp_path / "nowhere", target="label", features=[])
    with pytest.raises(ExecutionException, match="failed"):
        mlflow.projects.run(uri=str(REPO_ROOT), entry_point="train", parameters=params,
                            experiment_id=experiment_id, env_manager="local", synchronous=True)
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("cara_mlflow.train: error: ")]
    assert errors == [f"cara_mlflow.train: error: --data: no data.parquet or data.csv in {params['data']!r}"]
    assert "Traceback" not in err
    runs = client.search_runs([experiment_id])
    (failed,) = [r for r in runs if r.data.params.get("data") == shlex.quote(params["data"])]
    assert failed.info.status == "FAILED"


# --------------------------------------------------------------------------------------------
# The lifecycle's half of the contract, end to end: tune, then init runs the project
# --------------------------------------------------------------------------------------------

TUNED = TrainerSettings(model="rf", seed=2, holdout=0.25, **SMALL)


@pytest.fixture(scope="module")
def initialised(tmp_path_factory):
    """A store of 5 CovCon-D batches, tuned on 0..2 and initialised on batch 3 by the project."""
    root = tmp_path_factory.mktemp("lifecycle")
    write_stream(make_stream("covcon-d", n_batches=5, batch_size=200, seed=0), root)
    ok(run_cli(root, "tune", "--offline", "0:3", "--kappa", "1", "--model", "rf", "--seed", "2", "--holdout", "0.25",
               "--n-estimators", "5", "--max-depth", "4"))
    ok(run_cli(root, "init", "--batch", "3"))
    reg = registry(root)
    doc = lifecycle.active_policy(reg)
    version = reg.version(1)
    return root, reg, doc, version, BatchStore(root).read(3, target="label", space=doc.space)


def test_the_project_run_holds_one_model_and_the_parameters_it_got(initialised):
    root, reg, doc, version, batch = initialised
    run = reg.runs.get(version.tags["cara.training_run"])
    assert run.status == "FINISHED" and run.tags["cara.trained_on"] == "3"
    assert reg.logged_model_of_run(run.run_id) == run.tags["cara.model_uri"]
    expected = project_parameters(TUNED, data="DIR", target="label", features=["x1", "x2"])
    assert {k: v for k, v in run.params.items() if k != "data"} == {k: v for k, v in expected.items() if k != "data"}
    assert doc.trainer == TUNED


def test_the_project_saw_the_training_rows_only(initialised):
    """The project's model equals the same seeded model fitted in-process on the training rows:
    the held-out rows never reached the project."""
    root, reg, doc, version, batch = initialised
    train, held = split_holdout(batch.n_rows, TUNED.holdout, TUNED.seed)
    no_holdout = TrainerSettings(**{**asdict(TUNED), "holdout": 0.0})
    in_process = fit_batch(batch.frame.iloc[train], batch.y[train], no_holdout,
                           kinds=dict(zip(doc.space.features, doc.space.kinds)))
    with tempfile.TemporaryDirectory() as tmp:
        logged = reg.load_model(version, tmp)
        assert np.array_equal(logged.predict(batch.frame), in_process.model.predict(batch.frame))
    info = reg.runs.load_json(version.tags["cara.training_run"], "cara/training.json")
    assert info["holdout_index"] == held.tolist()


def test_the_recorded_losses_match_a_per_row_reference(initialised, tmp_path):
    root, reg, doc, version, batch = initialised
    info, rows = reg.training_info(version, str(tmp_path))
    logged = reg.load_model(version, str(tmp_path / "model"))
    slow = np.array([zero_one_loss(batch.y[i : i + 1], logged.predict(batch.frame.iloc[i : i + 1]))[0]
                     for i in range(batch.n_rows)])
    wrong = rows[rows["loss"] > 0]
    assert wrong["row"].tolist() == np.flatnonzero(slow).tolist()
    assert wrong["loss"].tolist() == [1.0] * int(slow.sum())
    # with them, a sample of the right rows standing for the batch in the kernel mass (here: all of them)
    assert rows["mass_weight"].sum() == pytest.approx(batch.n_rows) and info["mass_sample"] is True
    assert rows["loss"].tolist() == slow[rows["row"]].tolist()
    assert np.array_equal(rows[["x1", "x2"]].to_numpy(), batch.frame.iloc[rows["row"]].to_numpy())
    assert np.array_equal(rows["label"].to_numpy(), batch.y[rows["row"]])
    assert (info["n_nonzero_loss"], info["loss"], info["task"]) == (int(slow.sum()), "zero_one", "classification")


def test_completing_the_record_again_changes_nothing(initialised, tmp_path):
    root, reg, doc, version, batch = initialised
    run_id = version.tags["cara.training_run"]
    before = reg.training_info(version, str(tmp_path / "a"))
    assert complete_record(reg, run_id, batch, doc) == version.tags.get("cara.model_uri", reg.model_of_run(run_id))
    after = reg.training_info(version, str(tmp_path / "b"))
    assert before[0] == after[0] and before[1].equals(after[1])
