"""Training through an MLflow Project: the retrain run (and ``tune --project-uri``'s offline models).

The project's ``train`` entry point runs with ``env_manager="local"`` in a run the lifecycle
created, so the run id is known before the child starts and a rerun after a crash finds it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Mapping

from ..errors import InputError, SetupError
from ..names import STEP_PID_ENV
from .registry import Registry
from .runs import TAG_BATCH, TAG_PARENT

__all__ = ["run_training_project", "child_environment", "STEP_PID_ENV", "resolve_project_uri", "declared_parameters"]

_REMOTE = ("http://", "https://", "git@", "git://", "ssh://", "file://", "s3://", "gs://", "wasbs://")


def _is_local(project_uri: str) -> bool:
    return not project_uri.startswith(_REMOTE)


def resolve_project_uri(project_uri: str) -> str:
    """A project URI as ``tune`` stores it: a local path made absolute and checked (an
    ``MLproject`` with a ``train`` entry point), so a cron step finds it from any directory; a
    remote URI (git, http) as given.

    >>> resolve_project_uri("https://github.com/o/r.git#sub")
    'https://github.com/o/r.git#sub'
    """
    if not _is_local(project_uri):
        return project_uri
    path = Path(project_uri).expanduser().absolute()
    if not path.is_dir():
        raise InputError(f"--project-uri: no directory {str(path)!r}; expected your project's directory "
                         "(with an MLproject declaring a `train` entry point) or a git URI")
    if not (path / "MLproject").is_file():
        raise InputError(f"--project-uri: no MLproject file in {str(path)!r}; expected a project directory "
                         "with an MLproject declaring a `train` entry point")
    if "train" not in _entry_points(path):
        raise InputError(f"--project-uri: {str(path / 'MLproject')!r} has no `train` entry point; "
                         "expected one with the parameters data, target and features")
    return str(path)


def _entry_points(path: Path) -> dict:
    import yaml

    try:
        spec = yaml.safe_load((path / "MLproject").read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"--project-uri: cannot read {str(path / 'MLproject')!r} ({exc})") from None
    points = spec.get("entry_points") if isinstance(spec, dict) else None
    return points if isinstance(points, dict) else {}


def declared_parameters(project_uri: str) -> list[str] | None:
    """The parameters the local project's ``train`` entry point declares; ``None`` when unknown
    (a remote project): MLflow appends an undeclared parameter to the command, which a strict
    trainer refuses, so only declared ones are passed."""
    if not _is_local(project_uri) or not (Path(project_uri) / "MLproject").is_file():
        return None
    train = _entry_points(Path(project_uri)).get("train") or {}
    params = train.get("parameters") if isinstance(train, dict) else None
    return list(params) if isinstance(params, dict) else []



@contextlib.contextmanager
def child_environment(**extra: str) -> Iterator[None]:
    """The environment a project's child process gets, restored afterwards.

    Our interpreter's directory first on PATH (cron's PATH often lacks it and MLflow runs the
    project's ``python`` through bash), plus ``extra`` variables.
    """
    keys = ["PATH", *extra]
    saved = {k: os.environ.get(k) for k in keys}
    bindir = os.path.dirname(sys.executable)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_training_project(registry: Registry, project_uri: str, parameters: Mapping[str, str], *, batch_id: int,
                         run_type: str = "retrain", before_start: Callable[[], None] = lambda: None,
                         parent_run_id: str | None = None) -> str:
    """Run the project's ``train`` entry point on one batch in a new run; return the run's id.

    The run is tagged ``cara.run_type`` = ``run_type`` and ``cara.batch``; with
    ``parent_run_id`` (the batch run that asked for it) also ``mlflow.parentRunId``, so the UI
    nests the retrain under its ``batch-<id>`` run. MLflow's runner and
    the child keep their temporary files in a scratch directory of ours (``storage_dir`` and the
    child's ``TMPDIR``), removed afterwards, so a long series of retrains leaks nothing.
    ``before_start`` is called just before the child starts (a crash test's hook).
    Raises :class:`SetupError` when the project fails or logs no model (or several); the run is
    then FAILED.
    """
    import mlflow.projects
    from mlflow.exceptions import ExecutionException

    tags = {TAG_BATCH: batch_id, **({TAG_PARENT: parent_run_id} if parent_run_id else {})}
    run_id = registry.runs.start(run_type, run_name=f"{run_type}-{batch_id}", tags=tags)
    # MLflow logs a project's parameters only on a run it creates itself: log what the entry point gets
    registry.runs.log_params(run_id, parameters)
    scratch = tempfile.mkdtemp(prefix="cara-retrain-")
    try:
        before_start()
        with registry.scope(), child_environment(**{STEP_PID_ENV: str(os.getpid()), "TMPDIR": scratch}):
            mlflow.projects.run(uri=project_uri, entry_point="train", parameters=dict(parameters),
                                env_manager="local", experiment_id=registry.runs.experiment_id(), run_id=run_id,
                                synchronous=True, storage_dir=os.path.join(scratch, "storage"))
    except ExecutionException as exc:
        registry.runs.end(run_id, "FAILED")
        raise SetupError(f"the {run_type} project failed on batch {batch_id} (run {run_id}): "
                         f"{str(exc).splitlines()[0]}; see the run's logs, fix, and rerun") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    try:
        found = registry.logged_model_of_run(run_id)
    except SetupError:
        registry.runs.end(run_id, "FAILED")
        raise
    if found is None:
        registry.runs.end(run_id, "FAILED")
        raise SetupError(f"the {run_type} project logged no model on batch {batch_id} (run {run_id}): "
                         "it must log one with mlflow.<flavor>.log_model inside mlflow.start_run()")
    return run_id
