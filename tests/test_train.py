"""The default trainer: fitting against slow references, the CLI's errors, and the MLproject run
end to end through ``mlflow.projects.run`` (no mocks)."""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cara_mlflow.store import write_stream
from cara_mlflow.streams import make_stream
from cara_mlflow.train import (
    MODEL_NAMES,
    TrainerSettings,
    _parser,
    fit_batch,
    main,
    project_parameters,
    split_holdout,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(n_estimators=5, max_depth=4)  # keeps the forests quick


@pytest.fixture(scope="module")
def store_root(tmp_path_factory) -> Path:
    """Two CovCon-D batches of 200; batch 1 lives in a zero-padded directory ``0001``."""
    root = tmp_path_factory.mktemp("store")
    write_stream(make_stream("covcon-d", n_batches=2, batch_size=200, seed=0), root)
    (root / "batches" / "1").rename(root / "batches" / "0001")
    return root


@pytest.fixture(scope="module")
def batch(store_root):
    from cara_mlflow.store import BatchStore

    return BatchStore(store_root).read(1, target="label")


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
    assert type(fit.model).__name__ == ("RandomForestClassifier" if model == "rf" else "SGDClassifier")
    # The model learnt something, and fitting again gives the same model.
    assert fit.misclassified_index.size < 0.5 * batch.n_rows
    assert np.array_equal(fit_batch(batch.X, batch.y, settings).misclassified_index, fit.misclassified_index)


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


# --------------------------------------------------------------------------------------------
# The command line's errors (in-process: they all stop before mlflow is needed)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "{root}/batches/7"], "--data: no batch directory at"),
        (["--data", "{root}/batches"], "is not a batch directory"),
        (["--data", "{root}/batches/0001", "--model", "svm"], "--model: expected one of rf, lr"),
        (["--data", "{root}/batches/0001", "--holdout", "1"], "--holdout: expected"),
        (["--data", "{root}/batches/0001", "--n-estimators", "0"], "--n-estimators: expected"),
        (["--data", "{root}/batches/0001", "--max-depth", "-1"], "--max-depth: expected 0 (unlimited)"),
        (["--data", "{root}/batches/0001", "--seed", "abc"], "argument --seed: invalid int value"),
        (["--data", "{root}/batches/0001", "--colour", "red"], "unrecognized arguments: --colour"),
        (["--data", "{root}/batches/0001", "--features", "x1,,x2"], "--features: empty column name"),
        (["--data", "{root}/batches/0001", "--features", "x1,x9"], "batch 1 in "),
        (["--data", "{root}/batches/0001", "--target", "y"], "batch 1 in "),
        ([], "the following arguments are required: --data"),
    ],
)
def test_main_reports_a_bad_argument_or_batch_in_one_line(store_root, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(root=store_root) for a in args])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cara_mlflow.train: error: ")
    assert message in err


@pytest.mark.parametrize("features, parsed", [("", ""), ("x2,x1", "x2,x1"), ("my col,x1", "my col,x1")])
def test_mlproject_command_passes_every_features_value_as_one_argument(features, parsed):
    from mlflow.projects._project_spec import load_project

    entry_point = load_project(str(REPO_ROOT)).get_entry_point("train")
    params = project_parameters(TrainerSettings(**SMALL), data="/s t/batches/3", target="label",
                                features=features.split(",") if features else None)
    command = entry_point.compute_command(params, None)
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "cara_mlflow.train"]
    args = _parser().parse_args(argv[3:])
    assert (args.data, args.features, args.max_depth, args.n_estimators) == ("/s t/batches/3", parsed, 4, 5)


# --------------------------------------------------------------------------------------------
# The MLproject run, end to end
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


SETTINGS = TrainerSettings(model="rf", seed=2, holdout=0.25, **SMALL)


@pytest.fixture(scope="module")
def project_run(tracking, store_root):
    import mlflow

    client, experiment_id = tracking
    params = project_parameters(SETTINGS, data=store_root / "batches" / "0001", target="label")
    submitted = mlflow.projects.run(uri=str(REPO_ROOT), entry_point="train", parameters=params,
                                    experiment_id=experiment_id, env_manager="local", synchronous=True)
    return client.get_run(submitted.run_id), params


def test_project_run_finishes_with_the_tags_params_and_metrics(project_run, batch):
    run, params = project_run
    assert run.info.status == "FINISHED"
    assert run.data.tags["cara.trained_on"] == "1"
    assert run.data.tags["cara.model_uri"].startswith("models:/m-")
    # projects.run logs its parameters shell-quoted, as they went into the command ("" -> "''");
    # the trainer adds only what the project does not have.
    assert run.data.params == {**{k: shlex.quote(v) for k, v in params.items()}, "batch": "1"}
    assert run.data.params["features"] == "''"
    fit = fit_batch(batch.X, batch.y, SETTINGS)  # the same seed gives the same model in-process
    n_wrong = fit.misclassified_index.size
    assert run.data.metrics == pytest.approx(
        {"n_rows": 200, "n_misclassified": n_wrong, "train_error_rate": n_wrong / 200,
         "holdout_accuracy": fit.holdout_accuracy()}
    )


