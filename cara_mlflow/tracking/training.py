"""The trainer's MLflow side: log a fitted batch model, and what the lifecycle reads back, to a run.

Called by ``python -m cara_mlflow.train`` inside the project run the lifecycle started (see the
table in :mod:`cara_mlflow.train`). The names here are the contract a custom project follows.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..errors import SetupError
from .registry import MISCLASSIFIED, TAG_MODEL_URI, TAG_TRAINED_ON, TRAINING_INFO

__all__ = ["log_training", "log_project_run", "MODEL_NAME"]

#: The artifact name of the logged model.
MODEL_NAME = "model"

#: The types skops must trust to load our own models (``skops.io.get_untrusted_types``): only
#: the forest's tree storage. Listed per estimator rather than "trust what is found".
_SKOPS_TRUSTED_TYPES: dict[str, list[str]] = {"RandomForestClassifier": ["sklearn.tree._tree.Tree"]}

#: Warnings MLflow 3.17 raises on every retrain that say nothing about this run: the local
#: dataset source is registered twice (schemes "" and "file"), labels are integers, and the
#: dataset digest calls a pandas API in a way pandas 4 will change.
_MLFLOW_NOISE = (r"The specified dataset source can be interpreted in multiple ways",
                 r"Hint: Inferred schema contains integer column",
                 r"Starting with pandas version 4\.0 all arguments of all")


def _pip_requirements() -> list[str]:
    """Pinned versions of what loading and running the model needs, from this interpreter."""
    import scipy
    import sklearn
    import skops

    return [f"scikit-learn=={sklearn.__version__}", f"numpy=={np.__version__}",
            f"scipy=={scipy.__version__}", f"skops=={skops.__version__}"]


def _batch_frame(batch):
    import pandas as pd

    frame = pd.DataFrame(batch.X, columns=list(batch.features))
    frame[batch.target] = batch.y
    return frame


def log_project_run(fit, batch, settings) -> str:
    """:func:`log_training` inside ``mlflow.start_run()``, which attaches to the project run
    (``MLFLOW_RUN_ID``); an MLflow refusal becomes a one-line :class:`SetupError`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        with mlflow.start_run():
            return log_training(fit, batch, settings)
    except MlflowException as exc:
        raise SetupError(f"MLflow: {exc.message}") from None


def log_training(fit, batch, settings) -> str:
    """Log ``fit`` (a :class:`~cara_mlflow.train.FitResult` on ``batch`` with ``settings``) to the
    active MLflow run.

    Logs the model (``name="model"``), the batch as dataset input ``batch-<id>``, the artifacts
    ``cara/misclassified.parquet`` and ``cara/training.json``, the params, the metrics and the
    tags ``cara.model_uri`` / ``cara.trained_on``. Params the run already holds are left as they
    are: in a project run those are the entry point's parameters, logged by
    ``mlflow.projects.run`` as they went into the shell command (``max_depth`` ``0``, an empty
    ``features`` as ``''``), and MLflow refuses to change a param. The settings exactly are in
    ``cara/training.json``. Returns the logged model's URI.
    """
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_training needs an active MLflow run (mlflow.start_run())")
    if fit.n_rows != batch.n_rows:
        raise ValueError(f"fit has {fit.n_rows} rows but batch {batch.id} has {batch.n_rows}")
    with warnings.catch_warnings():
        for message in _MLFLOW_NOISE:
            warnings.filterwarnings("ignore", message=message)
        return _log_training(run.info.run_id, fit, batch, settings)


def _log_training(run_id: str, fit, batch, settings) -> str:
    import mlflow
    from mlflow.models import infer_signature

    frame = _batch_frame(batch)
    mlflow.log_input(mlflow.data.from_pandas(frame, source=str(batch.data_path), targets=batch.target,
                                             name=f"batch-{batch.id}"), context="training")
    existing = mlflow.tracking.MlflowClient().get_run(run_id).data.params
    params = {**asdict(settings), "batch": batch.id}
    mlflow.log_params({k: v for k, v in params.items() if k not in existing})

    n_wrong = int(fit.misclassified_index.size)
    metrics = {"n_rows": fit.n_rows, "n_misclassified": n_wrong, "train_error_rate": n_wrong / fit.n_rows}
    accuracy = fit.holdout_accuracy()
    if accuracy is not None:
        metrics["holdout_accuracy"] = accuracy
    mlflow.log_metrics(metrics)

    wrong = frame.iloc[fit.misclassified_index]
    wrong.insert(0, "row", fit.misclassified_index.astype(np.int64))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, Path(MISCLASSIFIED).name)
        wrong.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=str(Path(MISCLASSIFIED).parent))
    mlflow.log_dict({"batch": batch.id, "n_rows": fit.n_rows, "features": list(batch.features),
                     "target": batch.target, "holdout_index": fit.holdout_index.tolist(),
                     "n_misclassified": n_wrong, "settings": asdict(settings)}, TRAINING_INFO)

    info = mlflow.sklearn.log_model(
        fit.model, name=MODEL_NAME,
        signature=infer_signature(batch.X, fit.model.predict(batch.X)),
        pip_requirements=_pip_requirements(),
        skops_trusted_types=_SKOPS_TRUSTED_TYPES.get(type(fit.model).__name__),
    )
    mlflow.set_tags({TAG_MODEL_URI: info.model_uri, TAG_TRAINED_ON: str(batch.id)})
    return info.model_uri
