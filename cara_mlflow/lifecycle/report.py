"""``status`` and ``history``: where the managed model stands, and its decision table."""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone

from ..batch_ids import remove_id, show_range
from ..errors import InputError, SetupError
from ..manager_state import STATE_FILE, ManagerState
from ..planner import PROMOTED, SchemaChange
from ..reconcile import estimate_error
from ..store import BatchStore
from ..tracking import registry as reg
from .frame import active_policy
from .pending import late_batches, next_pending
from .records import commit_point, committed_state, finished_batch_run

__all__ = ["status", "history", "production_history", "explain"]


def _managed(registry: reg.Registry) -> None:
    registry.check_reachable()
    if not registry.exists():
        raise SetupError(f"model {registry.name!r} is not managed in {registry.where}: check --name, "
                         "or run `cara-mlflow tune` and `cara-mlflow init` first")


def _revert(tags) -> dict | None:
    """``{"from": V, "to": W}`` of a batch run whose check reverted production, else None."""
    if reg.TAG_REVERT_FROM not in tags:
        return None
    return {"from": int(tags[reg.TAG_REVERT_FROM]), "to": int(tags[reg.TAG_REVERT_TO])}


def history(registry: reg.Registry) -> list[dict]:
    """The decision table: one row per committed batch, in batch order (a late batch at its id,
    with ``late`` true and the cumulative cost as of when it was processed)."""
    _managed(registry)
    rows = []
    for run in registry.runs.find("batch", statuses=("FINISHED",), max_results=50000):
        tags, metrics = run.tags, run.metrics
        rows.append({"batch": int(tags[reg.TAG_BATCH]), "decision": tags.get(reg.TAG_DECISION),
                     **_psi_columns(tags, metrics), "cumulative_cost": metrics.get("cumulative_cost"),
                     "version": int(tags[reg.TAG_MODEL_VERSION]) if tags.get(reg.TAG_MODEL_VERSION) else None,
                     "gate": tags.get(reg.TAG_GATE), "reason": tags.get("cara.reason", ""),
                     "kappa": metrics.get("kappa"), "policy_version": _int_or_none(tags.get(reg.TAG_POLICY_VERSION)),
                     "late": tags.get(reg.TAG_LATE) == "true", "deferred": tags.get(reg.TAG_DEFERRED),
                     "guard": tags.get(reg.TAG_GUARD), "spend": metrics.get("spend"),
                     "model_age": None if metrics.get("model_age") is None else int(metrics["model_age"]),
                     "revert": _revert(tags), "verify": tags.get(reg.TAG_VERIFY), "run_id": run.run_id})
    return sorted(rows, key=lambda r: r["batch"])


def _psi_columns(tags, metrics) -> dict:
    """Ψ̄ of a batch decided before its labels: ``provisional`` until reconciled, the estimate and the
    realized value (null until known); ``psi_bar`` the realized value when known, else the estimate."""
    realized = metrics.get("psi_bar_realized")
    estimated = metrics.get("psi_bar_estimated")
    return {"psi_bar": realized if realized is not None else metrics.get("psi_bar"),
            "provisional": tags.get(reg.TAG_PROVISIONAL) == "true", "psi_bar_estimated": estimated,
            "psi_bar_realized": realized if estimated is not None else metrics.get("psi_bar"),
            "catchup": tags.get(reg.TAG_CATCHUP)}


def _when(run) -> str:
    return datetime.fromtimestamp(run.start_time / 1000, timezone.utc).isoformat(timespec="seconds")


def _moves_of(run) -> list[dict]:
    """The production moves one FINISHED run records, in the order they were made."""
    tags = run.tags
    base = {"time": _when(run), "batch": run.batch, "run_id": run.run_id}
    to = _int_or_none(tags.get(reg.TAG_MODEL_VERSION))
    if run.run_type == "rollback":
        return [{**base, "by": "rollback", "from": _int_or_none(tags.get(reg.TAG_PRODUCTION_FROM)), "to": to,
                 "reason": tags.get("cara.reason", "")}]
    moves, decision = [], tags.get(reg.TAG_DECISION)
    if decision == "init":
        moves.append({**base, "by": "init", "from": None, "to": to, "reason": tags.get("cara.reason", "")})
    revert = _revert(tags)
    if revert is not None:
        moves.append({**base, "by": "auto-revert", **revert, "reason": tags.get(reg.TAG_REVERT_REASON, ""),
                      "trigger": "auto-revert"})
    if decision == "retrain" and tags.get(reg.TAG_GATE) in PROMOTED:
        by = "schema retrain" if tags.get(reg.TAG_TRIGGER) == "schema" else "promotion"
        moves.append({**base, "by": by, "from": _int_or_none(tags.get(reg.TAG_PRODUCTION_FROM)), "to": to,
                      "reason": tags.get("cara.reason", ""), "trigger": tags.get(reg.TAG_TRIGGER),
                      "gate": tags.get(reg.TAG_GATE)})
    return moves


