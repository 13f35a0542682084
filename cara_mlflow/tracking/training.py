"""A training run's MLflow side: the trainer logs one model; the lifecycle records what it needs.

Two halves of the custom-trainer contract (README, "Your own trainer"):

* :func:`log_model_run`, called by ``python -m cara_mlflow.train`` inside the project run: logs
  the fitted model (any flavour that loads as pyfunc would do; ours is scikit-learn, skops
  format) with a signature of the feature DataFrame, and the settings as params.
* :func:`record_training`, called by the lifecycle on the finished run: the model's per-sample
  losses on its whole training batch (the rows with a non-zero loss, and their losses, as
  ``cara/losses.parquet``), ``cara/training.json``, the metrics, the batch as dataset input
  ``batch-<id>``, and last the tags ``cara.model_uri`` / ``cara.trained_on``: a run with the tag
  is a complete training record.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict

import numpy as np

from ..errors import SetupError
from ..staleness import mass_sample
from .registry import LOSSES_FILE, TAG_MODEL_URI, TAG_TRAINED_ON, TRAINING_INFO
from .runs import Runs

__all__ = ["log_model_run", "record_training", "MODEL_NAME"]

#: The artifact name of the logged model.
MODEL_NAME = "model"

#: Warnings MLflow 3.17 raises on every retrain that say nothing about this run: the local
#: dataset source is registered twice (schemes "" and "file"), labels are integers, and the
#: dataset digest calls a pandas API in a way pandas 4 will change.
_MLFLOW_NOISE = (r"The specified dataset source can be interpreted in multiple ways",
                 r"Hint: Inferred schema contains integer column",
                 r"Starting with pandas version 4\.0 all arguments of all")


def _pip_requirements() -> list[str]:
    """Pinned versions of what loading and running the model needs, from this interpreter."""
    import pandas
    import scipy
    import sklearn
    import skops

    return [f"scikit-learn=={sklearn.__version__}", f"numpy=={np.__version__}", f"pandas=={pandas.__version__}",
            f"scipy=={scipy.__version__}", f"skops=={skops.__version__}"]


def _trusted_types(model) -> list[str]:
    """The types skops must be told to trust to load ``model``: scikit-learn's own internals
    (tree storage, boosting predictors) and ``functools.partial``, which the boosting models'
    column check wraps ``sklearn.utils.validation.check_array`` in. Anything else stays untrusted
    and fails loudly."""
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    return [t for t in untrusted if t.startswith("sklearn.") or t == "functools.partial"]


def log_model_run(model, frame, settings, task: str) -> str:
    """Log ``model`` (fitted on the DataFrame ``frame``) inside ``mlflow.start_run()``, which
    attaches to the project run (``MLFLOW_RUN_ID``); return the logged model's URI.

    Params the run already holds are left as they are (in a project run those are the entry
    point's parameters, and MLflow refuses to change a param). An MLflow refusal becomes a
    one-line :class:`SetupError`.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    try:
        with mlflow.start_run() as run, warnings.catch_warnings():
            for message in _MLFLOW_NOISE:
                warnings.filterwarnings("ignore", message=message)
            existing = mlflow.tracking.MlflowClient().get_run(run.info.run_id).data.params
            # the holdout is the lifecycle's (it withholds those rows): not a setting of this fit
            params = {**{k: v for k, v in asdict(settings).items() if k != "holdout"}, "task": task}
            mlflow.log_params({k: v for k, v in params.items() if k not in existing})
            signature = infer_signature(frame, model.predict(frame))
            info = mlflow.sklearn.log_model(model, name=MODEL_NAME, signature=signature,
                                            pip_requirements=_pip_requirements(),
                                            skops_trusted_types=_trusted_types(model))
            return info.model_uri
    except MlflowException as exc:
        raise SetupError(f"MLflow: {exc.message}") from None


def record_training(runs: Runs, run_id: str, model_uri: str, batch, losses: np.ndarray, holdout_index: np.ndarray,
                    *, loss: str, task: str, settings: dict | None, tags: bool = True) -> None:
    """Record on the training run what the lifecycle needs of the model ``model_uri`` trained on
    ``batch`` (its ``losses`` on every row of the batch; the rows in ``holdout_index`` were
    withheld from training), the tags last (``tags=False``: a version adopted on a batch run).
    Idempotent: a rerun after a crash rewrites the same."""
    nonzero = np.flatnonzero(losses)
    # the rows with a loss, and a seeded sample of the others standing for them in the kernel mass
    # (the expected-loss scale's denominator); zero-loss rows add nothing to the paper's Ψ
    kept, weight = mass_sample(batch.n_rows, losses=losses, seed=(batch.id, 3))
    rows = batch.frame.iloc[kept].reset_index(drop=True)
    rows.insert(0, "row", kept.astype(np.int64))
    rows[batch.target] = batch.y[kept]
    rows["loss"] = losses[kept]
    rows["mass_weight"] = weight
    parquet = io.BytesIO()
    rows.to_parquet(parquet, index=False)
    trained = np.setdiff1d(np.arange(batch.n_rows), holdout_index)
    info = {"batch": batch.id, "n_rows": batch.n_rows, "features": list(batch.features), "target": batch.target,
            "holdout_index": [int(i) for i in holdout_index], "n_nonzero_loss": int(nonzero.size), "loss": loss,
            "task": task, "settings": settings, "mass_sample": True}
    metrics = {"n_rows": batch.n_rows, "n_nonzero_loss": int(nonzero.size),
               "train_loss": float(losses[trained].mean()) if trained.size else float("nan")}
    if len(holdout_index):
        metrics["holdout_loss"] = float(losses[holdout_index].mean())
    runs.log_files(run_id, {LOSSES_FILE.split("/")[-1]: parquet.getvalue()}, LOSSES_FILE.rsplit("/", 1)[0])
    runs.log_dict(run_id, info, TRAINING_INFO)
    runs.log_metrics(run_id, {k: v for k, v in metrics.items() if v == v})
    if tags:
        _log_dataset(runs, run_id, batch)
        runs.set_tags(run_id, {TAG_MODEL_URI: model_uri, TAG_TRAINED_ON: batch.id})


def _log_dataset(runs: Runs, run_id: str, batch) -> None:
    """The batch as the run's training dataset (lineage in the UI)."""
    frame = batch.frame.copy()
    frame[batch.target] = batch.y
    with warnings.catch_warnings():
        for message in _MLFLOW_NOISE:
            warnings.filterwarnings("ignore", message=message)
        runs.log_training_dataset(run_id, frame, source=str(batch.data_path), target=batch.target,
                                  name=f"batch-{batch.id}")