def test_project_run_records_the_batch_as_its_training_dataset(project_run, store_root):
    run, _ = project_run
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "batch-1"
    assert dataset_input.dataset.source_type == "local"
    assert "0001" in dataset_input.dataset.source
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"


def test_project_run_artifacts_agree_with_the_logged_model(project_run, tracking, batch, tmp_path):
    import mlflow

    run, _ = project_run
    client, _ = tracking
    wrong = pd.read_parquet(client.download_artifacts(run.info.run_id, "cara/misclassified.parquet", str(tmp_path)))
    training = json.loads(
        Path(client.download_artifacts(run.info.run_id, "cara/training.json", str(tmp_path))).read_text()
    )

    model = mlflow.sklearn.load_model(run.data.tags["cara.model_uri"])
    assert wrong["row"].tolist() == slow_misclassified(model, batch.X, batch.y)
    assert list(wrong.columns) == ["row", "x1", "x2", "label"]
    assert np.array_equal(wrong[["x1", "x2"]].to_numpy(), batch.X[wrong["row"]])
    assert np.array_equal(wrong["label"].to_numpy(), batch.y[wrong["row"]])
    assert training == {
        "batch": 1, "n_rows": 200, "features": ["x1", "x2"], "target": "label",
        "holdout_index": split_holdout(200, SETTINGS.holdout, SETTINGS.seed)[1].tolist(),
        "n_misclassified": len(wrong), "settings": asdict(SETTINGS),
    }


@pytest.mark.parametrize("case", ["one class, features reordered", "no holdout"])
def test_log_training_in_process(tracking, tmp_path, case):
    """log_training in a plain run: a constant model round-trips, an empty holdout logs no accuracy."""
    import mlflow

    from cara_mlflow.store import BatchStore
    from cara_mlflow.train import log_training

    client, experiment_id = tracking
    store = BatchStore(tmp_path / "store")
    held = split_holdout(50, 0.2, 0)[1]
    data = pd.DataFrame({"x1": np.linspace(0, 1, 50), "x2": np.linspace(5, 6, 50), "label": 1})
    if case == "no holdout":
        data["label"] = (data["x1"] > 0.5).astype(int)
        settings = TrainerSettings(model="lr", holdout=0.0)
        features = None
    else:
        data.loc[held, "label"] = 0
        settings = TrainerSettings(holdout=0.2, **SMALL)
        features = ["x2", "x1"]
    store.write(12, data)
    batch = store.read(12, target="label", features=features)
    fit = fit_batch(batch.X, batch.y, settings)
    with mlflow.start_run(experiment_id=experiment_id) as active:
        model_uri = log_training(fit, batch, settings)
    run = client.get_run(active.info.run_id)
    assert run.data.tags["cara.model_uri"] == model_uri
    assert run.data.params == {**{k: str(v) for k, v in asdict(settings).items()}, "batch": "12"}
    assert ("holdout_accuracy" in run.data.metrics) == (case != "no holdout")
    wrong = pd.read_parquet(client.download_artifacts(run.info.run_id, "cara/misclassified.parquet", str(tmp_path)))
    model = mlflow.sklearn.load_model(model_uri)
    assert wrong["row"].tolist() == slow_misclassified(model, batch.X, batch.y) == fit.misclassified_index.tolist()
    assert list(wrong.columns) == ["row", *batch.features, "label"]
    if case != "no holdout":
        assert type(model).__name__ == "DummyClassifier"
        assert wrong["row"].tolist() == held.tolist() and list(batch.features) == ["x2", "x1"]
        assert np.array_equal(wrong[["x2", "x1"]].to_numpy(), data.loc[held, ["x2", "x1"]].to_numpy())


def test_project_run_on_a_bad_batch_fails_with_the_childs_one_line_error(tracking, store_root, capfd):
    import mlflow
    from mlflow.exceptions import ExecutionException

    client, experiment_id = tracking
    params = project_parameters(SETTINGS, data=store_root / "batches" / "9", target="label")
    with pytest.raises(ExecutionException, match="failed"):
        mlflow.projects.run(uri=str(REPO_ROOT), entry_point="train", parameters=params,
                            experiment_id=experiment_id, env_manager="local", synchronous=True)
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("cara_mlflow.train: error: ")]
    assert errors == [f"cara_mlflow.train: error: --data: no batch directory at '{params['data']}' "
                      "(expected STORE/batches/<id>)"]
    assert "Traceback" not in err
    runs = client.search_runs([experiment_id])
    (failed,) = [r for r in runs if r.data.params.get("data") == shlex.quote(params["data"])]
    assert failed.info.status == "FAILED" and "cara.model_uri" not in failed.data.tags
