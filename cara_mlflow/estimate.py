"""Ψ̄ before the labels: the model's expected loss at the batch's points, estimated from its outputs.

Ψ's first term needs the losses ℓ(M, x, y) of the batch's rows, hence their labels. Before the
labels land, a :class:`LossEstimator` stands in: a small *direct-loss model* fitted on rows whose
labels are known and that the model did not train on (the *reference*), mapping a row's kernel
coordinates and what the model says there (its confidence max_c p(c | x) when it gives class
probabilities, its prediction when that is a number) to the loss the model made. It serves
classification and regression, and any loss. Under covariate shift it carries the model's loss
in each region of the inputs, as the latest labelled data showed it, to where the queries are now.

The model is gradient-boosted trees (scikit-learn's ``HistGradientBoostingRegressor``, 100 trees
of depth 3, no early stopping, seeded); its trees are kept as JSON numbers
(:meth:`LossEstimator.to_dict`) and evaluated here, so the estimator is stored with its
provenance and never pickled.

**What no estimator sees**: a change of the labels with the inputs unchanged (concept drift,
CovCon's flips). The model's outputs at the queries are those of before, so the estimate is the
loss of before. Only the realized Ψ̄, once the labels land, shows it.

>>> rng = np.random.default_rng(0)
>>> X = rng.uniform(size=(2000, 1))
>>> losses = (rng.uniform(size=2000) < X[:, 0] / 2).astype(float)   # errors grow with x
>>> est = LossEstimator.fit(points=X, confidence=None, predictions=None, losses=losses,
...                         provenance={"version": 3})
>>> [round(float(v), 1) for v in est.expected_losses(np.array([[0.1], [0.9]]), None, None)]
[0.1, 0.4]
>>> LossEstimator.from_dict(est.to_dict()) == est
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .errors import InputError
from .staleness import psi_from_losses

__all__ = ["REFERENCE_ROWS", "TREES", "LossEstimator", "model_outputs", "reference_rows",
           "estimated_psi_now"]

#: At most this many reference rows fit an estimator (a seeded sample of more).
REFERENCE_ROWS = 20_000
#: The direct-loss model's settings (fixed: a re-fit on the same rows gives the same trees).
TREES = {"max_iter": 100, "max_depth": 3, "learning_rate": 0.1, "early_stopping": False, "random_state": 0}
_KIND = "direct-loss"


def _dense(points) -> np.ndarray:
    return np.asarray(points.toarray() if hasattr(points, "toarray") else points, dtype=np.float64)


def _numeric(predictions) -> np.ndarray | None:
    """The predictions as floats, when they are numbers (a regressor's); None for labels."""
    if predictions is None:
        return None
    values = np.asarray(predictions)
    return values.astype(np.float64) if values.dtype.kind in "fiu" else None


def _inputs(points, confidence, predictions, columns: Mapping[str, bool]) -> np.ndarray:
    """The estimator's input columns: kernel coordinates, then confidence and prediction if used."""
    parts = [_dense(points)]
    for name, values in (("confidence", confidence), ("prediction", _numeric(predictions))):
        if columns[name]:
            if values is None:
                raise InputError(f"loss estimator: fitted with the model's {name}, which it does not give here")
            parts.append(np.asarray(values, dtype=np.float64).reshape(-1, 1))
    return np.hstack(parts)


def model_outputs(model, inputs) -> tuple[np.ndarray, np.ndarray | None]:
    """The model's predictions for ``inputs`` and its confidence max_c p(c | x) (None when it
    gives no class probabilities: ``predict_proba`` absent, or returning None).

    >>> from sklearn.linear_model import LogisticRegression
    >>> m = LogisticRegression().fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    >>> predictions, confidence = model_outputs(m, np.array([[0.0], [1.0]]))
    >>> predictions.tolist(), confidence.round(2).tolist()
    ([0, 1], [0.56, 0.56])
    """
    predictions = np.asarray(model.predict(inputs))
    proba = getattr(model, "predict_proba", None)
    probabilities = None if proba is None else proba(inputs)
    if probabilities is None:
        return predictions, None
    return predictions, np.asarray(probabilities, dtype=np.float64).max(axis=1)


def reference_rows(n_rows: int, seed) -> np.ndarray:
    """The rows (sorted) that fit an estimator: all, or a seeded sample of :data:`REFERENCE_ROWS`.

    >>> reference_rows(5, seed=0).tolist(), len(reference_rows(50_000, seed=0))
    ([0, 1, 2, 3, 4], 20000)
    """
    if n_rows <= REFERENCE_ROWS:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(np.random.SeedSequence(seed)).choice(n_rows, REFERENCE_ROWS,
                                                                                replace=False))


