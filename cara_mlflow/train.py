"""The default trainer behind the MLproject ``train`` entry point.

Two layers. The pure one — :class:`TrainerSettings`, :func:`split_holdout`,
:func:`build_estimator`, :func:`build_pipeline`, :func:`fit_batch` — trains one model on one
batch; ``tune`` uses it in-process for its offline models. The command line — :func:`main`,
``python -m cara_mlflow.train`` — runs inside the MLflow Project run started by the lifecycle
(``env_manager="local"``) and follows the custom-trainer contract (README, "Your own trainer"):
it reads ``DATA/data.parquet`` (the training rows, held-out rows already withheld by the
lifecycle), fits a scikit-learn ``Pipeline`` on a DataFrame of the named features (its own
encoding of categoricals) and logs that one model, with a signature, through
:func:`cara_mlflow.tracking.training.log_model_run` (this module never imports mlflow). The
lifecycle finds the model, computes its training losses and keeps them with the version.

Models (``--model``), for both tasks (``--task``, inferred from the target when not given):

======  =====================================  ========================================
name    classification                          regression
======  =====================================  ========================================
``rf``  ``RandomForestClassifier``              ``RandomForestRegressor``
``lr``  ``SGDClassifier(loss="log_loss")``      ``SGDRegressor`` (squared error)
``hgb`` ``HistGradientBoostingClassifier``      ``HistGradientBoostingRegressor``
======  =====================================  ========================================

Numeric and boolean features are standardised; string features are one-hot encoded (``rf``,
``lr``) or ordinal-encoded as native categoricals (``hgb``); a category unseen in training
is ignored.

Examples
--------
>>> import numpy as np
>>> X = np.array([[0.0], [0.1], [0.2], [0.8], [0.9], [1.0]])
>>> y = np.array([0, 0, 0, 1, 1, 1])
>>> fit = fit_batch(X, y, TrainerSettings(model="lr", holdout=0.0))
>>> fit.n_rows, fit.train_index.tolist(), fit.misclassified_index.tolist()
(6, [0, 1, 2, 3, 4, 5], [])
"""

from __future__ import annotations

import argparse
import numbers
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import CaraError, InputError
from .features import infer_kinds, infer_task, select_features
from .losses import TASKS
from .names import MODEL_NAMES, STEP_PID_ENV

__all__ = [
    "MODEL_NAMES",
    "TrainerSettings",
    "split_holdout",
    "build_estimator",
    "FitResult",
    "fit_batch",
    "build_pipeline",
    "project_parameters",
    "REQUIRED_PARAMETERS",
    "main",
]




def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainerSettings:
    """How the default trainer fits a batch; stored (``asdict``) in the tuned policy.

    Attributes
    ----------
    model : str
        ``"rf"``: a random forest (``n_estimators`` trees, ``max_depth``); ``"lr"``: the task's SGD
        linear model (``alpha``); ``"hgb"``: histogram gradient boosting (``n_estimators``
        boosting iterations, ``max_depth``). Seeded by ``seed``; see the module's table.
    seed : int
        Seeds the estimator and the holdout split; ``>= 0``.
    holdout : float
        Fraction of the batch held out of training (for the promotion gate); ``0 <= holdout < 1``.
        The lifecycle withholds these rows from what the project sees.
    n_estimators : int
        Trees of the random forest, boosting iterations of ``hgb``; ``>= 1``.
    max_depth : int or None
        Depth limit of the trees; ``None`` is unlimited (the MLproject writes it as 0).
    alpha : float
        Regularisation of the SGD classifier; ``> 0``.

    Examples
    --------
    >>> TrainerSettings(model="lr", alpha=1e-3)
    TrainerSettings(model='lr', seed=0, holdout=0.2, n_estimators=100, max_depth=None, alpha=0.001)
    >>> TrainerSettings(**asdict(TrainerSettings(seed=3))) == TrainerSettings(seed=3)
    True
    >>> TrainerSettings(holdout=1.0)
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: holdout: expected a number with 0 <= holdout < 1, got 1.0
    """

    model: str = "rf"
    seed: int = 0
    holdout: float = 0.2
    n_estimators: int = 100
    max_depth: int | None = None
    alpha: float = 1e-4

    def __post_init__(self) -> None:
        if self.model not in MODEL_NAMES:
            raise InputError(f"model: expected one of {', '.join(MODEL_NAMES)}, got {self.model!r}")
        if not (_is_int(self.seed) and 0 <= self.seed < 2**32):
            raise InputError(f"seed: expected an integer with 0 <= seed < 2**32, got {self.seed!r}")
        if not (_is_real(self.holdout) and 0 <= self.holdout < 1):
            raise InputError(f"holdout: expected a number with 0 <= holdout < 1, got {self.holdout!r}")
        if not (_is_int(self.n_estimators) and self.n_estimators >= 1):
            raise InputError(f"n_estimators: expected an integer >= 1, got {self.n_estimators!r}")
        if self.max_depth is not None and not (_is_int(self.max_depth) and self.max_depth >= 1):
            raise InputError(
                f"max_depth: expected None (unlimited) or an integer >= 1, got {self.max_depth!r}"
            )
        if not (_is_real(self.alpha) and np.isfinite(self.alpha) and self.alpha > 0):
            raise InputError(f"alpha: expected a finite number > 0, got {self.alpha!r}")


