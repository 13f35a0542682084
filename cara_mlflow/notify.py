"""Notifications: a user's command run with one JSON event on its stdin.

``step --notify CMD`` (or ``tune --notify CMD``, stored in the policy) runs ``CMD`` through
``/bin/sh`` once per event: a retrain starting, a promotion, a rejection, an automatic revert,
a budget deferral and a failed step. The event is one JSON object and a newline on stdin; its
``text`` key is a sentence, so a chat webhook that shows ``text`` (Slack, Mattermost, Rocket.Chat)
can be given the event as it is::

    cara-mlflow step --notify 'curl -fsS -X POST -H "Content-Type: application/json" --data-binary @- "$WEBHOOK"'

The command also gets ``CARA_EVENT`` (the event's kind) in its environment. It is never allowed
to fail a step: a command that exits non-zero or cannot start is reported as such, one that runs
longer than its timeout is killed with its whole process group (a shell's children too), and
the outcome is returned, never raised — the caller records it on the batch run.

>>> delivery = deliver("cat > /dev/null", event("promotion", "demo", 7, "v3 serves from batch 7"))
>>> delivery.ok, delivery.outcome
(True, 'sent')
>>> deliver("exit 3", event("failed", "demo", None, "oops")).outcome
'failed: exit 3'
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .errors import InputError

__all__ = ["EVENTS", "DEFAULT_NOTIFY_TIMEOUT", "Delivery", "event", "deliver", "check_command", "check_timeout"]

#: The kinds of event, the ``event`` key (and ``CARA_EVENT``).
EVENTS = ("retrain", "promotion", "rejection", "revert", "deferred", "failed")
DEFAULT_NOTIFY_TIMEOUT = 10.0
_KILL_GRACE = 2.0           # seconds between SIGTERM and SIGKILL for a command past its timeout


@dataclass(frozen=True)
class Delivery:
    """What became of one event: ``sent``, ``failed: …`` or ``timed out after N s``."""

    kind: str
    outcome: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.outcome == "sent"


def check_command(command) -> str | None:
    """A notify command: a non-empty string, or None / ``off`` for none.

    >>> check_command("off") is None, check_command("cat")
    (True, 'cat')
    """
    if command is None or (isinstance(command, str) and command.strip().lower() == "off"):
        return None
    if not isinstance(command, str) or "\x00" in command or not command.strip():
        raise InputError(f"notify: expected a shell command, or off for none; got {command!r:.60}")
    return command


def check_timeout(seconds) -> float:
    """A notify timeout: seconds, > 0 and at most an hour.

    >>> check_timeout(5)
    5.0
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 3600:
        raise InputError(f"notify timeout: expected seconds > 0 and <= 3600, got {seconds!r}")
    return float(seconds)


def event(kind: str, model: str, batch: int | None, text: str, **fields: Any) -> dict:
    """One event: its kind, the managed model, the batch, a sentence (``text``), the time (UTC,
    ISO 8601) and the kind's own fields (None values left out).

    >>> e = event("revert", "churn", 57, "v5 reverted to v4", **{"from": 5, "to": 4, "gate": None})
    >>> sorted(e), e["from"], e["to"]
    (['batch', 'event', 'from', 'model', 'text', 'time', 'to'], 5, 4)
    """
    if kind not in EVENTS:
        raise ValueError(f"event: unknown kind {kind!r}; expected one of {', '.join(EVENTS)}")
    out = {"event": kind, "model": model, "batch": batch, "text": text,
           "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    out.update({k: v for k, v in fields.items() if v is not None})
    return out


def _stop(process: subprocess.Popen) -> None:
    """End the command and everything it started (its own process group): TERM, then KILL."""
    for sig, wait in ((signal.SIGTERM, _KILL_GRACE), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def deliver(command: str, payload: dict, *, timeout: float = DEFAULT_NOTIFY_TIMEOUT) -> Delivery:
    """Run ``command`` with ``payload`` as one JSON line on stdin; never raises.

    Its stdout and stderr are not shown (the step's output is the step's); the last line of its
    stderr goes into a failure's outcome.
    """
    kind, start = str(payload.get("event")), time.monotonic()
    data = (json.dumps(payload, ensure_ascii=False, allow_nan=False, default=str) + "\n").encode()
    try:
        process = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, start_new_session=True,
                                   env={**os.environ, "CARA_EVENT": kind})
    except OSError as exc:
        return Delivery(kind, f"failed: could not start ({exc.strerror or exc})", 0.0)
    try:
        _, err = process.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(process)
        return Delivery(kind, f"timed out after {timeout:g} s", time.monotonic() - start)
    except OSError as exc:       # e.g. the command closed stdin at once and the pipe broke: it still ran
        process.wait()
        err = (str(exc) + "\n").encode()
    seconds = time.monotonic() - start
    if process.returncode == 0:
        return Delivery(kind, "sent", seconds)
    last = (err or b"").decode(errors="replace").strip().splitlines()[-1:] or [""]
    why = f"exit {process.returncode}" + (f" ({last[0][:200]})" if last[0] else "")
    return Delivery(kind, f"failed: {why}", seconds)
