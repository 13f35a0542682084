"""What κ would have turned a decision around (``cara-mlflow explain``'s ``kappa_to_flip``).

A policy's answer at a batch depends on κ only through the comparisons it makes with it (MARKOV
and ``rent`` compare with κ itself; CARA-T and CARA-CT with thresholds relative to κ). For every
policy here a Retrain at κ stays a Retrain at any smaller κ (retraining is cheaper), so the
answer flips at one boundary κ*: Retrain for κ ≤ κ*, Keep above. :func:`kappa_to_flip` finds it
by re-deciding a copy of the policy, as it was before the batch, at other κ — it needs no
knowledge of the policy's rule, and it returns ``None`` when no κ in a range of 10⁻¹²…10¹² times
the actual one changes the answer (CARA-P, NR, the drift detectors: they never look at κ).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from .policies import POLICIES, Observation, policy_from_dict

__all__ = ["kappa_to_flip"]

_SPAN = 1e12        # how far from the actual κ a flip is looked for, as a factor either way
_STEPS = 80         # bisection steps in log κ: a relative precision far below 1e-9


def _retrains(policy: Mapping[str, Any], obs: Observation, kappa: float) -> bool:
    return policy_from_dict(policy).decide(replace(obs, kappa=float(kappa))).retrain


def kappa_to_flip(policy: Mapping[str, Any], obs: Observation) -> float | None:
    """The boundary κ* of the decision of ``policy`` (its JSON before deciding) on ``obs``.

    The decision at ``obs.kappa`` is Retrain for κ ≤ κ* and Keep above; ``None`` when κ does not
    change it. The policy given is not modified.

    >>> from cara_mlflow.policies import make_policy
    >>> obs = Observation(t=3, trained_on=2, psi_bar=2.5, kappa=4.0)
    >>> round(kappa_to_flip(make_policy("markov").to_dict(), obs), 9)     # Ψ̄ ≥ κ flips at κ = Ψ̄
    2.5
    >>> kappa_to_flip(make_policy("cara-p", phi=3).to_dict(), obs) is None
    True
    >>> kappa_to_flip(make_policy("adwin").to_dict(), obs) is None
    True
    """
    if POLICIES[policy["policy"]].needs_errors:    # the drift detectors never look at κ: spare a pass over
        return None                                # the batch's errors for each κ tried
    kappa = float(obs.kappa)
    base = _retrains(policy, obs, kappa)
    far = kappa * (_SPAN if base else 1 / _SPAN)
    if _retrains(policy, obs, far) == base:
        return None
    # bracket [lo, hi] in log κ with Retrain at lo and Keep at hi
    lo, hi = (np.log(kappa), np.log(far)) if base else (np.log(far), np.log(kappa))
    for _ in range(_STEPS):
        mid = (lo + hi) / 2
        if _retrains(policy, obs, np.exp(mid)):
            lo = mid
        else:
            hi = mid
    return float(np.exp(lo))
