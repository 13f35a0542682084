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
from typing import Callable, Iterator, Mapping

from ..errors import SetupError
from ..names import STEP_PID_ENV
from .registry import TAG_MODEL_URI, Registry
from .runs import TAG_BATCH

__all__ = ["run_training_project", "child_environment", "STEP_PID_ENV"]



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
                         run_type: str = "retrain", before_start: Callable[[], None] = lambda: None) -> str:
    """Run the project's ``train`` entry point on one batch in a new run; return the run's id.

    The run is tagged ``cara.run_type`` = ``run_type`` and ``cara.batch``. MLflow's runner and
    the child keep their temporary files in a scratch directory of ours (``storage_dir`` and the
    child's ``TMPDIR``), removed afterwards, so a long series of retrains leaks nothing.
    ``before_start`` is called just before the child starts (a crash test's hook).
    Raises :class:`SetupError` when the project fails or logs no model; the run is then FAILED.
    """
    import mlflow.projects
    from mlflow.exceptions import ExecutionException

    run_id = registry.runs.start(run_type, run_name=f"{run_type}-{batch_id}", tags={TAG_BATCH: batch_id})
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
    run = registry.runs.get(run_id)
    if not (run and run.tags.get(TAG_MODEL_URI)):
        registry.runs.end(run_id, "FAILED")
        raise SetupError(f"the {run_type} project logged no model on batch {batch_id} (run {run_id}): "
                         f"it must set the run tag {TAG_MODEL_URI} as cara_mlflow.train does")
    return run_id
