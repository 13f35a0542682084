"""Reconciling provisional batches when their labels land: the realized Ψ̄ on the same batch run,
the state corrected (:func:`cara_mlflow.reconcile.reconcile`), a retrain the estimate missed taken
now (a catch-up), committed through ``cara.last_run`` (``cara.last_batch`` never moves back).

Exactly once: a batch is reconciled when its labels are in and the committed state still lists it
as provisional. A step killed before the commit leaves it listed: the next step measures the same
realized Ψ̄ (seeded), reuses the catch-up's version (found by its training batch) and commits.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SetupError
from ..guards import Guards
from ..manager_state import STATE_FILE, ManagerState, Provisional
from ..planner import PROMOTED, Plan
from ..policy_doc import PolicyDocument
from ..reconcile import caught_up, reconcile
from ..store import BatchStore, BatchStoreError
from ..tracking import registry as reg
from ..tracking.runs import TAG_NOTE, one_line
from .executor import apply_retrain
from .frame import Phase
from .observe import observe
from .provisional import labelled_batch
from .records import finished_batch_run
from .timeline import draw_realized

__all__ = ["Reconciled", "reconcile_ready"]


@dataclass(frozen=True)
class Reconciled:
    """One provisional batch reconciled: its estimate, its realized Ψ̄, and a catch-up's outcome."""

    batch: int
    estimated: float
    realized: float
    catchup: str | None = None       # why a catch-up retrain was taken (None: none)
    gate: str | None = None
    version: int | None = None       # the catch-up's challenger

    def describe(self) -> str:
        text = (f"reconciled batch {self.batch}: Ψ̄ estimated {self.estimated:.4g}, realized "
                f"{self.realized:.4g}")
        if self.catchup:
            text += f"; catch-up retrain v{self.version} gate={self.gate} ({self.catchup})"
        return text

    def to_dict(self) -> dict:
        return {"batch": self.batch, "psi_bar_estimated": self.estimated, "psi_bar_realized": self.realized,
                "catchup": self.catchup, "gate": self.gate, "version": self.version}


def reconcile_ready(store: BatchStore, registry: reg.Registry, doc: PolicyDocument, state: ManagerState, *,
                    last: int, method: str, guards: Guards, cooldown: int, gate: bool, project_uri: str | None,
                    on_phase: Phase) -> tuple[ManagerState, list[Reconciled]]:
    """Reconcile every provisional batch whose labels are in, in id order; each commits on its run."""
    complete = {i.id for i in store.list() if i.complete} if state.provisional else set()
    done = []
    for entry in sorted((p for p in state.provisional if p.batch in complete), key=lambda p: p.batch):
        state, record = _reconcile_one(store, registry, doc, state, entry, last=last, method=method, guards=guards,
                                       cooldown=cooldown, gate=gate, project_uri=project_uri, on_phase=on_phase)
        done.append(record)
    return state, done


def _realized(store: BatchStore, registry: reg.Registry, doc: PolicyDocument, entry: Provisional, method: str):
    """The batch with its labels, and the Ψ terms of the version that was in use at it (None: it was
    trained on other features than the policy's now, so it cannot be scored)."""
    try:
        batch = store.read(entry.batch, target=doc.target, space=doc.space)
    except BatchStoreError as exc:    # every step fails here until the labels are fixed (or withdrawn)
        raise BatchStoreError(f"provisional batch {entry.batch}'s labels landed and cannot be read: {exc}; fix its "
                              "data file, or remove its _SUCCESS to leave it provisional until then") from None
    _, terms = observe(registry, registry.version(entry.version), batch, doc, method)
    return batch, terms


def _description(run, record: Reconciled) -> dict:
    """The run's description in the UI, led by the reconciliation (once, on a rerun too)."""
    note = run.tags.get(TAG_NOTE, "")
    if note.startswith("Reconciled"):
        return {}
    catchup = f"; catch-up retrain v{record.version} {record.gate}" if record.catchup else ""
    lead = f"Reconciled: Ψ̄ realized {record.realized:.4g} (decided on the estimate {record.estimated:.4g}){catchup}. "
    return {TAG_NOTE: one_line(lead + note, 300)}


