"""``tune --pool``: the offline history of a team's other models of the same process, pooled into the
tuning of a threshold (issue 21).

At high κ a 25-batch offline window holds one or two ORACLE retrains and CARA-T's exact tuning is a
tie-break inside a wide optimal interval; other models of the same process (one per region, per
shop, per product line) have windows of their own. Each pooled model's active tuned policy lends the
offline cost matrix its tuning run logged (``tuning/cost_matrix.npy``), re-priced at this tune's κ
(its Ψ̄ are kept, its diagonal becomes κ), and the threshold minimises the cost summed over every
window (:meth:`cara_mlflow.tuning.PolicyTuner.fit`). Ψ̄ must be in the same unit: the same loss and
Ψ̄ scale. Everything is read before any model is trained, and nothing is written to the pooled
models.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from ..costs import check_cost_matrix
from ..errors import InputError, SetupError
from ..policies import POLICIES
from ..policy_doc import PolicyDocument
from ..tracking import registry as reg

__all__ = ["PooledWindow", "check_pool", "read_pool", "check_units", "pool_matrices", "pool_warnings"]

MATRIX = "tuning/cost_matrix.npy"


@dataclass(frozen=True)
class PooledWindow:
    """One pooled model's offline window: ``costs`` as its tuning run logged them."""

    name: str
    version: int
    loss: str
    scale: str
    costs: np.ndarray
    gamma: float = float("nan")
    queries_per_batch: float | None = None      # the median over its window; None if tuned before it was kept

    def describe(self) -> dict:
        return {"name": self.name, "policy_version": self.version, "batches": int(self.costs.shape[0])}


def check_pool(names, own: str, policy: str) -> list[str]:
    """The pooled model names, checked before anything is read: distinct, not ``own``, and a
    threshold policy to tune (the pooled search is a threshold's).

    >>> check_pool(["east", "west"], "north", "cara-t")
    ['east', 'west']
    >>> check_pool(["east"], "north", "cara-p")
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: pool: pooled history tunes a threshold (cara-t, cara-ct), not the cara-p policy; ...
    """
    try:
        names = [reg.check_model_name(n) for n in names]
    except InputError as exc:
        raise InputError(f"pool: {exc}") from None
    if not names:
        return []
    if not POLICIES[policy].tunes_a_threshold():
        raise InputError(f"pool: pooled history tunes a threshold (cara-t, cara-ct), not the {policy} policy; "
                         "drop --pool or tune --policy cara-t")
    if own in names:
        raise InputError(f"pool: {own} is the model being tuned, its own window is already in; pool other models")
    if len(set(names)) != len(names):
        raise InputError(f"pool: {', '.join(names)} names a model twice")
    return names


def read_pool(registry: reg.Registry, names: list[str]) -> list[PooledWindow]:
    """Each pooled model's active policy (version, loss, Ψ̄ scale) and its tuning run's cost matrix."""
    return [_read_one(reg.Registry(registry.tracking_uri, name), name) for name in names]


def _read_one(other: reg.Registry, name: str) -> PooledWindow:
    try:
        text, version, raw = other.tuned_window(MATRIX)
    except reg.ArtifactsUnreadable as exc:
        raise InputError(f"pool: {exc}; pooled models need artifacts every host can read: one tracking server "
                         "that proxies artifacts (mlflow server), or an artifact path shared by the stores") from None
    except SetupError:
        raise InputError(f"pool: {name} has no tuned policy {name}.policy@active in {other.where}; pooled models "
                         "share one tracking store (set MLFLOW_TRACKING_URI for every store): tune "
                         f"{name} there first, or drop it from --pool") from None
    doc = PolicyDocument.from_json(text, f"{name}.policy@active", version=version)
    if raw is None:
        raise InputError(f"pool: {name}.policy v{version} ({doc.policy}) has no offline cost matrix "
                         f"({MATRIX} of its tuning run); re-tune {name} with a tuned policy such as cara-t")
    try:
        costs = check_cost_matrix(np.load(io.BytesIO(raw), allow_pickle=False))
    except (InputError, ValueError, OSError) as exc:
        raise InputError(f"pool: {name}.policy v{version}'s {MATRIX} is not a cost matrix ({exc}); "
                         f"re-tune {name}") from None
    return PooledWindow(name, version, doc.psi.loss, doc.psi.scale, costs, doc.psi.gamma,
                        (doc.tuning or {}).get("queries_per_batch"))


def pool_warnings(pool: list[PooledWindow], doc: PolicyDocument, queries_per_batch: float) -> list[str]:
    """What may make a pooled window's Ψ̄ a different quantity than this one's, though in one unit:
    Ψ sums over a batch's queries (other query counts scale it), and the paper's scale also counts
    the kernel's mass near the queries (another γ changes it)."""
    notes = []
    for w in pool:
        q = w.queries_per_batch
        if q and queries_per_batch and max(q / queries_per_batch, queries_per_batch / q) > 1.25:
            notes.append(f"warning: pool: {w.name}'s batches hold {q:g} queries (median), this window's "
                         f"{queries_per_batch:g}: Ψ̄ sums over a batch's queries, so its staleness counts "
                         f"{q / queries_per_batch:.2g}× as much; pool models whose batches are alike")
        if doc.psi.scale == "paper" and w.gamma == w.gamma and not np.isclose(w.gamma, doc.psi.gamma, rtol=0.1):
            notes.append(f"warning: pool: {w.name}'s kernel γ is {w.gamma:.4g}, this window's {doc.psi.gamma:.4g}: "
                         "on --psi-scale paper Ψ̄ counts the kernel's mass near the queries, so the two differ")
    return notes


def check_units(pool: list[PooledWindow], doc: PolicyDocument) -> None:
    """Every pooled window's Ψ̄ in ``doc``'s unit (loss and scale): said before any model is trained."""
    for w in pool:
        if (w.loss, w.scale) != (doc.psi.loss, doc.psi.scale):
            raise InputError(f"pool: {w.name} measures Ψ̄ with loss {w.loss}, scale {w.scale}; this tune with "
                             f"loss {doc.psi.loss}, scale {doc.psi.scale}: pool models whose Ψ̄ share a unit "
                             "(--loss, --psi-scale)")


def pool_matrices(pool: list[PooledWindow], doc: PolicyDocument) -> list[np.ndarray]:
    """The pooled windows re-priced at ``doc``'s κ (their units checked by :func:`check_units`)."""
    check_units(pool, doc)
    out = []
    for w in pool:
        C = np.array(w.costs, dtype=np.float64)
        np.fill_diagonal(C, doc.kappa)
        out.append(C)
    return out
