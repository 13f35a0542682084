"""The MLflow adapter: the only package under ``cara_mlflow`` that imports mlflow.

=====================  =================================================================
``connection``         one tracking URI: a private client whose connection failures
                       raise :class:`~cara_mlflow.errors.Unreachable`; the scoped global URI
``runs``               runs of an experiment as typed :class:`RunRecord` values
``registry``           the managed model: versions, aliases, tags, the commit point,
                       the tuned policy ``NAME.policy@active``
``projects``           a ``train`` entry point run as an MLflow Project (retrains)
``training``           the trainer's MLflow side (``python -m cara_mlflow.train``)
``comparison``         ``cara-mlflow compare`` logged as an experiment
=====================  =================================================================

Importing this package does not import mlflow; its modules import it where they use it, so
``cara-mlflow --help`` stays instant.
"""

from .connection import default_artifact_root, default_tracking_uri, mask_uri
from .registry import Registry, VersionInfo
from .runs import RunRecord

__all__ = ["Registry", "VersionInfo", "RunRecord", "default_tracking_uri", "default_artifact_root", "mask_uri"]