def production_history(registry: reg.Registry) -> list[dict]:
    """Every move of the production alias, oldest first: ``by`` (init, promotion, auto-revert,
    rollback, schema retrain), ``from`` and ``to`` (versions; ``from`` null for init), ``time``
    (UTC), ``batch`` (null for a rollback), ``reason`` and the ``run_id`` that records it; a
    promotion and a revert also carry ``trigger`` (the retrain's, or ``auto-revert``)."""
    _managed(registry)
    runs = [*registry.runs.find("batch", statuses=("FINISHED",), max_results=50000),
            *registry.runs.find("rollback", statuses=("FINISHED",), max_results=50000)]
    runs.sort(key=lambda r: r.start_time)
    return [move for run in runs for move in _moves_of(run)]


def _int_or_none(value: str | None) -> int | None:
    """A tag's integer (runs from before the tag existed have none)."""
    return int(value) if value and value.isdigit() else None


def _next_batch(store: BatchStore, last: int | None, state: ManagerState | None, doc, *, resuming: bool,
                change: SchemaChange | None) -> tuple[int | None, str]:
    """The batch the next step takes, as it chooses it, and its state: none pending, waiting,
    ready (late, or retraining on new features), or malformed (why)."""
    if not store.exists():
        return None, "none pending"
    if state is None or last is None:
        info, late = store.next_after(last), False
    else:
        work = next_pending(store, state, last, in_order_first=resuming or change is not None)
        info, late = (None, False) if work is None else (work.info, work.late)
    if info is None:
        return None, "none pending"
    if not info.complete:
        if doc.decide_before_labels and not late and info.queries_ready:
            return info.id, "ready (queries only: decided on an estimate before its labels)"
        return info.id, "waiting"
    if late and change is not None:
        return info.id, (f"waiting: production cannot score this late batch ({change.describe()}); it goes "
                         "after the next batch in order retrains on the policy's features")
    try:
        store.read(info.id, target=doc.target, space=doc.space)
    except InputError as exc:
        return info.id, f"malformed: {exc}"
    if change is not None:
        return info.id, f"ready: the next step retrains on the policy's features ({change.describe()}), no gate"
    return info.id, "ready (late)" if late else "ready"


def _schema_change(registry: reg.Registry, production: reg.VersionInfo, doc) -> SchemaChange | None:
    """How the policy's features differ from those production was trained on (None: the same)."""
    with tempfile.TemporaryDirectory() as tmp:
        info, _ = registry.training_info(production, tmp)
    return SchemaChange.between(tuple(info.get("features", ())), tuple(doc.features))


def status(store: BatchStore, registry: reg.Registry, *, ui_base: str = "http://127.0.0.1:5000") -> dict:
    """Where the managed model stands: production, batches, policy, costs and UI links."""
    registry.check_reachable()
    doc = active_policy(registry)          # first: an unknown --name is named as such
    production = registry.production()
    last = commit_point(registry, write=False)
    out: dict = {"name": registry.name, "tracking_uri": registry.where, "store": str(store.root),
                 "production": {"version": production.version, "trained_on": production.trained_on,
                                "alias": registry.production_alias},
                 "last_batch": last}
    state = committed_state(registry, last) if last is not None else None
    change = _schema_change(registry, production, doc) if last is not None else None
    resuming = last is not None and production.decided_at is not None and production.decided_at > last
    out["next_batch"], out["next_state"] = _next_batch(store, last, state, doc, resuming=resuming, change=change)
    out["schema_change"] = None if change is None else {"added": list(change.added), "removed": list(change.removed)}
    out["policy"] = {"name": doc.policy, "params": dict(doc.params), "kappa": doc.kappa, "version": doc.version,
                     "task": doc.task, "loss": doc.psi.loss, "features": list(doc.features),
                     "feature_kinds": doc.feature_kinds, "guards": doc.guards.to_dict(), "psi_scale": doc.psi.scale,
                     "verify_margin": doc.verify_margin, "notify": None if not doc.notify else dict(doc.notify),
                     "decide_before_labels": doc.decide_before_labels, "backend": doc.backend.to_dict(),
                     "offline": list(doc.offline) if doc.offline else None,
                     "pool": list((doc.tuning or {}).get("pool") or [])}
    out["retrains_running"] = [{"batch": r.batch, "run_id": r.run_id, "backend": r.tags.get("cara.backend", "local")}
                               for r in registry.runs.find("retrain", statuses=("RUNNING",))]
    if state is not None:
        out["cumulative_cost"] = state.cumulative_cost
        out["last_retrain"] = None if state.last_retrain is None else state.last_retrain.to_dict()
        out["cooldown_left"] = state.cooldown_left
        out["position"] = state.position
        out["model_age"] = state.model_age(state.position)
        out["kappa_next"] = doc.kappa_at(state.retrain_seconds(doc.version))
        out["spend"] = None if doc.money is None else _spend(doc.money.error_cost, state)
        budget = doc.guards.retrain_budget
        out["retrain_attempts_in_window"] = (None if budget is None else
                                             sum(1 for a in state.retrain_attempts if a > state.position - budget[1]))
        out["pending_check"] = _pending_check(state, production)
        out["provisional"] = [p.batch for p in state.provisional]
        out["estimate_error"] = estimate_error(state)
        out["late_batches"] = sorted(state.late)
        present = late_batches(store, state)
        out["late_pending"] = [info.id for info in present if info.complete]
        out["late_waiting"] = [info.id for info in present if not info.complete]
        missing = [list(span) for span in state.missing]
        for info in present:            # a late batch on disk is pending, no longer missing
            missing = remove_id(missing, info.id)
        shown = (show_range(span, dated=state.dated) for span in missing)
        out["missing"] = [text for text in shown if text is not None]
    out["ui"] = registry.ui_links(ui_base.rstrip("/"))
    return out


