"""The lifecycle manager: ``tune``, ``init``, ``step``, ``skip``, ``rollback``, ``status``, ``history``.

Plain functions over a :class:`~cara_mlflow.store.BatchStore` and a
:class:`~cara_mlflow.tracking.Registry`; the CLI is a thin adapter over them. Every command that
writes takes the store lock and checks that the tracking store answers (:func:`managed`) itself,
so a Python caller gets the same safety as cron.

A step reads its batch (``step.py``), measures Ψ̄ of the model in use (``observe.py``), asks the
pure planner (:mod:`cara_mlflow.planner`) what to do, applies the plan through the adapter
(``executor.py``, ``models.py``) and commits the new state (``batch_run.py``). The commit point is
the registered-model tag ``cara.last_batch``; everything before it is re-doable: a rerun after a
crash tidies the runs a killed step left (``records.py``), reuses a finished retrain's model and
an already registered version, and never registers a second version for a batch.

``on_phase`` (a no-op by default) is called with the name of each point of :data:`PHASES` a
step passes; the crash tests use it to kill or pause the process there.
"""

from ..manager_state import STATE_FILE
from .frame import PHASES, REVERT_PHASE, Phase, StepResult, active_policy, default_project_uri, managed, no_phase
from .manual import init, rollback, skip
from .report import explain, history, production_history, status
from .step import StepOptions, step, steps
from .tune import QUERY_RULE, tune

__all__ = ["tune", "init", "step", "steps", "skip", "rollback", "status", "history", "production_history", "explain",
           "StepOptions", "StepResult", "PHASES", "REVERT_PHASE", "Phase", "no_phase", "managed", "active_policy",
           "default_project_uri", "STATE_FILE", "QUERY_RULE"]
