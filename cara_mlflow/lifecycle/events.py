"""A step's notifications (:mod:`cara_mlflow.notify`): which events a batch gives, when they are
sent, and where their delivery is recorded.

A retrain is announced when it starts (it may take hours); the batch's outcome — a revert, a
promotion, a rejection, a budget deferral — after the commit, so a command that fails or hangs
(killed after its timeout) can never undo or delay a committed batch. Each delivery's outcome is
recorded on the batch run (tag ``cara.notify``), and a failed one is also a one-line warning on
stderr. A step that fails sends ``failed`` (a busy lock is not a failure: cron retries it).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

from ..errors import CaraError, LockBusy, RetrainPending
from ..notify import DEFAULT_NOTIFY_TIMEOUT, Delivery, check_command, deliver, event
from ..planner import PROMOTED, Plan, RetrainOutcome
from ..policy_doc import PolicyDocument
from ..tracking import registry as reg

__all__ = ["Notifier", "NotifyWarning", "outcome_events", "revert_event", "reporting_failure", "TAG_NOTIFY"]

TAG_NOTIFY = "cara.notify"      # batch-run tag: each event's delivery, e.g. "promotion: sent"


class NotifyWarning(UserWarning):
    """A notification that could not be delivered (the step itself went on)."""


class Notifier:
    """Where a step's events go: ``command`` (``None``: the policy's stored one; ``off``: none)."""

    def __init__(self, model: str, command: str | None = None, timeout: float | None = None):
        self.model, self._given, self._timeout = model, command, timeout
        self.command = check_command(command)
        self.timeout = timeout or DEFAULT_NOTIFY_TIMEOUT
        self.batch: int | None = None        # the batch being processed, for a failure's event
        self.delivered: list[Delivery] = []  # this batch's deliveries so far

    def configure(self, doc: PolicyDocument) -> None:
        """Take the policy's stored command and timeout, unless the step was given its own."""
        if self._given is None and doc.notify:
            self.command = doc.notify["command"]
            self.timeout = self._timeout or float(doc.notify["timeout"])

    def send(self, kind: str, batch: int | None, text: str, **fields) -> Delivery | None:
        """Deliver one event (None when no command is set); a failure is a warning, never an error."""
        if self.command is None:
            return None
        delivery = deliver(self.command, event(kind, self.model, batch, text, **fields), timeout=self.timeout)
        self.delivered.append(delivery)
        if not delivery.ok:
            where = "" if batch is None else f" of batch {batch}"
            after = "" if kind == "failed" else "; the step went on"
            warnings.warn(f"notify: the {kind} event{where} was not delivered ({delivery.outcome}){after}",
                          NotifyWarning, stacklevel=2)
        return delivery

    def begin(self, batch: int | None) -> None:
        """A new batch: its events are recorded on its own run."""
        self.batch, self.delivered = batch, []

    def send_all(self, registry: reg.Registry, run_id: str, events: list[tuple[str, int, str, dict]]) -> None:
        """Deliver a committed batch's events, then record each of the batch's deliveries (the
        ``retrain`` announced before the commit too) on its run."""
        for kind, batch, text, fields in events:
            self.send(kind, batch, text, run_id=run_id, **fields)
        record = "; ".join(f"{d.kind}: {d.outcome}" for d in self.delivered)
        if record:
            with contextlib.suppress(Exception):       # the record is a courtesy: the batch is committed
                registry.runs.set_tags(run_id, {TAG_NOTIFY: record[:500]})


def revert_event(batch: int, new: int, old: int, reason: str) -> tuple[str, int, str, dict]:
    """The ``revert`` event: (kind, batch, text, fields)."""
    return "revert", batch, f"Batch {batch}: production reverted from v{new} to v{old} ({reason})", \
        {"from": new, "to": old, "trigger": "auto-revert"}


def outcome_events(plan: Plan, outcome: RetrainOutcome | None, revert: dict | None, *, serving: int,
                   reason_of_revert: str = "") -> list[tuple[str, int, str, dict]]:
    """The events of a committed batch, in the order things happened: (kind, batch, text, fields);
    ``revert``: one not said yet (a killed step's move, recognised by its rerun)."""
    events, b = [], plan.batch
    if revert is not None:
        events.append(revert_event(b, revert["from"], revert["to"], reason_of_revert))
    if outcome is not None and outcome.gate in PROMOTED:
        gate = "passed the gate" if outcome.gate == "passed" else "promoted without a gate"
        events.append(("promotion", b, f"Batch {b}: v{outcome.challenger} {gate} and serves (was v{serving}; "
                                       f"{plan.reason})", {"from": serving, "to": outcome.challenger,
                                                           "gate": outcome.gate, "trigger": plan.trigger}))
    elif outcome is not None:
        events.append(("rejection", b, f"Batch {b}: v{outcome.challenger} was rejected by the gate, v{serving} "
                                       f"still serves ({plan.reason})", {"version": outcome.challenger,
                                                                          "serving": serving, "gate": outcome.gate}))
    if plan.deferred is not None:
        events.append(("deferred", b, f"Batch {b}: a retrain was deferred by the retrain budget, v{serving} "
                                      f"still serves ({plan.reason})", {"reason": plan.deferred, "serving": serving}))
    for _, _, _, fields in events:
        fields.update(psi_bar=None if plan.schema else plan.psi_bar, kappa=plan.kappa)
    return events


@contextlib.contextmanager
def reporting_failure(notifier: Notifier) -> Iterator[None]:
    """Send ``failed`` for a step that raises (then let the error go on, unchanged). Another
    step holding the lock, or a detached retrain still running, is no failure: nothing is sent."""
    try:
        yield
    except (LockBusy, RetrainPending):
        raise
    except Exception as exc:
        if getattr(exc, "cara_notified", False):        # an inner frame sent it already
            raise
        line = exc.line() if isinstance(exc, CaraError) else f"{type(exc).__name__}: {exc}".splitlines()[0]
        notifier.send("failed", notifier.batch, f"A step of {notifier.model} failed"
                      f"{'' if notifier.batch is None else f' on batch {notifier.batch}'}: {line[:300]}",
                      error=line[:1000], exit_code=getattr(exc, "exit_code", 1))
        with contextlib.suppress(AttributeError):
            exc.cara_notified = notifier.command is not None
        raise