def split_holdout(n_rows: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n_rows)`` into (train_index, holdout_index), both sorted.

    The holdout has ``round(holdout * n_rows)`` rows, drawn without replacement by a generator
    seeded with ``seed`` (the same split every call), but at least one row is always left for
    training.

    Examples
    --------
    >>> train, held = split_holdout(10, 0.3, seed=0)
    >>> train.tolist(), held.tolist()
    ([0, 1, 3, 5, 7, 8, 9], [2, 4, 6])
    >>> [a.tolist() for a in split_holdout(1, 0.9, seed=0)]
    [[0], []]
    """
    if not (_is_int(n_rows) and n_rows >= 1):
        raise InputError(f"n_rows: expected an integer >= 1, got {n_rows!r}")
    if not (_is_real(holdout) and 0 <= holdout < 1):
        raise InputError(f"holdout: expected a number with 0 <= holdout < 1, got {holdout!r}")
    n_held = min(int(round(holdout * n_rows)), n_rows - 1)
    order = np.random.default_rng(seed).permutation(n_rows)
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def build_estimator(settings: TrainerSettings, task: str = "classification"):
    """The unfitted scikit-learn estimator ``settings`` describe, for ``task``.

    >>> build_estimator(TrainerSettings(n_estimators=5, max_depth=3))
    RandomForestClassifier(max_depth=3, n_estimators=5, random_state=0)
    >>> build_estimator(TrainerSettings(model="lr", seed=1))
    SGDClassifier(loss='log_loss', random_state=1)
    >>> build_estimator(TrainerSettings(model="hgb", n_estimators=50), task="regression")
    HistGradientBoostingRegressor(max_iter=50, random_state=0)
    """
    from sklearn import ensemble, linear_model

    s = settings
    regression = task == "regression"
    if s.model == "rf":
        cls = ensemble.RandomForestRegressor if regression else ensemble.RandomForestClassifier
        return cls(n_estimators=s.n_estimators, max_depth=s.max_depth, random_state=s.seed)
    if s.model == "hgb":
        cls = ensemble.HistGradientBoostingRegressor if regression else ensemble.HistGradientBoostingClassifier
        return cls(max_iter=s.n_estimators, max_depth=s.max_depth, random_state=s.seed)
    if regression:
        return linear_model.SGDRegressor(alpha=s.alpha, random_state=s.seed)
    return linear_model.SGDClassifier(loss="log_loss", alpha=s.alpha, random_state=s.seed)


def build_pipeline(settings: TrainerSettings, task: str, kinds: Mapping[str, str]):
    """A ``Pipeline`` over a DataFrame of the features ``kinds`` names (selected by name).

    >>> p = build_pipeline(TrainerSettings(model="hgb"), "classification", {"t": "numeric", "day": "categorical"})
    >>> [name for name, _ in p.steps]
    ['features', 'model']
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    numeric = [name for name, kind in kinds.items() if kind != "categorical"]
    categorical = [name for name, kind in kinds.items() if kind == "categorical"]
    estimator = build_estimator(settings, task)
    if settings.model == "hgb":   # native categoricals: codes, unseen and missing as NaN
        encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan,
                                 encoded_missing_value=np.nan, max_categories=255)
        estimator.set_params(categorical_features=[False] * len(numeric) + [True] * len(categorical))
    else:
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    parts = [("numeric", StandardScaler(), numeric)] if numeric else []
    parts += [("categorical", encoder, categorical)] if categorical else []
    return Pipeline([("features", ColumnTransformer(parts, sparse_threshold=0)), ("model", estimator)])


