"""A retrain on a detached backend (``--backend kubernetes``, ``databricks``, a plugin, or
``local`` with ``{"detach": true}``): submitted once per batch, waited for up to the step's
``--retrain-timeout``, and found again by whichever step comes next.

The rules (README "Retraining on a cluster"):

* **Never twice.** Before submitting, a step looks for the batch's retrain run: by its tags, or,
  if the step that submitted it died before tagging it, by its ``data`` parameter (the batch's
  own folder ``STORE/retrain/<id>``, unique to it). A RUNNING one is waited for, a FINISHED one
  with a model is used; only when neither exists is the project submitted.
* **Timeout.** A run still RUNNING after ``--retrain-timeout`` seconds is left running: the step
  exits 75 (:class:`RetrainPending`) without committing the batch, and the next step waits again.
* **Failure.** A run that ends FAILED or KILLED, or FINISHED without a model, leaves production
  unchanged: the step exits 1 naming the run, the batch is not committed, and the next step
  submits a new retrain (a deliberate retry, after the failure was reported).
* **A local detached run whose process died** (same host and boot and its process gone, or the same
  machine rebooted since; run still RUNNING) is marked FAILED and redone, as a half-finished local
  retrain always was.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ..errors import RetrainPending, SetupError
from ..policy_doc import PolicyDocument
from ..processes import gone
from ..tracking import registry as reg
from ..tracking.projects import TAG_BACKEND, TAG_LOG, TAG_PROCESS, declared_parameters, submit_training_project
from ..tracking.runs import TAG_BATCH, TAG_PARENT, TAG_RUN_TYPE, RunRecord
from ..train import project_parameters
from .training import (
    TRAINING_SECONDS,
    complete_record,
    holdout_of,
    remove_training_rows,
    retrain_folder,
    write_training_rows,
)

__all__ = ["detached_retrain", "abandoned", "SUBMIT_PHASE", "clock", "sleep"]

#: Called between a detached retrain's submission and its tags (the crash tests' hook).
SUBMIT_PHASE = "after-submit"
#: The wall clock and the pause of the wait (a test may replace them).
clock = time.monotonic
sleep = time.sleep
#: Seconds between two looks at a running retrain: soon at first, then every 15 s.
_POLLS = (0.5, 1.0, 2.0, 5.0, 10.0, 15.0)
_ENDED = ("FINISHED", "FAILED", "KILLED")


def detached_retrain(registry: reg.Registry, batch, doc: PolicyDocument, project_uri: str, *,
                     parent_run_id: str | None = None, on_phase: Callable[[str], None] = lambda name: None) -> str:
    """The id of the finished retrain run of ``batch`` on ``doc.backend``, its training record
    complete: the one a step already submitted, or a new submission. Raises
    :class:`RetrainPending` (75) when it is still running after ``doc.backend.timeout`` seconds,
    :class:`SetupError` (1) when it failed."""
    backend, folder = doc.backend, retrain_folder(batch)
    run = _submitted(registry, batch.id, str(folder), parent_run_id)
    if run is None:
        train_rows, _ = holdout_of(batch, doc)
        data = write_training_rows(batch, train_rows, folder)
        params = project_parameters(doc.trainer, data=data, target=doc.target, features=doc.features,
                                    task=doc.task, declared=declared_parameters(project_uri))
        on_phase("during-retrain")
        try:
            run_id = submit_training_project(registry, project_uri, params, batch_id=batch.id, backend=backend,
                                             parent_run_id=parent_run_id,
                                             after_submit=lambda: on_phase(SUBMIT_PHASE))
        except SetupError:
            remove_training_rows(folder)
            raise
    else:
        run_id = run.run_id
    run = _wait(registry, run_id, backend.timeout)
    if run.status == "RUNNING":
        raise RetrainPending(f"the retrain of batch {batch.id} (run {run_id}, backend {backend.describe()}) is still "
                             f"running after {backend.timeout:g} s; left running: the next step waits for it again "
                             "(raise --retrain-timeout to wait longer; if its job is gone, end the run as FAILED and "
                             "the next step submits a new one)")
    remove_training_rows(folder)
    if run.status != "FINISHED" or registry.logged_model_of_run(run_id) is None:
        why = f"ended {run.status}" if run.status != "FINISHED" else "logged no model"
        raise SetupError(f"the retrain of batch {batch.id} on backend {backend.describe()} {why} (run {run_id}); "
                         f"production is unchanged; see the run's logs{_log_hint(run)}; the next step submits "
                         "a new retrain")
    if TRAINING_SECONDS not in run.metrics and run.end_time > run.start_time:
        registry.runs.log_metrics(run_id, {TRAINING_SECONDS: (run.end_time - run.start_time) / 1000})
    complete_record(registry, run_id, batch, doc)
    if run.tags.get(TAG_LOG):           # kept only for a failure: the run holds what a success made
        registry.runs.delete_tag(run_id, TAG_LOG)        # first: a crash between leaves a file, not a dangling name
        Path(run.tags[TAG_LOG]).unlink(missing_ok=True)
    return run_id


def _log_hint(run: RunRecord) -> str:
    return f" and {run.tags[TAG_LOG]}" if run.tags.get(TAG_LOG) else ""


def _submitted(registry: reg.Registry, batch_id: int, data: str, parent_run_id: str | None) -> RunRecord | None:
    """The batch's retrain run still to wait for (RUNNING) or to use (FINISHED with a model),
    newest first; an untagged one (its step died before tagging it) is tagged now. A run nothing
    will end (a synchronous retrain's, a local detached one whose process is gone) is marked
    FAILED."""
    tagged = registry.runs.find("retrain", batch=batch_id)
    seen = {r.run_id for r in tagged}
    # MLflow's own run for a submission whose step died before tagging it: no cara tag at all (a
    # tune's training run on a remote store reads the same folder, and is tagged)
    untagged = [r for r in registry.runs.with_param("data", data) if TAG_RUN_TYPE not in r.tags]
    for run in untagged:
        registry.runs.set_tags(run.run_id, {TAG_RUN_TYPE: "retrain", TAG_BATCH: batch_id,
                                            **({TAG_PARENT: parent_run_id} if parent_run_id else {})})
    for run in sorted([*tagged, *untagged], key=lambda r: r.start_time, reverse=True):
        if run.status == "RUNNING" and abandoned(run, detached=run.run_id not in seen or TAG_BACKEND in run.tags):
            run = _failed_unless_ended(registry, run.run_id)
        if run.status == "RUNNING" or (run.status == "FINISHED" and (
                run.tags.get(reg.TAG_MODEL_URI) or registry.logged_model_of_run(run.run_id))):
            if parent_run_id and run.tags.get(TAG_PARENT) != parent_run_id:
                registry.runs.set_tags(run.run_id, {TAG_PARENT: parent_run_id})
            return run
    return None


def abandoned(run: RunRecord, *, detached: bool) -> bool:
    """A RUNNING run nothing will end: a synchronous local retrain's (its child died with its
    step), or a local detached one whose process is gone."""
    return not detached or bool(run.tags.get(TAG_PROCESS)) and gone(run.tags[TAG_PROCESS])


def _failed_unless_ended(registry: reg.Registry, run_id: str) -> RunRecord:
    """The run marked FAILED, unless it ended in the meantime (its process ends it, then exits)."""
    run = registry.runs.get(run_id)
    if run.status == "RUNNING":
        registry.runs.end(run_id, "FAILED")
        run = registry.runs.get(run_id)
    return run


def _wait(registry: reg.Registry, run_id: str, timeout: float) -> RunRecord:
    """The run once it has ended, or as it is after ``timeout`` seconds. A local detached run
    whose process died without ending it is marked FAILED."""
    deadline, polls = clock() + timeout, iter(_POLLS)
    while True:
        run = registry.runs.get(run_id)
        if run is None:
            raise SetupError(f"retrain run {run_id} was deleted while a step waited for it; the next step "
                             "submits a new retrain")
        if run.status in _ENDED:
            return run
        if abandoned(run, detached=True):
            return _failed_unless_ended(registry, run_id)
        left = deadline - clock()
        if left <= 0:
            return run
        sleep(min(next(polls, _POLLS[-1]), left))
