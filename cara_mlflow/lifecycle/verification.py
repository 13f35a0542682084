"""The check of a promotion at the next batch in order, and the automatic revert it may call for.

The batch's step first measures Ψ̄ with production (the version just promoted); then the version
it replaced answers the same batch and :func:`cara_mlflow.verify.compare_models` compares them.
If the new one is worse beyond the margin, the version is tagged ``cara.reverted`` (with the
batch, ``cara.reverted_at``) and production moves back, before the batch's own decision is made
with the restored model. A step killed after that alias move finds, on its rerun, production at
the replaced version and the tag naming this batch: the revert is recognised, not taken for a
rollback by hand.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import numpy as np

from ..losses import per_sample_losses, resolve_loss
from ..manager_state import ManagerState, PendingCheck
from ..planner import SchemaChange
from ..policy_doc import PolicyDocument
from ..tracking import registry as reg
from ..verify import VERIFY_FLOOR, VERIFY_MARGIN, Verdict, checked_rows, compare_models
from .frame import REVERT_PHASE, Phase, no_phase

__all__ = ["Check", "check_promotion", "revert", "TAG_REVERTED", "TAG_REVERTED_AT"]

TAG_REVERTED = "cara.reverted"          # version tag: why the check after its promotion reverted it
TAG_REVERTED_AT = "cara.reverted_at"    # version tag: the batch whose check reverted it


@dataclass(frozen=True)
class Check:
    """The check of the promotion of ``new`` (which replaced ``old``) at this batch."""

    status: str                   # passed | reverted | skipped
    reason: str
    new: int
    old: int
    verdict: Verdict | None = None
    done: bool = False            # reverted already (a killed step's alias move, found on its rerun)

    @property
    def reverted(self) -> bool:
        return self.status == "reverted"

    @property
    def tag(self) -> str:
        """The batch run's ``cara.verify``: passed, reverted, or ``skipped: why``."""
        return f"skipped: {self.reason}"[:500] if self.status == "skipped" else self.status


def _features(registry: reg.Registry, version: reg.VersionInfo) -> tuple[str, ...]:
    with tempfile.TemporaryDirectory() as tmp:
        info, _ = registry.training_info(version, tmp)
    return tuple(info.get("features", ()))


def _losses(registry: reg.Registry, version: reg.VersionInfo, batch, doc: PolicyDocument, rows: np.ndarray):
    """The version's losses on ``rows`` of the batch (the rows the check reads), 0 elsewhere: only
    those rows are predicted, so the check's cost does not grow with the batch."""
    with tempfile.TemporaryDirectory() as tmp:
        model = registry.load_model(version, tmp)
    losses = np.zeros(batch.n_rows)
    losses[rows] = per_sample_losses(resolve_loss(doc.psi.loss), batch.y[rows], model.predict(batch.frame.iloc[rows]),
                                     f"batch {batch.id}")
    return losses


def _skip_reason(registry: reg.Registry, pending: PendingCheck, serving: reg.VersionInfo, batch_id: int,
                 doc: PolicyDocument) -> tuple[str | None, bool]:
    """Why the check cannot be made (None: it can), and whether it is a revert already done."""
    if pending.skip:
        return pending.skip, False
    done = (serving.version == pending.replaced
            and registry.version(pending.version).tags.get(TAG_REVERTED_AT) == str(batch_id))
    if serving.version != pending.version and not done:
        return f"production was moved by hand (to v{serving.version}) since v{pending.version} was promoted", False
    for version in (pending.version, pending.replaced):
        change = SchemaChange.between(_features(registry, registry.version(version)), tuple(doc.features))
        if change is not None:
            return f"v{version} was trained on other features than the batch's ({change.describe()})", done
    return None, done


def check_promotion(registry: reg.Registry, doc: PolicyDocument, state: ManagerState, serving: reg.VersionInfo,
                    batch, serving_losses, *, margin: float | None = VERIFY_MARGIN) -> Check | None:
    """The check due at ``batch`` (None when no promotion waits for one). ``serving_losses``: the
    per-row losses of production on the batch, as the step measured them (None: not measured).
    ``margin`` None: the check is off (recorded as skipped), unless it already reverted."""
    pending = state.verify
    if pending is None:
        return None
    why, done = _skip_reason(registry, pending, serving, batch.id, doc)
    if why is None and margin is None and not done:
        why = "the check after a promotion is off (--verify-margin off)"
    if why is not None:
        return Check("skipped", why, pending.version, pending.replaced)
    rows = checked_rows(batch.n_rows, (batch.id, 3))

    def losses_of(version: int):
        if version == serving.version and serving_losses is not None:
            return serving_losses
        return _losses(registry, registry.version(version), batch, doc, rows)
    verdict = compare_models(batch.queries, batch.coordinates(), losses_of(pending.version),
                             losses_of(pending.replaced), doc.psi.gamma, scale=doc.psi.scale, seed=(batch.id, 3),
                             margin=VERIFY_MARGIN if margin is None else margin,
                             floor=VERIFY_FLOOR if doc.psi.loss == "zero_one" else 0.0)
    if verdict is None:
        return Check("skipped", "the batch's rows carry no weight near its queries", pending.version,
                     pending.replaced)
    status = "reverted" if verdict.revert or done else "passed"
    return Check(status, verdict.describe(pending.version, pending.replaced), pending.version, pending.replaced,
                 verdict, done)


def revert(registry: reg.Registry, check: Check, batch_id: int, on_phase: Phase = no_phase) -> None:
    """Move production back to the replaced version: the reverted version is tagged first (so a
    rerun recognises the move, and the default ``rollback`` never promotes it again)."""
    if check.done:
        return
    registry.tag_version(check.new, TAG_REVERTED, f"batch {batch_id}: {check.reason}"[:5000])
    registry.tag_version(check.new, TAG_REVERTED_AT, batch_id)
    registry.set_production(check.old)
    on_phase(REVERT_PHASE)
