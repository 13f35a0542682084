"""The errors cara-mlflow means, each with the exit code the CLI gives it (DESIGN.md "Exit codes").

Only these are mapped to one line at the edge; any other exception is a bug, and the CLI lets
it reach the terminal with its traceback (exit 1) so that it can be reported.

========================  ====  =========================================================
:class:`InputError`        1     bad input: an argument, a batch, a policy document
:class:`SetupError`        1     the environment is not as needed: no tuned policy, no
                                 production alias, a retrain project that failed
:class:`LockBusy`          75    another cara-mlflow process holds the store lock
:class:`Unreachable`       75    the tracking server cannot be reached (EX_TEMPFAIL)
:class:`StoreUnreachable`  75    the object store holding the batches cannot be reached
:class:`RetrainPending`    75    a detached retrain (``--backend``) is still running
========================  ====  =========================================================

>>> isinstance(InputError("kappa: expected > 0"), ValueError)    # Python callers may catch ValueError
True
>>> Unreachable("server down").exit_code, LockBusy("held").exit_code, SetupError("no alias").exit_code
(75, 75, 1)
"""

from __future__ import annotations

__all__ = ["EXIT_ERROR", "EXIT_TEMPFAIL", "CaraError", "InputError", "SetupError", "RetryLater", "LockBusy",
           "Unreachable", "StoreUnreachable", "RetrainPending"]

EXIT_ERROR = 1
#: EX_TEMPFAIL (sysexits.h): cron and systemd may simply run the command again later.
EXIT_TEMPFAIL = 75


class CaraError(Exception):
    """An error cara-mlflow reports as one line: what is wrong and how to fix it."""

    exit_code = EXIT_ERROR

    def line(self) -> str:
        """The message on one line (the first line; the class name if there is none)."""
        text = str(self).strip()
        return text.splitlines()[0] if text else type(self).__name__


class InputError(CaraError, ValueError):
    """Bad input: an argument, a batch, a stored document. Fix the input and run again."""


class SetupError(CaraError):
    """The environment is not as the command needs it (a model, an alias, a project)."""


class RetryLater(CaraError):
    """A temporary condition: running the same command later may succeed."""

    exit_code = EXIT_TEMPFAIL


class LockBusy(RetryLater):
    """Another cara-mlflow process holds the store lock."""


class Unreachable(RetryLater):
    """The tracking server (or database) cannot be reached, after MLflow's own retries."""


class StoreUnreachable(RetryLater):
    """The object store holding the batch store (``s3://``, ``gs://``, ``abfs://``) cannot be reached."""


class RetrainPending(RetryLater):
    """A retrain on a detached backend is still running after ``--retrain-timeout``: left running,
    the next step waits for it again."""