@dataclass(frozen=True)
class LossEstimator:
    """The expected loss of one model at a row, from the row and the model's outputs there.

    ``params``: the fitted trees and which inputs they take (JSON); ``provenance``: where it was
    fitted (the model version, the reference batches), with ``rows`` and ``fit_error``, the mean
    absolute difference between the estimated and the observed mean loss over 10 equal-count
    bins of the estimate on the reference (its calibration there, not its error on new data).
    """

    kind: str
    params: Mapping[str, Any]
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, *, points, confidence: np.ndarray | None, predictions, losses: np.ndarray,
            provenance: Mapping[str, Any] | None = None) -> "LossEstimator":
        """Fit on reference rows: their kernel coordinates ``points``, the model's ``confidence``
        (None without probabilities) and ``predictions``, and the observed ``losses``."""
        from sklearn.ensemble import HistGradientBoostingRegressor

        losses = np.asarray(losses, dtype=np.float64)
        if losses.size < 2:
            raise InputError(f"loss estimator: {losses.size} reference row(s) with labels; it needs at least 2")
        columns = {"confidence": confidence is not None, "prediction": _numeric(predictions) is not None}
        X = _inputs(points, confidence, predictions, columns)
        trees = HistGradientBoostingRegressor(**TREES).fit(X, losses)
        upper = 1.0 if np.isin(losses, (0.0, 1.0)).all() else None      # a 0-1 loss is at most 1
        params = {"columns": columns, "n_inputs": X.shape[1], "upper": upper, **_tree_params(trees)}
        fitted = np.clip(_evaluate(params, X), 0.0, np.inf if upper is None else upper)
        return cls(_KIND, params, {**(provenance or {}), "rows": int(losses.size),
                                   "fit_error": _binned_error(fitted, losses)})

    def expected_losses(self, points, confidence: np.ndarray | None, predictions) -> np.ndarray:
        """The expected loss at each row (``points``: kernel coordinates; the model's outputs there)."""
        X = _inputs(points, confidence, predictions, self.params["columns"])
        if X.shape[1] != self.params["n_inputs"]:
            raise InputError(f"loss estimator: fitted on {self.params['n_inputs']} inputs, given {X.shape[1]}")
        upper = self.params["upper"]
        return np.clip(_evaluate(self.params, X), 0.0, np.inf if upper is None else upper)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "params": dict(self.params), "provenance": dict(self.provenance)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LossEstimator":
        if not isinstance(data, Mapping) or data.get("kind") != _KIND or not isinstance(data.get("params"), Mapping):
            raise InputError(f"loss estimator: expected kind {_KIND!r} and its params; got {data!r:.80}")
        return cls(data["kind"], dict(data["params"]), dict(data.get("provenance") or {}))


_NODE_FIELDS = ("value", "feature_idx", "num_threshold", "missing_go_to_left", "left", "right", "is_leaf")


def _tree_params(trees) -> dict:
    """A fitted regressor's trees as lists of numbers (one list per node field)."""
    nodes = [predictor[0].nodes for predictor in trees._predictors]
    return {"baseline": float(np.ravel(trees._baseline_prediction)[0]),
            "trees": [{name: tree[name].tolist() for name in _NODE_FIELDS} for tree in nodes]}


def _evaluate(params: Mapping[str, Any], X: np.ndarray) -> np.ndarray:
    """baseline + Σ_trees leaf value, every row walked down each tree at once (depth steps)."""
    out = np.full(X.shape[0], params["baseline"], dtype=np.float64)
    rows = np.arange(X.shape[0])
    for tree in params["trees"]:
        leaf, feature = np.asarray(tree["is_leaf"], dtype=bool), np.asarray(tree["feature_idx"], dtype=np.int64)
        threshold, nan_left = np.asarray(tree["num_threshold"]), np.asarray(tree["missing_go_to_left"], dtype=bool)
        left, right = np.asarray(tree["left"], dtype=np.int64), np.asarray(tree["right"], dtype=np.int64)
        node = np.zeros(X.shape[0], dtype=np.int64)
        while not leaf[node].all():
            x = X[rows, feature[node]]
            go_left = np.where(np.isnan(x), nan_left[node], x <= threshold[node])
            node = np.where(leaf[node], node, np.where(go_left, left[node], right[node]))
        out += np.asarray(tree["value"])[node]
    return out


def _binned_error(fitted: np.ndarray, losses: np.ndarray, bins: int = 10) -> float:
    """Mean |estimated − observed| mean loss over ``bins`` equal-count bins of the estimate."""
    parts = np.array_split(np.argsort(fitted, kind="stable"), min(bins, fitted.size))
    return float(np.mean([abs(fitted[i].mean() - losses[i].mean()) for i in parts]))


def estimated_psi_now(queries, points, expected_losses: np.ndarray, gamma: float, *, scale: str,
                      method: str = "exact", seed=0) -> float:
    """Ψ's first term with each point's estimated loss in place of its loss: the batch's points
    are ``points`` (the queries themselves when no unlabelled data came with them).

    >>> Q = np.zeros((1, 1))
    >>> estimated_psi_now(Q, Q, np.array([0.25]), 1.0, scale="expected-loss")
    0.25
    """
    return psi_from_losses(queries, points, np.asarray(expected_losses, dtype=np.float64), gamma,
                           method=method, seed=seed, scale=scale)
