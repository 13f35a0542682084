"""One tracking URI: a private ``MlflowClient`` whose failures say what they mean, and a scope.

* :class:`Connection` wraps the client so that a tracking server that cannot be reached (after
  MLflow's own retries with backoff) raises :class:`~cara_mlflow.errors.Unreachable` (exit 75)
  with one line naming the masked URI, wherever in a command it happens.
* :func:`mlflow_scope` makes the few MLflow calls that read only the global URI (projects,
  model loading, artifact downloads) use this URI, and leaves the process as it found it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from pathlib import Path
from typing import Iterator

from ..errors import SetupError, Unreachable

__all__ = ["Connection", "mlflow_scope", "mask_uri", "default_tracking_uri", "default_artifact_root",
           "is_remote"]

_TRACKING_ENV, _REGISTRY_ENV = "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"


def default_tracking_uri(store_root: str | os.PathLike) -> str:
    """The embedded default: an absolute sqlite file inside the store, so cron works from anywhere.

    >>> default_tracking_uri("/data/store")
    'sqlite:////data/store/mlflow.db'
    """
    return f"sqlite:///{Path(store_root).resolve() / 'mlflow.db'}"


def default_artifact_root(store_root: str | os.PathLike) -> str:
    """Artifacts of the embedded default: ``STORE/mlartifacts``."""
    return str(Path(store_root).resolve() / "mlartifacts")


def is_remote(uri: str) -> bool:
    """A tracking server over HTTP, which proxies artifacts itself.

    >>> is_remote("http://127.0.0.1:5000"), is_remote("sqlite:////s/mlflow.db")
    (True, False)
    """
    return uri.startswith(("http://", "https://"))


def mask_uri(uri: str) -> str:
    """Hide credentials in a URI before it is shown.

    >>> mask_uri("postgresql+psycopg2://mlflow:secret@127.0.0.1:5433/mlflow")
    'postgresql+psycopg2://mlflow:***@127.0.0.1:5433/mlflow'
    >>> mask_uri("https://token@host/x")
    'https://***@host/x'
    """
    uri = re.sub(r"(://[^:/@\s]+):[^@/\s]*@", r"\1:***@", uri)
    return re.sub(r"(://)[^:/@\s]+@", r"\1***@", uri)


def _connection_failure(exc: BaseException, uri: str) -> bool:
    """Whether ``exc`` (or what it was raised from) is a failure to reach the server or database."""
    import requests
    import urllib3

    kinds: tuple[type[BaseException], ...] = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                                              requests.exceptions.RetryError, urllib3.exceptions.HTTPError)
    if not uri.startswith("sqlite:"):   # a database server behind a direct URI (postgresql://...)
        from sqlalchemy.exc import OperationalError

        kinds += (OperationalError,)
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, kinds):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


@contextlib.contextmanager
def translating_failures(uri: str) -> Iterator[None]:
    """Raise :class:`Unreachable` for a failure to reach ``uri``; let anything else through."""
    try:
        yield
    except Unreachable:
        raise
    except Exception as exc:
        if not _connection_failure(exc, uri):
            raise
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise Unreachable(f"cannot reach the MLflow tracking store at {mask_uri(uri)}: {mask_uri(text[:200])}; "
                          "check MLFLOW_TRACKING_URI and that the server is up (cron may retry later)") from exc


class _GuardedClient:
    """An ``MlflowClient`` whose every call goes through :func:`translating_failures`."""

    def __init__(self, uri: str):
        from mlflow import MlflowClient

        self._uri = uri
        self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            with translating_failures(self._uri):
                return attr(*args, **kwargs)

        return call


@contextlib.contextmanager
def mlflow_scope(uri: str) -> Iterator[None]:
    """Within the block, MLflow's global tracking and registry URI (and what a child process
    inherits) is ``uri``; afterwards, exactly what it was.

    The URI travels in ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``, restored on exit. A
    global URI set by the caller (``mlflow.set_tracking_uri``) would win over them, so then, and
    only then, the global is set for the block and set back to the caller's value.
    """
    import mlflow

    saved_env = {key: os.environ.get(key) for key in (_TRACKING_ENV, _REGISTRY_ENV)}
    os.environ[_TRACKING_ENV] = os.environ[_REGISTRY_ENV] = uri
    tracking = mlflow.get_tracking_uri()
    registry = mlflow.get_registry_uri()
    try:
        if tracking != uri:
            mlflow.set_tracking_uri(uri)
        if registry != uri:
            mlflow.set_registry_uri(uri)
        with translating_failures(uri):
            yield
    finally:
        if tracking != uri:
            mlflow.set_tracking_uri(tracking)
        if registry != uri:
            mlflow.set_registry_uri(registry)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def is_missing(exc: BaseException) -> bool:
    """An MLflow error for a model, version, alias or run that does not exist."""
    return getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class Connection:
    """The tracking URI and its guarded client (private to the adapter package).

    Parameters
    ----------
    tracking_uri
        Where runs and the registry live (the registry URI is the same).
    """

    def __init__(self, tracking_uri: str):
        self.tracking_uri = tracking_uri
        self.client = _GuardedClient(tracking_uri)

    @property
    def where(self) -> str:
        """The URI with its credentials masked, for messages."""
        return mask_uri(self.tracking_uri)

    def scope(self):
        """Context in which MLflow's global URI is this one (see :func:`mlflow_scope`)."""
        return mlflow_scope(self.tracking_uri)

    def check_reachable(self) -> None:
        """One cheap request: :class:`Unreachable` when the store cannot be reached,
        :class:`SetupError` when it answers with an error (e.g. a schema that needs
        ``mlflow db upgrade``)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.search_experiments(max_results=1)
        except MlflowException as exc:
            first = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise SetupError(f"the MLflow tracking store at {self.where} refused a request: {mask_uri(first)}; "
                             "check MLFLOW_TRACKING_URI (after an MLflow upgrade: `mlflow db upgrade URI`)") from None