def _missed(state: ManagerState, guards: Guards, realized: float, estimate: float) -> str | None:
    """Why the catch-up is taken, or None when a guard blocks it (the cooldown, the budget)."""
    if state.cooldown_left > 0 or guards.over_budget(attempts=state.retrain_attempts, t=state.position):
        return None
    return f"the realized Ψ̄={realized:.4g} asks for the retrain the estimate {estimate:.4g} missed"


def _reconcile_one(store: BatchStore, registry: reg.Registry, doc: PolicyDocument, state: ManagerState,
                   entry: Provisional, *, last: int, method: str, guards: Guards, cooldown: int, gate: bool,
                   project_uri: str | None, on_phase: Phase) -> tuple[ManagerState, Reconciled]:
    run = finished_batch_run(registry, entry.batch)
    if run is None:
        raise SetupError(f"provisional batch {entry.batch} has no FINISHED batch run in {registry.where}; "
                         "the history was edited by hand")
    batch, terms = _realized(store, registry, doc, entry, method)
    realized = entry.estimate if terms is None else terms.psi_bar
    error_cost = None if doc.money is None else doc.money.error_cost
    after, asks = reconcile(state, entry.batch, realized, error_cost=error_cost)
    why = _missed(after, guards, realized, entry.estimate) if asks else None
    metrics = {"psi_bar_realized": realized, "provisional": 0.0, "n_data": batch.n_rows,
               "estimate_error": entry.estimate - realized}
    if terms is not None:
        metrics.update(psi_now=terms.now, psi_then=terms.then)
    if run.metrics.get("psi_bar_realized") is None:      # a rerun after a kill: recorded once
        registry.runs.log_metrics(run.run_id, metrics)
    tags = {reg.TAG_PROVISIONAL: "false"}
    on_phase("during-reconcile")
    record = Reconciled(entry.batch, entry.estimate, realized)
    if why is not None:
        after, record, tags = _catch_up(store, registry, doc, after, record, why, run.run_id, last=last,
                                        cooldown=cooldown, gate=gate, project_uri=project_uri, method=method,
                                        on_phase=on_phase)
    registry.runs.set_tags(run.run_id, {**tags, **_description(run, record)})
    registry.runs.log_dict(run.run_id, after.to_dict(), STATE_FILE)
    registry.commit(entry.batch, run.run_id, late=True)
    on_phase("after-reconcile")
    draw_realized(registry, entry.batch, realized)
    return after, record


def _catch_up(store: BatchStore, registry: reg.Registry, doc: PolicyDocument, state: ManagerState,
              record: Reconciled, why: str, run_id: str, *, last: int, cooldown: int, gate: bool,
              project_uri: str | None, method: str, on_phase: Phase):
    """The retrain the realized Ψ̄ asked for, on the latest labelled batch processed, nested under the
    reconciled batch's run (tag ``cara.catchup``)."""
    serving = registry.production()
    train_on = labelled_batch(store, registry, serving, last + 1, decided_at=record.batch)
    if train_on is None:
        note = f"{why}; not taken: no labelled batch is newer than the one production v{serving.version} was trained on"
        return state, record, {reg.TAG_PROVISIONAL: "false", reg.TAG_CATCHUP: note[:500]}
    batch = store.read(train_on, target=doc.target, space=doc.space)
    kappa = doc.kappa_at(state.retrain_seconds(doc.version))
    plan = Plan(batch=record.batch, action="retrain", reason=why, resumed=False, trigger=doc.policy, policy={},
                score=float("nan"), psi_bar=record.realized, kappa=kappa, serving=serving.version)
    outcome = apply_retrain(plan, store=store, registry=registry, doc=doc, batch=batch, in_use=serving,
                            gate_enabled=gate, psi_method=method, project_uri=project_uri, on_phase=on_phase,
                            parent_run_id=run_id, decided_at=record.batch)
    after = caught_up(state, batch=record.batch, version=outcome.challenger, gate=outcome.gate,
                      promoted=outcome.gate in PROMOTED, kappa=kappa, cooldown=cooldown,
                      error_cost=None if doc.money is None else doc.money.error_cost,
                      training_seconds=outcome.training_seconds, policy_version=doc.version)
    text = f"{why}; retrained on batch {train_on} after batch {last}: v{outcome.challenger} {outcome.gate}"
    done = Reconciled(record.batch, record.estimated, record.realized, why, outcome.gate, outcome.challenger)
    return after, done, {reg.TAG_PROVISIONAL: "false", reg.TAG_CATCHUP: text[:500]}