@dataclass(frozen=True)
class FitResult:
    """A model fitted on one batch, and what it gets wrong there.

    Attributes
    ----------
    model : estimator
        The fitted estimator (a ``Pipeline`` on a DataFrame); a ``DummyClassifier(strategy=
        "constant")`` when the training rows hold a single class (classifiers refuse one class).
    train_index, holdout_index : ndarray of int
        The sorted rows of the batch trained on and held out (:func:`split_holdout`).
    misclassified_index : ndarray of int
        The sorted rows of the whole batch (trained on and held out) the model does not predict
        exactly (its wrong labels, for a classifier).
    n_rows : int
        The batch's row count.
    """

    model: object
    train_index: np.ndarray
    holdout_index: np.ndarray
    misclassified_index: np.ndarray
    n_rows: int

    def holdout_accuracy(self) -> float | None:
        """Accuracy on the held-out rows; ``None`` when nothing is held out."""
        if self.holdout_index.size == 0:
            return None
        wrong = np.isin(self.holdout_index, self.misclassified_index).sum()
        return 1.0 - wrong / self.holdout_index.size


def fit_batch(X, y, settings: TrainerSettings, *, task: str = "classification",
              kinds: Mapping[str, str] | None = None) -> FitResult:
    """Fit the model ``settings`` describe on the training rows of one batch ``(X, y)``.

    ``X`` is a 2-D array, or a DataFrame of the features ``kinds`` names (then the model is a
    :func:`build_pipeline`).

    Examples
    --------
    One class in the training rows gives a constant model:

    >>> fit = fit_batch(np.zeros((4, 2)), np.array([1, 1, 1, 1]), TrainerSettings(holdout=0.5))
    >>> type(fit.model).__name__, fit.model.predict(np.ones((2, 2))).tolist()
    ('DummyClassifier', [1, 1])
    >>> fit_batch(np.zeros((3, 2)), np.zeros(2), TrainerSettings())
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: y: expected shape (3,) to match X, got (2,)
    """
    X = _checked_input(X, kinds)
    y = np.asarray(y)
    n_rows = X.shape[0]
    if y.shape != (n_rows,):
        raise InputError(f"y: expected shape ({n_rows},) to match X, got {y.shape}")
    train_index, holdout_index = split_holdout(n_rows, settings.holdout, settings.seed)
    X_train = X.iloc[train_index] if kinds is not None else X[train_index]
    y_train = y[train_index]
    classes = np.unique(y_train)
    if task == "classification" and classes.size < 2:
        from sklearn.dummy import DummyClassifier

        label = classes[0].item() if isinstance(classes[0], np.generic) else classes[0]  # np.bool_ is refused
        model = DummyClassifier(strategy="constant", constant=label)
    else:
        model = build_estimator(settings, task) if kinds is None else build_pipeline(settings, task, kinds)
    model.fit(X_train, y_train)
    misclassified_index = np.flatnonzero(np.asarray(model.predict(X)) != y)
    return FitResult(model, train_index, holdout_index, misclassified_index, n_rows)


def _checked_input(X, kinds: Mapping[str, str] | None):
    """A finite 2-D float array, or (with ``kinds``) the DataFrame of those features."""
    if kinds is not None:
        missing = [name for name in kinds if name not in X.columns]
        if missing or len(X) == 0:
            raise InputError(f"X: expected a non-empty DataFrame with the features {', '.join(kinds)}")
        return X.loc[:, list(kinds)].reset_index(drop=True)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"X: expected a non-empty 2-D array (n, d), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise InputError("X: expected finite values, found NaN or infinity")
    return X


#: The parameters every training project's ``train`` entry point takes (the custom-trainer contract).
REQUIRED_PARAMETERS = ("data", "target", "features")


def project_parameters(settings: TrainerSettings, *, data, target: str, features: Sequence[str],
                       task: str = "classification", declared: Sequence[str] | None = None) -> dict[str, str]:
    """The MLproject ``train`` parameters that make the project fit ``settings`` on ``data``.

    ``data`` is the directory holding the training rows as ``data.parquet``. ``declared``: the
    parameters the project's entry point declares (MLflow appends any other one to the command
    as ``--name value``, which a strict trainer refuses); ``None`` passes everything.

    >>> p = project_parameters(TrainerSettings(), data="/tmp/x", target="label", features=["a", "b"])
    >>> p["max_depth"], p["features"], p["alpha"], p["task"]
    ('0', 'a,b', '0.0001', 'classification')
    >>> sorted(project_parameters(TrainerSettings(), data="/d", target="y", features=["a"], declared=["seed"]))
    ['data', 'features', 'seed', 'target']
    """
    params = {"data": str(data), "target": target, "features": ",".join(features), "task": task}
    for key, value in asdict(settings).items():
        if key != "holdout":   # the lifecycle withholds the held-out rows itself
            params[key] = "0" if key == "max_depth" and value is None else str(value)
    if declared is not None:
        params = {k: v for k, v in params.items() if k in REQUIRED_PARAMETERS or k in declared}
    return params


# --------------------------------------------------------------------------------------------
# Command line: python -m cara_mlflow.train --data DIR ... (DIR holds data.parquet)
# --------------------------------------------------------------------------------------------


