"""Per-sample losses ℓ(y_true, y_pred): the built-in ones and a user's ``module:function``.

A loss is stored in the policy document by *name*, never as code: ``zero_one`` (classification,
the paper's Eq. 16), ``squared`` and ``absolute`` (regression), or the import path
``package.module:function`` of a user's vectorised function ``f(y_true, y_pred) -> losses``
(one finite loss >= 0 per sample). The same name resolves to the same function at ``tune`` and
at every ``step``.

>>> resolve_loss("absolute")(np.array([1.0, 2.0]), np.array([1.5, 2.0]))
array([0.5, 0. ])
>>> default_loss("regression"), default_loss("classification")
('squared', 'zero_one')
"""

from __future__ import annotations

import importlib
import re
from typing import Callable

import numpy as np

from .errors import InputError
from .names import TASKS

__all__ = ["LossFn", "LOSSES", "TASKS", "zero_one_loss", "squared_loss", "absolute_loss", "resolve_loss",
           "check_loss_name", "default_loss", "per_sample_losses"]

LossFn = Callable[[np.ndarray, np.ndarray], np.ndarray]



def zero_one_loss(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-sample 0-1 loss ``I(y_pred != y_true)`` (Eq. 16), as float64.

    >>> zero_one_loss(np.array([0, 1, 1]), np.array([0, 0, 1]))
    array([0., 1., 0.])
    >>> zero_one_loss(np.array(["a", "b"]), np.array(["a", "a"]))
    array([0., 1.])
    """
    return (np.asarray(y_true) != np.asarray(y_pred)).astype(np.float64)


def squared_loss(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-sample squared error ``(y_true - y_pred)²``, for regressors.

    >>> squared_loss(np.array([1.0, 2.0]), np.array([1.5, 2.0]))
    array([0.25, 0.  ])
    """
    diff = np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64).reshape(-1)
    return diff * diff


def absolute_loss(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-sample absolute error ``|y_true - y_pred|``, for regressors.

    >>> absolute_loss(np.array([1.0, 2.0]), np.array([0.5, 2.0]))
    array([0.5, 0. ])
    """
    return np.abs(np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64).reshape(-1))


#: Loss names users may type; ``module:function`` names a user's loss.
LOSSES: dict[str, LossFn] = {"zero_one": zero_one_loss, "squared": squared_loss, "absolute": absolute_loss}

_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def default_loss(task: str) -> str:
    """The loss a task gets unless ``--loss`` says otherwise."""
    return "zero_one" if task == "classification" else "squared"


def check_loss_name(name: object) -> str:
    """``name`` if it is a built-in loss or has the shape ``module:function`` (not imported here).

    >>> check_loss_name("pkg.mod:my_loss")
    'pkg.mod:my_loss'
    >>> check_loss_name("hinge")
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: loss: unknown loss 'hinge': expected zero_one, squared, absolute or module:function
    """
    if isinstance(name, str) and (name in LOSSES or _IMPORT_PATH.fullmatch(name)):
        return name
    raise InputError(f"loss: unknown loss {name!r}: expected {', '.join(LOSSES)} or module:function")


def resolve_loss(loss: str | LossFn) -> LossFn:
    """The loss function for a name (built-in or ``module:function``) or a callable.

    A user's module is imported from ``sys.path`` (the working directory of the command, and
    installed packages); a missing module or function is a one-line :class:`InputError`.

    >>> resolve_loss("zero_one") is zero_one_loss
    True
    >>> resolve_loss("numpy:subtract") is np.subtract
    True
    >>> resolve_loss("no_such_module_xyz:f")
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: loss: cannot import module 'no_such_module_xyz' of 'no_such_module_xyz:f' ...
    """
    if callable(loss):
        return loss
    name = check_loss_name(loss)
    if name in LOSSES:
        return LOSSES[name]
    module_name, function_name = name.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"loss: cannot import module {module_name!r} of {name!r} ({exc}); "
                         "install it or put it on PYTHONPATH") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise InputError(f"loss: module {module_name!r} has no function {function_name!r} (from {name!r})")
    return function


def per_sample_losses(loss_fn: LossFn, y_true, y_pred, where: str = "data") -> np.ndarray:
    """``loss_fn(y_true, y_pred)`` as a checked float64 vector: one finite loss >= 0 per sample.

    >>> per_sample_losses(squared_loss, np.array([1.0]), np.array([3.0]))
    array([4.])
    >>> per_sample_losses(lambda t, p: t - p, np.array([0.0]), np.array([1.0]))
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: loss <lambda>: returned negative or non-finite values on data; expected losses >= 0
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_pred.ndim == 2 and y_pred.shape[1] == 1:   # pyfunc regressors may answer a column
        y_pred = y_pred[:, 0]
    name = _name_of(loss_fn)
    try:
        values = np.asarray(loss_fn(y_true, y_pred), dtype=np.float64).reshape(-1)
    except Exception as exc:        # a user's function: its failure is bad input, said in one line
        first = (str(exc).splitlines() or [""])[0][:200]
        raise InputError(f"loss {name}: failed on {where} ({type(exc).__name__}: {first}); expected a vectorised "
                         "f(y_true, y_pred) returning one loss per sample") from None
    if values.shape[0] != y_true.shape[0]:
        raise InputError(f"loss {name}: returned {values.shape[0]} values for {where} of {y_true.shape[0]} rows; "
                         "expected one loss per sample")
    if not np.isfinite(values).all() or (values < 0).any():
        raise InputError(f"loss {name}: returned negative or non-finite values on {where}; expected losses >= 0")
    return values


def _name_of(loss_fn: LossFn) -> str:
    """``module:function`` of a loss, as ``--loss`` names it (a lambda's name is ``<lambda>``)."""
    module, name = getattr(loss_fn, "__module__", None), getattr(loss_fn, "__qualname__", repr(loss_fn))
    return f"{module}:{name}" if module and module != __name__ else name
