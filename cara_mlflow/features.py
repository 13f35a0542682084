"""Features, their kinds, the task, and the kernel space Ψ̄ measures in — all fixed at ``tune``.

Models see the feature columns as they are (a pandas DataFrame, original dtypes). Ψ̄'s RBF
kernel needs numbers on a common scale, so each feature is put in the **kernel space**
(:class:`FeatureSpace`, fitted on the offline window and stored in the policy):

* a numeric or boolean feature ``x`` becomes ``(x − mean) / std`` (mean and standard deviation
  over the offline window; a constant feature is only centred), so one unit is one standard
  deviation whatever the feature's unit;
* a string (categorical) feature becomes one coordinate per category seen in the offline window
  (the :data:`MAX_CATEGORIES` most frequent), worth ``1/√2`` for its category and 0 elsewhere:
  two different categories are at distance 1, one standard deviation; a category never seen at
  ``tune`` (or a missing value) is the zero vector, at distance ``1/√2`` from every known one.

The ``raw`` scaling keeps numbers as they are (categoricals one-hot at 1): the space of the
paper's reproduction and of policies tuned before features had kinds.

>>> import pandas as pd
>>> frame = pd.DataFrame({"t": [10.0, 20.0, 30.0], "day": ["Mon", "Tue", "Mon"], "ok": [True, False, True]})
>>> kinds = infer_kinds(frame, ("t", "day", "ok"))
>>> kinds
{'t': 'numeric', 'day': 'categorical', 'ok': 'boolean'}
>>> space = FeatureSpace.fit(frame, kinds)
>>> space.columns
('t', 'day=Mon', 'day=Tue', 'ok')
>>> space.transform(frame).round(3)
array([[-1.225,  0.707,  0.   ,  0.707],
       [ 0.   ,  0.   ,  0.707, -1.414],
       [ 1.225,  0.707,  0.   ,  0.707]])
>>> FeatureSpace.from_dict(space.to_dict()) == space
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import InputError

__all__ = ["KINDS", "SCALINGS", "MAX_CATEGORIES", "kind_of", "infer_kinds", "select_features", "infer_task",
           "FeatureSpace"]

KINDS = ("numeric", "boolean", "categorical")
SCALINGS = ("standard", "raw")

#: Categories of one feature kept in the kernel space (the most frequent in the offline window):
#: more distinct strings than this is an identifier, not a category (``--exclude`` it).
MAX_CATEGORIES = 100

_ONE_HOT = {"standard": np.sqrt(0.5), "raw": 1.0}


def kind_of(dtype) -> str | None:
    """``numeric``, ``boolean`` or ``categorical`` for a column's dtype; ``None`` if none fits.

    >>> kind_of(np.dtype("int64")), kind_of(np.dtype(bool)), kind_of(np.dtype(object))
    ('numeric', 'boolean', 'categorical')
    >>> kind_of(np.dtype("datetime64[ns]")) is None
    True
    """
    api = pd.api.types
    if api.is_bool_dtype(dtype):
        return "boolean"
    if api.is_numeric_dtype(dtype) and not api.is_complex_dtype(dtype) and not api.is_timedelta64_dtype(dtype):
        return "numeric"
    if (api.is_object_dtype(dtype) or api.is_string_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype)):
        return "categorical"
    return None


def infer_kinds(frame: pd.DataFrame, features: Sequence[str]) -> dict[str, str]:
    """Each feature's kind from its dtype in ``frame``; a one-line error for a column of no kind."""
    kinds = {}
    for name in features:
        kind = kind_of(frame[name].dtype)
        if kind is None:
            raise InputError(f"feature {name!r} has type {frame[name].dtype}; expected numbers, booleans or "
                             f"text: convert it, or leave it out with --exclude {name}")
        kinds[name] = kind
    return kinds


def select_features(columns: Sequence[str], target: str, features: Sequence[str] | None = None,
                    exclude: Sequence[str] = ()) -> tuple[str, ...]:
    """The feature columns: ``features`` if given, else every column but the target, minus ``exclude``.

    >>> select_features(["id", "a", "b", "label"], "label", exclude=["id"])
    ('a', 'b')
    >>> select_features(["a", "label"], "label", features=["a", "c"])
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: --features: column 'c' is not in the batch (columns: a, label)
    """
    columns = [str(c) for c in columns]
    for option, names in (("--features", features or ()), ("--exclude", exclude)):
        missing = [n for n in names if n not in columns]
        if missing:
            raise InputError(f"{option}: column {missing[0]!r} is not in the batch (columns: {', '.join(columns)})")
    if features and target in features:
        raise InputError(f"--features: {target!r} is the target; a column is a feature or the target")
    if features and len(set(features)) != len(features):
        raise InputError("--features: a column is listed twice")
    chosen = [c for c in (features or columns) if c != target and c not in set(exclude)]
    if not chosen:
        raise InputError(f"features: none left (target {target!r}, excluded {', '.join(exclude) or 'none'}); "
                         "expected at least one feature column")
    return tuple(chosen)


