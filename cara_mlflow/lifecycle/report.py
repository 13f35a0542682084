"""``status`` and ``history``: where the managed model stands, and its decision table."""

from __future__ import annotations

from ..errors import InputError, SetupError
from ..store import BatchStore
from ..tracking import registry as reg
from .frame import active_policy
from .records import committed_state

__all__ = ["status", "history"]


def history(registry: reg.Registry) -> list[dict]:
    """The decision table: one row per committed batch, in batch order."""
    registry.check_reachable()
    if not registry.exists():
        raise SetupError(f"model {registry.name!r} is not managed in {registry.where}: check --name, "
                         "or run `cara-mlflow tune` and `cara-mlflow init` first")
    rows = []
    for run in registry.runs.find("batch", statuses=("FINISHED",), max_results=50000):
        tags, metrics = run.tags, run.metrics
        rows.append({"batch": int(tags[reg.TAG_BATCH]), "decision": tags.get(reg.TAG_DECISION),
                     "psi_bar": metrics.get("psi_bar"), "cumulative_cost": metrics.get("cumulative_cost"),
                     "version": int(tags[reg.TAG_MODEL_VERSION]) if tags.get(reg.TAG_MODEL_VERSION) else None,
                     "gate": tags.get(reg.TAG_GATE), "reason": tags.get("cara.reason", ""),
                     "kappa": metrics.get("kappa"), "policy_version": _int_or_none(tags.get(reg.TAG_POLICY_VERSION)),
                     "run_id": run.run_id})
    return sorted(rows, key=lambda r: r["batch"])


def _int_or_none(value: str | None) -> int | None:
    """A tag's integer (runs from before the tag existed have none)."""
    return int(value) if value and value.isdigit() else None


def _next_batch(store: BatchStore, last: int | None, doc) -> tuple[int | None, str]:
    """The next pending batch and its state: none pending, waiting, ready, or malformed (why)."""
    nxt = store.next_after(last) if store.exists() else None
    if nxt is None:
        return None, "none pending"
    if not nxt.complete:
        return nxt.id, "waiting"
    try:
        store.read(nxt.id, target=doc.target, space=doc.space)
    except InputError as exc:
        return nxt.id, f"malformed: {exc}"
    return nxt.id, "ready"


def status(store: BatchStore, registry: reg.Registry, *, ui_base: str = "http://127.0.0.1:5000") -> dict:
    """Where the managed model stands: production, batches, policy, costs and UI links."""
    registry.check_reachable()
    production = registry.production()
    last = registry.last_batch()
    doc = active_policy(registry)
    out: dict = {"name": registry.name, "tracking_uri": registry.where, "store": str(store.root),
                 "production": {"version": production.version, "trained_on": production.trained_on,
                                "alias": registry.production_alias},
                 "last_batch": last}
    out["next_batch"], out["next_state"] = _next_batch(store, last, doc)
    out["policy"] = {"name": doc.policy, "params": dict(doc.params), "kappa": doc.kappa, "version": doc.version,
                     "task": doc.task, "loss": doc.psi.loss, "features": list(doc.features),
                     "feature_kinds": doc.feature_kinds}
    if last is not None:
        state = committed_state(registry, last)
        out["cumulative_cost"] = state.cumulative_cost
        out["last_retrain"] = None if state.last_retrain is None else state.last_retrain.to_dict()
        out["cooldown_until"] = state.cooldown_until
    out["ui"] = registry.ui_links(ui_base.rstrip("/"))
    return out
