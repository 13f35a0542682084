"""The default trainer behind the MLproject ``train`` entry point.

Two layers. The pure one — :class:`TrainerSettings`, :func:`split_holdout`,
:func:`build_estimator`, :func:`fit_batch` — trains one model on one batch and says which rows
of the batch it gets wrong; ``tune`` uses it in-process for its offline models. The command
line — :func:`main`, ``python -m cara_mlflow.train`` — runs inside the MLflow Project run started
by the lifecycle (``env_manager="local"``) and logs through
:func:`cara_mlflow.tracking.training.log_training` (this module never imports mlflow), recording,
with the model, everything the lifecycle reads back:

========================================  ===================================================
run tag ``cara.model_uri``                 the logged model's URI (``models:/m-...``)
run tag ``cara.trained_on``                the batch id, without zero padding
dataset input ``batch-<id>``               the training batch (context ``training``)
artifact ``cara/misclassified.parquet``    rows of the batch the model gets wrong: ``row``,
                                           the features in order, the target
artifact ``cara/training.json``            batch, n_rows, features, target, holdout_index,
                                           n_misclassified, settings
params                                     the settings fields and ``batch``
metrics                                    ``n_rows``, ``n_misclassified``,
                                           ``train_error_rate``, ``holdout_accuracy``
========================================  ===================================================

The misclassified rows and ``n_rows`` are what the staleness cost's second term needs from the
model's own batch, so old batches may be deleted once their model is logged.

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
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import CaraError, InputError
from .names import MODEL_NAMES, STEP_PID_ENV

__all__ = [
    "MODEL_NAMES",
    "TrainerSettings",
    "split_holdout",
    "build_estimator",
    "FitResult",
    "fit_batch",
    "project_parameters",
    "log_training",
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
        ``"rf"``: ``RandomForestClassifier(n_estimators, max_depth, random_state=seed)``;
        ``"lr"``: ``SGDClassifier(loss="log_loss", alpha, random_state=seed)``.
    seed : int
        Seeds the estimator and the holdout split; ``>= 0``.
    holdout : float
        Fraction of the batch held out of training (for the promotion gate); ``0 <= holdout < 1``.
    n_estimators : int
        Trees of the random forest; ``>= 1``.
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


def build_estimator(settings: TrainerSettings):
    """The unfitted scikit-learn estimator ``settings`` describes.

    >>> build_estimator(TrainerSettings(n_estimators=5, max_depth=3))
    RandomForestClassifier(max_depth=3, n_estimators=5, random_state=0)
    >>> build_estimator(TrainerSettings(model="lr", seed=1))
    SGDClassifier(loss='log_loss', random_state=1)
    """
    if settings.model == "rf":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(
            n_estimators=settings.n_estimators, max_depth=settings.max_depth, random_state=settings.seed
        )
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(loss="log_loss", alpha=settings.alpha, random_state=settings.seed)


@dataclass(frozen=True)
class FitResult:
    """A model fitted on one batch, and what it gets wrong there.

    Attributes
    ----------
    model : estimator
        The fitted estimator; a ``DummyClassifier(strategy="constant")`` when the training rows
        hold a single class (scikit-learn classifiers refuse one class).
    train_index, holdout_index : ndarray of int
        The sorted rows of the batch trained on and held out (:func:`split_holdout`).
    misclassified_index : ndarray of int
        The sorted rows of the whole batch (trained on and held out) the model gets wrong.
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


