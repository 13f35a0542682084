"""A registered model as the lifecycle calls it: through MLflow's pyfunc, with a DataFrame.

Any flavour that loads as pyfunc works (a user's project may log what it likes). Models logged
before features had kinds were fitted on a bare float array and carry a tensor signature: they
are given the same columns as a float array, so old versions keep answering.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["Predictor", "load_predictor"]


#: Signature column types that take numbers of another width or kind: MLflow refuses int64 for
#: a double column and float64 for a long one, but a csv batch may give either for the same column.
_NUMBER_TYPES = {"double": np.float64, "float": np.float32, "long": np.int64, "integer": np.int32}


class Predictor:
    """``predict(frame)`` → a 1-D array of predictions (labels as the model returns them)."""

    def __init__(self, model):
        self._model = model
        schema = model.metadata.get_input_schema()
        self._tensor = bool(schema is not None and schema.is_tensor_spec())
        self._casts = {} if schema is None or self._tensor else {
            spec.name: _NUMBER_TYPES[_type_name(spec)] for spec in schema.inputs
            if spec.name is not None and _type_name(spec) in _NUMBER_TYPES}

    def _input(self, frame):
        if self._tensor and hasattr(frame, "to_numpy"):
            return frame.to_numpy(dtype=np.float64)
        changes = {name: dtype for name, dtype in self._casts.items()
                   if name in frame.columns and frame[name].dtype != dtype and _castable(frame[name], dtype)}
        return frame.astype(changes) if changes else frame

    def predict(self, frame) -> np.ndarray:
        """Predictions for ``frame``; a model that refuses its columns is a one-line :class:`InputError`."""
        from mlflow.exceptions import MlflowException

        try:
            out = self._model.predict(self._input(frame))
        except MlflowException as exc:      # schema enforcement: the message embeds the whole frame
            reason = _reason(exc.message)
            raise InputError(f"the model refused the batch's features ({reason}); compare the batch's columns "
                             "with the features it was trained on (cara-mlflow status --json)") from None
        if hasattr(out, "iloc"):            # a DataFrame or Series from a pyfunc model
            out = out.iloc[:, 0] if out.ndim == 2 else out
            out = out.to_numpy()
        out = np.asarray(out)
        return out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out


    def predict_proba(self, frame) -> np.ndarray | None:
        """Class probabilities for ``frame`` when the model behind pyfunc gives them (a scikit-learn
        classifier, say); None for a model that does not (a regressor, a flavour without a raw
        model). Only the estimate of Ψ̄ before labels asks; a model without them is estimated from
        its predictions and the features alone."""
        try:
            raw = self._model.get_raw_model()
        except Exception:       # MLflow raises for flavours that keep no raw model: no probabilities
            return None
        proba = getattr(raw, "predict_proba", None)
        return None if proba is None else np.asarray(proba(self._input(frame)), dtype=np.float64)


def load_predictor(model_uri: str, dst: str) -> Predictor:
    """The pyfunc model at ``model_uri`` (downloaded into ``dst``, which the caller cleans up)."""
    import mlflow.pyfunc

    return Predictor(mlflow.pyfunc.load_model(model_uri, dst_path=dst))


def _reason(message: str) -> str:
    """The reason in MLflow's schema error, without the frame it dumps: what follows its last ``Error:``.

    >>> _reason("Failed to enforce schema of data '  t\\n0 1'. Error: Model is missing inputs ['h'].")
    "Model is missing inputs ['h']."
    """
    text = str(message).strip()
    at = text.rfind("Error:")
    tail = text[at + len("Error:"):] if at >= 0 else text
    lines = [line.strip() for line in tail.strip().splitlines() if line.strip()]
    return (lines[0] if at >= 0 and lines else lines[-1] if lines else "no reason given")[:300]


def _type_name(spec) -> str:
    """``double``, ``long``, … of a column spec (``str()`` of MLflow's DataType is ``DataType.double``)."""
    return str(getattr(spec.type, "name", spec.type))


def _castable(column, dtype) -> bool:
    """Numbers to numbers, and to integers only when every value is whole."""
    kind = np.dtype(column.dtype).kind if isinstance(column.dtype, np.dtype) else ""
    if kind not in "iuf" or not kind:
        return False
    if np.dtype(dtype).kind == "i" and kind == "f":
        values = column.to_numpy()
        return bool(np.isfinite(values).all() and (values == np.round(values)).all())
    return True
