"""Example of cara-mlflow's custom-trainer contract: a scikit-learn pipeline as an MLflow Project.

cara-mlflow runs the ``train`` entry point with ``--data DIR --target COL --features A,B,...``.
DIR holds ``data.parquet`` with the rows to train on (held-out rows are already withheld). The
script must log exactly one model, of any flavour that loads as ``mlflow.pyfunc``, to the run
MLflow started for the project; cara-mlflow computes training losses and its gate itself.
"""

import argparse
from pathlib import Path

import mlflow
import mlflow.sklearn
import pandas as pd
from pandas.api.types import is_bool_dtype, is_float_dtype, is_integer_dtype, is_numeric_dtype
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

#: An integer target with at most this many distinct values is treated as class labels.
MAX_INT_CLASSES = 20


def build_pipeline(X: pd.DataFrame, y: pd.Series) -> Pipeline:
    """A pipeline that selects columns BY NAME, so the model does not depend on column order."""
    booleans = [c for c in X.columns if is_bool_dtype(X[c])]
    numeric = [c for c in X.columns if is_numeric_dtype(X[c]) and c not in booleans]
    categorical = [c for c in X.columns if c not in booleans and c not in numeric]
    prep = ColumnTransformer([
        ("numeric", StandardScaler(), numeric),
        # True/False already are 1/0 to the estimator; nothing to scale.
        ("boolean", "passthrough", booleans),
        # Categories not seen in training (e.g. a new weekday spelling) encode as all zeros.
        ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
    ])
    regression = is_float_dtype(y) or (is_integer_dtype(y) and y.nunique() > MAX_INT_CLASSES)
    estimator = Ridge() if regression else LogisticRegression(max_iter=1000)
    return Pipeline([("prep", prep), ("model", estimator)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="directory holding data.parquet")
    parser.add_argument("--target", default="label")
    parser.add_argument("--features", required=True, help="comma-separated column names")
    args = parser.parse_args()

    frame = pd.read_parquet(Path(args.data) / "data.parquet")
    features = [f.strip() for f in args.features.split(",") if f.strip()]
    # Fall back to every column but the target if no features were given.
    features = features or [c for c in frame.columns if c != args.target]
    X, y = frame[features], frame[args.target]

    pipeline = build_pipeline(X, y).fit(X, y)

    # start_run() attaches to the run MLflow created for this project (MLFLOW_RUN_ID).
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            pipeline,
            name="model",
            # The signature records feature names and dtypes; pyfunc checks inputs against it.
            signature=mlflow.models.infer_signature(X, pipeline.predict(X)),
            # The default "skops" format loads this pipeline with no extra trusted types:
            # StandardScaler, OneHotEncoder, ColumnTransformer, LogisticRegression and Ridge
            # are all on skops' default trust list.
        )


if __name__ == "__main__":
    main()