def explain(registry: reg.Registry, batch_id: int) -> dict:
    """Why batch ``batch_id`` was kept or retrained, from its batch run: Ψ̄ and its terms, what it
    was compared with (``threshold``), the guard rails in force and the one that applied, and
    ``kappa_to_flip`` — the κ at which the policy's answer flips (Retrain at or below it, Keep
    above; null when no κ changes it: CARA-P, NR, the detectors, or when a guard rail, a forced
    retrain, a resumed promotion or a late batch decided)."""
    _managed(registry)
    run = finished_batch_run(registry, batch_id)
    if run is None:
        raise InputError(f"batch: no committed batch {batch_id} for {registry.name!r}; "
                         "`cara-mlflow history` lists the batches processed")
    tags, metrics = run.tags, run.metrics
    policy = registry.runs.load_json(run.run_id, STATE_FILE).get("policy", {})
    out = {"batch": batch_id, "decision": tags.get(reg.TAG_DECISION), "reason": tags.get("cara.reason", ""),
            "psi_bar": metrics.get("psi_bar"),      # what it was decided on (the estimate, before labels)
            **{k: v for k, v in _psi_columns(tags, metrics).items() if k != "psi_bar"},
            "psi_terms": {"now": metrics.get("psi_now_estimated", metrics.get("psi_now")),   # as decided
                          "then": metrics.get("psi_then")},
            "score": metrics.get("score"), "threshold": metrics.get("threshold"), "kappa": metrics.get("kappa"),
            "kappa_to_flip": metrics.get("kappa_to_flip"),
            "retrain_cost_to_flip": (metrics["kappa_to_flip"] * metrics["error_cost"]
                                     if "kappa_to_flip" in metrics and "error_cost" in metrics else None),
            "policy": {"name": policy.get("policy"), "version": _int_or_none(tags.get(reg.TAG_POLICY_VERSION))},
            "guards": {"in_force": tags.get(reg.TAG_GUARDS), "applied": tags.get(reg.TAG_GUARD),
                       "deferred": tags.get(reg.TAG_DEFERRED),
                       "model_age": None if metrics.get("model_age") is None else int(metrics["model_age"])},
            "trigger": tags.get(reg.TAG_TRIGGER), "gate": tags.get(reg.TAG_GATE),
            "version": _int_or_none(tags.get(reg.TAG_MODEL_VERSION)), "late": tags.get(reg.TAG_LATE) == "true",
            "verify": tags.get(reg.TAG_VERIFY), "revert": _revert(tags), "run_id": run.run_id}
    return {**out, "no_flip_reason": None if out["kappa_to_flip"] is not None else _no_flip(out)}


def _no_flip(e: dict) -> str:
    """Why no κ turns this batch's answer around."""
    reason = e["reason"] or ""
    if e["decision"] in ("init", "skip"):
        return f"not a policy's decision ({e['decision']})"
    if e["late"]:
        return "a late batch is never retrained, whatever κ"
    if e["guards"]["applied"]:
        return f"the guard rail {e['guards']['applied']} decided"
    if e["trigger"] == "manual":
        return "forced by --force-retrain"
    if reason.startswith("resuming"):
        return "a promotion resumed after a crash"
    if e["trigger"] == "schema":
        return "a retrain onto the re-tuned features"
    if e["score"] is not None and e["score"] <= 0 and e["threshold"] is not None:
        return f"the policy's score {e['score']:.4g} ≤ 0: no κ > 0 retrains"
    return f"{e['policy']['name'] or 'the policy'} does not compare anything with κ"


def _pending_check(state: ManagerState, production: reg.VersionInfo) -> dict | None:
    """The check due at the next batch in order, with why it will be skipped (as ``step`` would say)."""
    if state.verify is None:
        return None
    check = state.verify.to_dict()
    if check["skip"] is None and production.version != check["version"]:
        check["skip"] = (f"production was moved by hand (to v{production.version}) since v{check['version']} "
                         "was promoted")
    return check


def _spend(error_cost: float, state: ManagerState) -> dict:
    """The money spent (on the batches decided with an error cost): in all, and over the last
    batches (staleness × error cost, retrains × their cost)."""
    staleness = sum(a for a, _ in state.recent_spend)
    retrains = sum(b for _, b in state.recent_spend)
    return {"error_cost": error_cost, "total": state.spend, "last_batches": len(state.recent_spend),
            "recent": staleness + retrains, "recent_staleness": staleness, "recent_retrains": retrains}