class _UsageError(Exception):
    """A bad argument or batch: reported as one line on stderr, exit code 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage and exit 2
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m cara_mlflow.train",
                description="Train the default model on one batch and log it to the active MLflow run.")
    p.add_argument("--data", required=True, help="a directory (or s3://, gs://, abfs:// folder) holding the "
                   "training rows as data.parquet "
                   "(or data.csv, as a batch directory STORE/batches/<id>)")
    p.add_argument("--target", default="label", help="the label column")
    p.add_argument("--features", default="", help="comma-separated; empty = every column but the target")
    p.add_argument("--task", default="auto", choices=("auto", *TASKS), help="auto: inferred from the target")
    p.add_argument("--model", default="rf", help=f"one of {', '.join(MODEL_NAMES)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-estimators", type=int, default=100)
    p.add_argument("--max-depth", type=int, default=0, help="0 = unlimited")
    p.add_argument("--alpha", type=float, default=1e-4)
    return p


def _training_rows(data: str, target: str, features_text: str):
    """(frame of the features, y) from ``DATA/data.parquet`` (or ``data.csv``)."""
    import pandas as pd

    from .store.location import remote_errors, store_root
    from .store.tables import opened

    try:
        directory = store_root(data) if "://" in data else Path(data)   # a URI: a folder on the store's object store
        found = [directory / f"data.{fmt}" for fmt in ("parquet", "csv") if (directory / f"data.{fmt}").is_file()]
        if not found:
            raise _UsageError(f"--data: no data.parquet or data.csv in {data!r}")
        with remote_errors(directory), opened(found[0]) as source:
            frame = pd.read_parquet(source) if found[0].suffix == ".parquet" else pd.read_csv(source)
    except CaraError as exc:   # an object store unreachable or refusing: one line, as every error of ours
        raise _UsageError(f"--data: {exc.line()}") from None
    if target not in frame.columns:
        raise _UsageError(f"--target: {found[0]} has no column {target!r}")
    names = [n.strip() for n in features_text.split(",")] if features_text.strip() else None
    if names is not None and not all(names):
        raise _UsageError(f"--features: empty column name in {features_text!r} (expected a,b,c)")
    try:
        features = select_features(list(frame.columns), target, names)
        kinds = infer_kinds(frame, features)
    except InputError as exc:
        raise _UsageError(str(exc)) from None
    return frame.loc[:, list(features)], frame[target].to_numpy(), kinds


def _run(argv: list[str] | None) -> None:
    args = _parser().parse_args(argv)
    if args.max_depth < 0:
        raise _UsageError(f"--max-depth: expected 0 (unlimited) or an integer >= 1, got {args.max_depth}")
    try:
        settings = TrainerSettings(model=args.model, seed=args.seed, holdout=0.0,
                                   n_estimators=args.n_estimators, max_depth=args.max_depth or None,
                                   alpha=args.alpha)
    except InputError as exc:  # "field: ..." -> "--field: ..."
        raise _UsageError("--" + str(exc).replace("_", "-", 1)) from None
    frame, y, kinds = _training_rows(args.data, args.target, args.features)
    task = infer_task(y)[0] if args.task == "auto" else args.task
    try:
        fit = fit_batch(frame, y, settings, task=task, kinds=kinds)
    except (InputError, ValueError) as exc:
        raise _UsageError(f"{args.data}: {' '.join(str(exc).split())}") from None

    from .tracking.training import log_model_run

    try:
        model_uri = log_model_run(fit.model, frame, settings, task)   # attaches to the project run
    except CaraError as exc:
        raise _UsageError(exc.line()) from None
    # Said only when run by hand: under a step (which sets STEP_PID_ENV) stdout is one line per
    # batch and stderr stays empty unless something is wrong, so cron mails only failures.
    if not os.environ.get(STEP_PID_ENV):
        print(f"cara_mlflow.train: {fit.n_rows} rows, {task}, model {model_uri}", file=sys.stderr)


def _die_with_the_step() -> None:
    import threading
    import time

    pid = os.environ.get(STEP_PID_ENV, "")
    if not pid.isdigit():
        return

    def watch():
        while True:
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                os._exit(137)
            except OSError:         # alive but not ours to signal: nothing to watch
                return
            time.sleep(0.1)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m cara_mlflow.train`` (the MLproject ``train`` command).

    Reads the training rows from ``--data DIR`` (``DIR/data.parquet``), fits them with the
    settings given and logs the model inside ``mlflow.start_run()``, which attaches to the
    project run. A bad argument or file prints one line on stderr and exits 1.
    """
    _die_with_the_step()
    try:
        _run(argv)
    except _UsageError as exc:
        message = " ".join(str(exc).split())
        print(f"cara_mlflow.train: error: {message}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
