"""Where κ matters on an offline window, so that ``tune`` can say when a κ is out of range.

κ is in Ψ̄'s units, which a user cannot guess: ``--kappa 4000`` can mean "never retrain" on one
history and ``--kappa 0.01`` "retrain at every batch". The ORACLE answers it exactly on the
offline cost matrix. Its number of retrains does not increase with κ (for κ₁ < κ₂, adding the
retrains' cost κ·n to both optimal strategies and comparing shows n(κ₁) ≥ n(κ₂)), so two
bisections find where it retrains at every batch and where it never does.

>>> import numpy as np
>>> psi_bar = np.array([[0.0, 1.0, 3.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
>>> always, never = oracle_kappa_range(psi_bar)
>>> round(always, 3), round(never, 3)
(1.0, 3.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .costs import with_kappa
from .oracle import solve

__all__ = ["oracle_retrains", "oracle_kappa_range", "KappaAdvice", "kappa_advice"]

_STEPS = 60   # bisection steps in log κ: a relative precision far below what anyone types


def oracle_retrains(psi_bar: np.ndarray, kappa: float) -> int:
    """How many times the ORACLE retrains on the window whose staleness matrix is ``psi_bar``."""
    return solve(with_kappa(psi_bar, kappa)).n_retrains


def _bisect(psi_bar: np.ndarray, lo: float, hi: float, holds) -> float:
    """The boundary between ``lo`` (where ``holds``) and ``hi`` (where not), in log κ."""
    for _ in range(_STEPS):
        mid = float(np.sqrt(lo * hi))
        lo, hi = (mid, hi) if holds(oracle_retrains(psi_bar, mid)) else (lo, mid)
    return lo if holds(oracle_retrains(psi_bar, lo)) else hi


def oracle_kappa_range(psi_bar: np.ndarray) -> tuple[float | None, float]:
    """``(always, never)``: the ORACLE retrains at every batch after the first for κ ≤ ``always``
    (None when it never does, e.g. where Ψ̄ ≤ 0) and never for κ ≥ ``never``.

    Retraining can never save more than Σ|Ψ̄| of the window, so κ = 2·Σ|Ψ̄| bounds ``never``.
    """
    psi_bar = np.asarray(psi_bar, dtype=float)
    T = psi_bar.shape[0]
    upper = psi_bar[np.triu_indices(T, k=1)]
    total = float(np.abs(upper).sum())
    if T < 2 or total == 0.0:
        return None, 0.0
    hi = 2.0 * total * (1 + 1e-9)
    tiny = total * 1e-12
    never = _bisect(psi_bar, tiny, hi, lambda n: n > 0) if oracle_retrains(psi_bar, tiny) > 0 else tiny
    if oracle_retrains(psi_bar, never) > 0:   # the boundary itself: step just past it
        never *= 1 + 1e-9
    always = None
    if oracle_retrains(psi_bar, tiny) == T - 1:
        always = _bisect(psi_bar, tiny, hi, lambda n: n == T - 1)
    return always, never


@dataclass(frozen=True)
class KappaAdvice:
    """What ``tune`` says about κ: the offline Ψ̄ spread, the ORACLE's range, warnings."""

    psi_bar_quantiles: tuple[float, float, float]   # 5 %, median, 95 % of the offline Ψ̄[p, t], p < t
    oracle_always: float | None
    oracle_never: float
    notes: tuple[str, ...]


def kappa_advice(psi_bar: np.ndarray, kappa: float, policy: str, policy_retrains: int,
                 oracle_retrains_at_kappa: int) -> KappaAdvice:
    """The notes ``tune`` prints about κ, with a warning when κ lies where nothing is decided.

    >>> import numpy as np
    >>> psi_bar = np.array([[0.0, 1.0, 3.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    >>> advice = kappa_advice(psi_bar, 4000.0, "cara-t", 0, 0)
    >>> advice.notes[-1].startswith("warning: κ=4000 is at or above 3")
    True
    """
    T = psi_bar.shape[0]
    upper = np.asarray(psi_bar, dtype=float)[np.triu_indices(T, k=1)]
    q = tuple(float(v) for v in np.quantile(upper, [0.05, 0.5, 0.95]))
    always, never = oracle_kappa_range(psi_bar)
    useful = f"{always:.3g} … {never:.3g}" if always is not None else f"below {never:.3g}"
    notes = [f"offline Ψ̄ of a model on a later batch: median {q[1]:.3g} (5–95 %: {q[0]:.3g} … {q[2]:.3g}); "
             f"at κ={kappa:g} the tuned {policy} retrains {policy_retrains} and the ORACLE {oracle_retrains_at_kappa} "
             f"times in the {T - 1} offline batches after the first",
             "the ORACLE retrains at every offline batch for κ ≤ "
             f"{always:.3g} and never for κ ≥ {never:.3g}" if always is not None else
             f"the ORACLE never retrains offline for κ ≥ {never:.3g}"]
    if kappa >= never:
        notes.append(f"warning: κ={kappa:g} is at or above {never:.3g}: no retrain pays for itself on the offline "
                     f"window (the ORACLE never retrains there), so {policy} will rarely or never retrain; "
                     f"κ where decisions change here: {useful} (κ is in Ψ̄ units: README, Choosing κ)")
    elif always is not None and kappa <= always:
        notes.append(f"warning: κ={kappa:g} is at or below {always:.3g}: retraining is so cheap that the ORACLE "
                     f"retrains at every offline batch, so {policy} will retrain at (almost) every step; "
                     f"κ where decisions change here: {useful} (κ is in Ψ̄ units: README, Choosing κ)")
    return KappaAdvice(q, always, never, tuple(notes))
