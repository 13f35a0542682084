"""cara-mlflow: cost-aware retraining (CARA) for production models, carried out in MLflow.

The core (staleness, costs, oracle, policies, tuning, simulate, streams) is pure
numpy/scipy/scikit-learn; MLflow and click are imported only by the adapters.
"""

__version__ = "0.1.0"
