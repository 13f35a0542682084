"""Training through an MLflow Project: the retrain run (and ``tune --project-uri``'s offline models).

The project's ``train`` entry point runs with ``env_manager="local"`` in a run the lifecycle
created, so the run id is known before the child starts and a rerun after a crash finds it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping

from ..backends import LOCAL, Backend
from ..errors import InputError, SetupError
from ..names import STEP_PID_ENV
from ..processes import process_name
from .registry import Registry
from .runs import TAG_BATCH, TAG_PARENT, TAG_RUN_TYPE

__all__ = ["run_training_project", "child_environment", "STEP_PID_ENV", "resolve_project_uri", "declared_parameters",
           "check_backend", "submit_training_project", "TAG_BACKEND", "TAG_PROCESS", "TAG_LOG", "BUILT_IN_BACKENDS"]

#: Tags of a detached retrain run: its backend; for a local one, the process running it
#: (``host:pid:boot``) and the file its output goes to.
TAG_BACKEND = "cara.backend"
TAG_PROCESS = "cara.retrain_process"
TAG_LOG = "cara.retrain_log"
#: The backends MLflow Projects knows without a plugin.
BUILT_IN_BACKENDS = (LOCAL, "databricks", "kubernetes")
#: The packages MLflow imports to run a project on a built-in remote backend.
_NEEDS = {"kubernetes": ("kubernetes", "docker"), "databricks": ("databricks.sdk",)}
#: What MLflow needs in a Kubernetes backend's configuration.
_KUBERNETES_KEYS = ("kube-job-template-path", "repository-uri")

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


def _plugin_backends() -> list[str]:
    from mlflow.projects.backend.loader import ENTRYPOINT_GROUP_NAME
    from mlflow.utils.plugins import get_entry_points

    return sorted({e.name for e in get_entry_points(ENTRYPOINT_GROUP_NAME)})


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:           # its parent package is missing
        return False


def check_backend(backend: Backend) -> Backend:
    """``backend`` if MLflow can run a project on it (built in, or an installed plugin's), with
    the configuration the built-in remote backends need; else :class:`InputError`, one line.

    >>> check_backend(Backend("local")).name
    'local'
    >>> check_backend(Backend("kubernetes", {"repository-uri": "r"}))    # checked before its packages
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: --backend-config: the kubernetes backend needs "kube-job-template-path" (see \
examples/backends/kubernetes/)
    """
    plugins = [] if backend.name in BUILT_IN_BACKENDS else _plugin_backends()
    if backend.name not in BUILT_IN_BACKENDS and backend.name not in plugins:
        known = ", ".join([*BUILT_IN_BACKENDS, *plugins])
        raise InputError(f"--backend: no MLflow Projects backend {backend.name!r} here (known: {known}); "
                         "install its plugin (entry point group mlflow.project_backend) or pick a known one")
    if backend.name == "kubernetes":
        missing = [k for k in _KUBERNETES_KEYS if k not in backend.config]
        if missing:
            raise InputError(f'--backend-config: the kubernetes backend needs "{missing[0]}" '
                             "(see examples/backends/kubernetes/)")
        template = Path(str(backend.config["kube-job-template-path"])).expanduser()
        if not template.is_file():
            raise InputError(f"--backend-config: no Kubernetes job template {str(template)!r} "
                             '("kube-job-template-path"); see examples/backends/kubernetes/')
    needs = _NEEDS.get(backend.name, ())
    if not all(_importable(m) for m in needs):
        raise SetupError(f"--backend {backend.name}: MLflow needs the Python packages {' and '.join(needs)} "
                         f"for it; pip install 'cara-mlflow[{backend.name}]'")
    return backend


@contextlib.contextmanager
def _output_to(path: str | None) -> Iterator[None]:
    """Our stdout and stderr sent to ``path`` while a detached child starts (it inherits them),
    so that its output goes to a file and not to a cron mail; restored afterwards."""
    if path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)


def submit_training_project(registry: Registry, project_uri: str, parameters: Mapping[str, str], *,
                            batch_id: int, backend: Backend, parent_run_id: str | None = None,
                            run_type: str = "retrain", after_submit: Callable[[], None] = lambda: None) -> str:
    """Submit the project's ``train`` entry point on ``backend`` without waiting; return the id
    of the run MLflow created for it, tagged like a local retrain run (``cara.run_type``,
    ``cara.batch``, nested under ``parent_run_id``) plus ``cara.backend``.

    MLflow creates the run itself (a remote backend takes no run id) and logs the parameters on
    it, so a step that dies between the submission and our tags finds the run by its ``data``
    parameter (:meth:`~cara_mlflow.tracking.runs.Runs.with_param`): never submitted twice. A
    local detached run's output goes to a file (tag ``cara.retrain_log``) and its process is
    named by ``cara.retrain_process``. A submission MLflow refuses is :class:`SetupError`; a run
    it created by then is marked FAILED. ``after_submit`` is called between the submission and
    our tags (a crash test's hook).
    """
    import mlflow.projects

    local = backend.name == LOCAL
    log = _log_file(run_type, batch_id) if local else None
    submitted_at = int(time.time() * 1000)
    try:
        with registry.scope(), child_environment(), _output_to(log):
            submitted = mlflow.projects.run(uri=project_uri, entry_point="train", parameters=dict(parameters),
                                            backend=backend.name, backend_config=backend.mlflow_config(),
                                            env_manager=LOCAL if local else None, synchronous=False,
                                            experiment_id=registry.runs.experiment_id(),
                                            run_name=f"{run_type}-{batch_id}")
    except Exception as exc:     # refused, unreachable, a failed image build or push, a plugin that fails to load
        _fail_partial(registry, parameters, submitted_at)
        if log:
            Path(log).unlink(missing_ok=True)
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise SetupError(f"the {run_type} of batch {batch_id} could not be submitted to the {backend.name} backend "
                         f"({type(exc).__name__}: {detail}); fix the backend or its configuration and rerun") from None
    after_submit()
    tags = {TAG_RUN_TYPE: run_type, TAG_BATCH: batch_id, TAG_BACKEND: backend.name,
            **({TAG_PARENT: parent_run_id} if parent_run_id else {})}
    process = getattr(submitted, "command_proc", None)
    if local and process is not None:
        tags.update({TAG_PROCESS: process_name(process.pid), TAG_LOG: log})
    registry.runs.set_tags(submitted.run_id, tags)
    return submitted.run_id


def _log_file(run_type: str, batch_id: int) -> str:
    """A file for a local detached run's output (named on the run by ``cara.retrain_log``)."""
    fd, path = tempfile.mkstemp(prefix=f"cara-{run_type}-{batch_id}-", suffix=".log")
    os.close(fd)
    return path


def _fail_partial(registry: Registry, parameters: Mapping[str, str], since_ms: int) -> None:
    """Runs a refused submission left RUNNING (MLflow created the run before it failed): FAILED,
    so that no step waits for them."""
    for run in registry.runs.with_param("data", str(parameters.get("data", ""))):
        if run.status == "RUNNING" and run.start_time >= since_ms - 1000 and TAG_RUN_TYPE not in run.tags:
            registry.runs.end(run.run_id, "FAILED")
