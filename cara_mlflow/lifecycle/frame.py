"""The frame of every lifecycle command: the lock and the server check, the phase hook, the
active policy, and the result a step prints."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..errors import SetupError
from ..lock import store_guard
from ..names import DEFAULT_LOCK_TIMEOUT, POLICY_ALIAS
from ..policy_doc import PolicyDocument
from ..store import BatchStore
from ..tracking import registry as reg

__all__ = ["PHASES", "REVERT_PHASE", "Phase", "no_phase", "managed", "active_policy", "default_project_uri",
           "StepResult"]

#: The points of a step (and of ``init``) at which ``on_phase`` is called, in order.
#: ``during-retrain`` is called just before the retrain project's child process starts.
PHASES = ("after-read", "after-psi", "after-batch-run", "during-retrain", "after-retrain", "after-register",
          "after-gate", "after-alias", "after-commit")
#: Between ``after-read`` and ``after-psi``, only when the check of a promotion moves production back.
REVERT_PHASE = "after-revert"

Phase = Callable[[str], None]


def no_phase(name: str) -> None:
    """The default ``on_phase``: nothing happens at any phase."""


@contextlib.contextmanager
def managed(store: BatchStore, registry: reg.Registry, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[None]:
    """The store lock (:class:`~cara_mlflow.errors.LockBusy` after ``lock_timeout`` s; on an object
    store, its lease), then one
    request to the tracking store (:class:`~cara_mlflow.errors.Unreachable` if it cannot be
    reached): the frame of every lifecycle command that writes."""
    with store_guard(store.root, lock_timeout, single_scheduler=store.single_scheduler) as fence:
        registry.fence = fence    # an object store's lease is confirmed before each registry write that counts
        try:
            registry.check_reachable()
            yield
        finally:
            registry.fence = None


def active_policy(registry: reg.Registry) -> PolicyDocument:
    """The tuned policy document of ``NAME.policy@active``, checked field by field."""
    text, version = registry.active_policy_text()
    return PolicyDocument.from_json(text, f"{registry.policy_name}@{POLICY_ALIAS} ({reg.POLICY_FILE})",
                                    version=version)


def default_project_uri() -> str:
    """The repository's own MLproject (entry point ``train``)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "MLproject").exists():
        raise SetupError("project_uri: the default MLproject was not found next to the package; "
                         "pass --project-uri pointing at a project with a `train` entry point")
    return str(root)


def _reconciled_line(r: dict) -> str:
    text = (f"reconciled batch {r['batch']}: Ψ̄ estimated {r['psi_bar_estimated']:.4g}, "
            f"realized {r['psi_bar_realized']:.4g}")
    if r.get("catchup"):
        text += f"; catch-up retrain: v{r['version']} gate={r['gate']} ({r['catchup']})"
    return text


@dataclass
class StepResult:
    """One processed (or waited-for) batch, as printed by ``step``."""

    status: str                     # processed | waiting | nothing | dry-run
    batch: int | None = None
    psi_bar: float | None = None
    decision: str | None = None     # keep | retrain | init | skip
    reason: str = ""
    version: int | None = None      # production version after the batch
    gate: str | None = None
    cumulative_cost: float | None = None
    message: str = ""
    late: bool = False              # a batch processed after a later one (never retrained on)
    deferred: str | None = None     # "budget": a Retrain the retrain budget deferred (kept)
    revert: dict | None = None      # {"from": V, "to": W}: the check of the promotion before moved production back
    provisional: bool = False       # decided on a Ψ̄ estimated from the queries, before the labels
    reconciled: tuple = ()          # the provisional batches reconciled first (their Reconciled.to_dict())

    def line(self) -> str:
        first = "".join(f"{_reconciled_line(r)}\n" for r in self.reconciled)
        return first + self._own_line()

    def _own_line(self) -> str:
        if self.status in ("waiting", "nothing"):
            return self.message
        psi = "" if self.psi_bar is None else f"Ψ̄={self.psi_bar:.4g}  "
        gate = f"  gate={self.gate}" if self.gate else ""
        prefix = "[dry run] " if self.status == "dry-run" else ""
        late = " (late)" if self.late else " (provisional: before its labels)" if self.provisional else ""
        if self.revert:
            prefix += f"auto-revert v{self.revert['from']} -> v{self.revert['to']}; "
        return (f"{prefix}batch {self.batch}{late}: {psi}{self.decision} ({self.reason})  "
                f"production=v{self.version}{gate}")