def infer_task(y) -> tuple[str, str]:
    """(``classification`` | ``regression``, why) from the target's values.

    Text, booleans and integers with at most 20 distinct values are labels; numbers with a
    fractional part, or integers with more distinct values, are a quantity to regress.

    >>> infer_task(np.array(["a", "b"]))[0], infer_task(np.array([0.5, 1.25]))[0], infer_task(np.arange(3))[0]
    ('classification', 'regression', 'classification')
    """
    y = pd.Series(np.asarray(y))
    if kind_of(y.dtype) != "numeric":
        return "classification", f"{y.dtype} labels"
    values = y.to_numpy(dtype=np.float64)
    distinct = int(pd.unique(values).size)
    if not np.all(values == np.round(values)):
        return "regression", f"numbers with fractions, {distinct} distinct values"
    if distinct <= 20:
        return "classification", f"{distinct} distinct integer labels"
    return "regression", f"integers with {distinct} distinct values"


def _categories(column: pd.Series) -> tuple[str, ...]:
    counts = column.dropna().astype(str).value_counts(sort=False)
    top = counts.sort_values(ascending=False, kind="stable").index[:MAX_CATEGORIES]
    return tuple(sorted(top))


@dataclass(frozen=True)
class FeatureSpace:
    """Where Ψ̄'s kernel measures: per feature its kind, centre and scale, or its categories.

    Built by :meth:`fit` (on the offline window, at ``tune``) or :meth:`from_dict` (the policy
    document); :meth:`transform` maps a frame of the features to float64 coordinates.
    """

    features: tuple[str, ...]
    kinds: tuple[str, ...]
    scaling: str
    center: tuple[float, ...]
    scale: tuple[float, ...]
    categories: tuple[tuple[str, ...], ...]

    def __post_init__(self):
        n = len(self.features)
        if not (len(self.kinds) == len(self.center) == len(self.scale) == len(self.categories) == n):
            raise InputError("feature space: features, kinds, center, scale and categories differ in length")
        if any(k not in KINDS for k in self.kinds) or self.scaling not in SCALINGS:
            raise InputError(f"feature space: kinds must be in {KINDS} and scaling in {SCALINGS}")
        if not all(np.isfinite(self.center)) or not all(np.isfinite(s) and s > 0 for s in self.scale):
            raise InputError("feature space: center must be finite and scale finite and > 0")

    @classmethod
    def fit(cls, frame: pd.DataFrame, kinds: Mapping[str, str], scaling: str = "standard") -> "FeatureSpace":
        """The space of ``frame``'s features (``kinds`` in order), scaled as ``scaling`` says."""
        center, scale, categories = [], [], []
        for name, kind in kinds.items():
            mean, std, cats = 0.0, 1.0, ()
            if kind == "categorical":
                cats = _categories(frame[name])
            elif scaling == "standard":
                values = frame[name].to_numpy(dtype=np.float64)
                mean, std = float(values.mean()), float(values.std())
            center.append(mean)
            scale.append(std if std > 0 and np.isfinite(std) else 1.0)
            categories.append(cats)
        return cls(tuple(kinds), tuple(kinds.values()), scaling, tuple(center), tuple(scale), tuple(categories))

    @classmethod
    def numeric(cls, features: Sequence[str]) -> "FeatureSpace":
        """Numeric features as they are: the space of a policy tuned before features had kinds."""
        n = len(features)
        return cls(tuple(features), ("numeric",) * n, "raw", (0.0,) * n, (1.0,) * n, ((),) * n)

    @property
    def kind_of(self) -> dict[str, str]:
        """``{feature: kind}``, in order."""
        return dict(zip(self.features, self.kinds))

    @property
    def columns(self) -> tuple[str, ...]:
        """The coordinates' names: a feature, or ``feature=category``."""
        return tuple(name for f, kind, cats in zip(self.features, self.kinds, self.categories)
                     for name in ([f"{f}={c}" for c in cats] if kind == "categorical" else [f]))

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """The kernel-space coordinates of ``frame``'s rows (C-ordered float64, filled in place:
        a read holds one copy of them)."""
        widths = [len(cats) if kind == "categorical" else 1 for kind, cats in zip(self.kinds, self.categories)]
        out = np.zeros((len(frame), sum(widths)))
        start = 0
        for name, kind, c, s, cats, width in zip(self.features, self.kinds, self.center, self.scale,
                                                 self.categories, widths):
            column = frame[name]
            if kind != "categorical":
                out[:, start] = column.to_numpy(dtype=np.float64)
                out[:, start] -= c
                out[:, start] /= s
            else:
                text = column.astype(str).where(column.notna())
                codes = pd.Index(list(cats)).get_indexer(text)          # -1: unseen at tune, or missing
                known = np.flatnonzero(codes >= 0)
                out[known, start + codes[known]] = _ONE_HOT[self.scaling]
            start += width
        return out

    def to_dict(self) -> dict:
        """The JSON form stored in the policy document."""
        return {"scaling": self.scaling,
                "features": [{"name": f, "kind": k, "center": c, "scale": s, "categories": list(cats)}
                             for f, k, c, s, cats in zip(self.features, self.kinds, self.center, self.scale,
                                                         self.categories)]}

    @classmethod
    def from_dict(cls, doc: Mapping) -> "FeatureSpace":
        """The space :meth:`to_dict` wrote (:class:`InputError` if it is not one)."""
        try:
            rows = list(doc["features"])
            return cls(tuple(str(r["name"]) for r in rows), tuple(r["kind"] for r in rows), doc["scaling"],
                       tuple(float(r["center"]) for r in rows), tuple(float(r["scale"]) for r in rows),
                       tuple(tuple(str(c) for c in r["categories"]) for r in rows))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"feature space: not a valid space ({type(exc).__name__}: {exc})") from None
