"""The CLI with fault injection, for the crash and outage tests only: ``python tests/crash_harness.py ARGS``.

Runs :func:`cara_mlflow.cli.main` with an ``on_phase`` hook built from the environment:

* ``CARA_TEST_KILL_AT=PHASE``: the process kills itself with SIGKILL on reaching ``PHASE`` (as
  ``kill -9`` would). ``during-retrain`` kills it 1 s after the retrain project's child process
  has started (the child is left to itself, as after a real ``kill -9``).
* ``CARA_TEST_PAUSE_AT=PHASE:DIR``: on reaching ``PHASE`` it creates ``DIR/paused`` and waits (up
  to 10 minutes) until ``DIR/resume`` exists.
* ``CARA_TEST_BUG_AT=PHASE``: a bug on reaching ``PHASE``: a plain ``ValueError``, which is not one
  of cara-mlflow's errors, so the CLI must show its traceback.

The product knows nothing of these variables: the hook is the lifecycle's ``on_phase`` callback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

KILL_ENV = "CARA_TEST_KILL_AT"
PAUSE_ENV = "CARA_TEST_PAUSE_AT"
BUG_ENV = "CARA_TEST_BUG_AT"
FAULT_VARIABLES = (KILL_ENV, PAUSE_ENV, BUG_ENV)


def _kill_when_a_child_runs() -> None:
    """SIGKILL this process 1 s after its first child process appears."""

    def watch():
        children = Path(f"/proc/{os.getpid()}/task/{threading.main_thread().native_id}/children")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if children.read_text().split():
                    time.sleep(1.0)
                    os.kill(os.getpid(), signal.SIGKILL)
            except OSError:
                return
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()


def _pause(folder: Path) -> None:
    (folder / "paused").touch()
    deadline = time.monotonic() + 600
    while not (folder / "resume").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def phase_hook(environ=os.environ):
    """The ``on_phase`` callback the variables above describe."""
    kill_at = environ.get(KILL_ENV)
    pause_at, _, pause_dir = environ.get(PAUSE_ENV, "").partition(":")
    bug_at = environ.get(BUG_ENV)

    def on_phase(name: str) -> None:
        if name == bug_at:
            raise ValueError(f"a bug at {name}: not an input error")
        if name == kill_at:
            if name == "during-retrain":
                _kill_when_a_child_runs()
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        if name == pause_at:
            _pause(Path(pause_dir))

    return on_phase


if __name__ == "__main__":
    from cara_mlflow.cli import main

    main(sys.argv[1:], on_phase=phase_hook())