def fit_batch(X, y, settings: TrainerSettings) -> FitResult:
    """Fit the model ``settings`` describe on the training rows of one batch ``(X, y)``.

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
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"X: expected a non-empty 2-D array (n, d), got shape {X.shape}")
    n_rows = X.shape[0]
    if y.shape != (n_rows,):
        raise InputError(f"y: expected shape ({n_rows},) to match X, got {y.shape}")
    if not np.isfinite(X).all():
        raise InputError("X: expected finite values, found NaN or infinity")
    train_index, holdout_index = split_holdout(n_rows, settings.holdout, settings.seed)
    X_train, y_train = X[train_index], y[train_index]
    classes = np.unique(y_train)
    if classes.size < 2:
        from sklearn.dummy import DummyClassifier

        label = classes[0].item() if isinstance(classes[0], np.generic) else classes[0]  # np.bool_ is refused
        model = DummyClassifier(strategy="constant", constant=label)
    else:
        model = build_estimator(settings)
    model.fit(X_train, y_train)
    misclassified_index = np.flatnonzero(model.predict(X) != y)
    return FitResult(model, train_index, holdout_index, misclassified_index, n_rows)


def project_parameters(settings: TrainerSettings, *, data, target: str,
                       features: Sequence[str] | None = None) -> dict[str, str]:
    """The MLproject ``train`` parameters that make the project fit ``settings`` on ``data``.

    >>> p = project_parameters(TrainerSettings(), data="/s/batches/7", target="label", features=["a", "b"])
    >>> p["max_depth"], p["features"], p["alpha"]
    ('0', 'a,b', '0.0001')
    """
    params = {"data": str(data), "target": target, "features": ",".join(features or ())}
    for key, value in asdict(settings).items():
        params[key] = "0" if key == "max_depth" and value is None else str(value)
    return params


def log_training(fit: FitResult, batch, settings: TrainerSettings) -> str:
    """Log ``fit`` (trained on ``batch`` with ``settings``) to the active MLflow run; return the
    logged model's URI. The MLflow side lives in :func:`cara_mlflow.tracking.training.log_training`
    (the one package that imports mlflow); this name stays for projects that copy this trainer."""
    from .tracking.training import log_training as log

    return log(fit, batch, settings)


# --------------------------------------------------------------------------------------------
# Command line: python -m cara_mlflow.train --data STORE/batches/<id> ...
# --------------------------------------------------------------------------------------------


class _UsageError(Exception):
    """A bad argument or batch: reported as one line on stderr, exit code 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage and exit 2
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m cara_mlflow.train",
                description="Train the default model on one batch and log it to the active MLflow run.")
    p.add_argument("--data", required=True, help="the batch directory STORE/batches/<id>")
    p.add_argument("--target", default="label", help="the label column")
    p.add_argument("--model", default="rf", help=f"one of {', '.join(MODEL_NAMES)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout", type=float, default=0.2, help="fraction held out of training")
    p.add_argument("--n-estimators", type=int, default=100)
    p.add_argument("--max-depth", type=int, default=0, help="0 = unlimited")
    p.add_argument("--alpha", type=float, default=1e-4)
    p.add_argument("--features", default="", help="comma-separated; empty = every column but the target")
    return p


def _batch_location(data: str) -> tuple[Path, int]:
    """``STORE/batches/<id>`` -> (STORE, id)."""
    directory = Path(data)
    if not directory.is_dir():
        raise _UsageError(f"--data: no batch directory at {data!r} (expected STORE/batches/<id>)")
    directory = Path(os.path.abspath(directory))  # not resolve(): a symlinked batch stays in its store
    if not re.fullmatch(r"[0-9]+", directory.name) or directory.parent.name != "batches":
        raise _UsageError(f"--data: {str(directory)!r} is not a batch directory (expected STORE/batches/<id>)")
    return directory.parent.parent, int(directory.name)


def _features(text: str) -> list[str] | None:
    if not text.strip():
        return None
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise _UsageError(f"--features: empty column name in {text!r} (expected a,b,c)")
    return names


def _run(argv: list[str] | None) -> None:
    args = _parser().parse_args(argv)
    if args.max_depth < 0:
        raise _UsageError(f"--max-depth: expected 0 (unlimited) or an integer >= 1, got {args.max_depth}")
    try:
        settings = TrainerSettings(model=args.model, seed=args.seed, holdout=args.holdout,
                                   n_estimators=args.n_estimators, max_depth=args.max_depth or None,
                                   alpha=args.alpha)
    except InputError as exc:  # "field: ..." -> "--field: ..."
        raise _UsageError("--" + str(exc).replace("_", "-", 1)) from None
    root, batch_id = _batch_location(args.data)
    features = _features(args.features)

    from .store import BatchStore

    try:
        batch = BatchStore(root).read(batch_id, target=args.target, features=features)
        fit = fit_batch(batch.X, batch.y, settings)
    except InputError as exc:
        raise _UsageError(f"batch {batch_id} in {root}: {exc}") from None

    from .tracking.training import log_project_run

    try:
        model_uri = log_project_run(fit, batch, settings)   # attaches to the project run (MLFLOW_RUN_ID)
    except CaraError as exc:
        raise _UsageError(exc.line()) from None
    # stderr: the parent step's stdout is one line per batch, for cron logs and --json.
    print(f"cara_mlflow.train: batch {batch_id}: {fit.n_rows} rows, {fit.misclassified_index.size} "
          f"misclassified, model {model_uri}", file=sys.stderr)


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

    Reads batch ``<id>`` of the store ``STORE`` from ``--data STORE/batches/<id>``, fits it with
    the settings given and logs it with :func:`log_training` inside ``mlflow.start_run()``, which
    attaches to the project run. A bad argument or batch prints one line on stderr and exits 1.
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
