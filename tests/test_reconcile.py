"""The pure side of decisions before labels (cara_mlflow/reconcile.py and the planner's rules):
reconciling in any order gives the state a policy fed the realized values all along would have,
a missed retrain is flagged exactly when the realized value asks for it, and a provisional Retrain
without new labels is deferred."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cara_mlflow.manager_state import ManagerState
from cara_mlflow.planner import (
    NO_NEW_LABELS,
    BatchObservation,
    InUse,
    Production,
    RetrainOutcome,
    _doc,
    plan_step,
    settle,
)
from cara_mlflow.policies import Observation, make_policy
from cara_mlflow.reconcile import caught_up, estimate_error, reconcile


def _provisional_keeps(policy: str, params: dict, estimates, *, kappa: float = 100.0):
    """Batches 1..n decided on ``estimates`` with a κ too high for any retrain... under the policy's
    own threshold the plans are Keeps; the state after each, through the planner's settle."""
    doc = _doc(policy, params, kappa)
    doc = type(doc).from_dict({**doc.to_dict(), "decide_before_labels": True})
    state = ManagerState.fresh(make_policy(policy, **params), version=1, kappa=kappa, batch=0)
    plans = []
    for b, psi in enumerate(estimates, start=1):
        plan = plan_step(doc, state, Production(1, 0), InUse(1, False),
                         BatchObservation(batch=b, psi_bar=psi, n_classes=2, previous=b - 1, provisional=True,
                                          labelled=None))
        plans.append(plan)
        state = settle(plan, state, None, cooldown=3)
    return doc, state, plans


@pytest.mark.parametrize("seed", range(6))
def test_reconciling_in_any_order_gives_the_realized_run(seed):
    """CARA-CT's accumulated staleness after reconciling every batch (in a random order) equals that
    of the policy fed the realized values from the start; the cost moves by Σ (realized − estimate)."""
    rng = np.random.default_rng(seed)
    n = 6
    estimates, realized = rng.uniform(0, 0.3, n), rng.uniform(0, 0.3, n)
    _, state, plans = _provisional_keeps("cara-ct", {"tau_cum": 50.0}, estimates)
    assert all(p.action == "keep" for p in plans)
    assert [p.batch for p in state.provisional] == list(range(1, n + 1))
    before = state.cumulative_cost
    for b in rng.permutation(np.arange(1, n + 1)):
        state, catchup = reconcile(state, int(b), float(realized[b - 1]))
        assert catchup is False
    truth = make_policy("cara-ct", tau_cum=50.0)
    for t, psi in enumerate(realized, start=1):
        truth.decide(Observation(t=t, trained_on=t - 1, psi_bar=float(psi), errors=None, kappa=100.0))
    assert json.dumps(state.policy, sort_keys=True) == json.dumps(truth.to_dict(), sort_keys=True)
    assert state.cumulative_cost == pytest.approx(before + realized.sum() - estimates.sum())
    assert state.provisional == () and state.observed == () and state.policy_base is None
    assert ManagerState.from_json(json.dumps(state.to_dict())) == state
    assert sorted(state.estimate_errors) == [(b, pytest.approx(estimates[b - 1]), pytest.approx(realized[b - 1]))
                                             for b in range(1, n + 1)]


def test_a_missed_retrain_is_flagged_when_the_realized_value_asks_for_it():
    """CARA-T (τ = 1): estimates 0.2 and 0.3 kept; batch 2 realized at 5.0 asks for a retrain the
    estimate missed; batch 1 realized at 0.1 does not."""
    doc, state, plans = _provisional_keeps("cara-t", {"tau": 1.0}, [0.2, 0.3])
    assert all(p.action == "keep" and not p.wanted for p in plans)
    state, catchup = reconcile(state, 1, 0.1)
    assert catchup is False
    state, catchup = reconcile(state, 2, 5.0)
    assert catchup is True
    after = caught_up(state, batch=2, version=2, gate="passed", promoted=True, kappa=doc.kappa, cooldown=3)
    assert after.model_version == 2 and after.cumulative_cost == pytest.approx(state.cumulative_cost + doc.kappa)
    assert after.last_retrain.batch == 2 and after.retrain_attempts == (state.position,)
    rejected = caught_up(state, batch=2, version=3, gate="rejected", promoted=False, kappa=doc.kappa, cooldown=3)
    assert rejected.model_version == 1 and rejected.cooldown_left == 3


def test_no_catch_up_for_a_batch_before_a_promotion():
    """Once production changed, the policy restarted: a batch decided before that is reconciled
    (its cost corrected) but its realized value no longer asks for anything."""
    doc, state, _ = _provisional_keeps("cara-t", {"tau": 1.0}, [0.2])
    plan = plan_step(doc, state, Production(1, 0), InUse(1, False),
                     BatchObservation(batch=2, psi_bar=3.0, n_classes=2, previous=1, provisional=True, labelled=1))
    assert plan.action == "retrain" and plan.train_on == 1
    state = settle(plan, state, RetrainOutcome(challenger=2, gate="passed"), cooldown=3)
    assert [p.batch for p in state.provisional] == [1, 2] and state.observed == ()
    cost = state.cumulative_cost
    state, catchup = reconcile(state, 1, 9.0)
    assert catchup is False and state.cumulative_cost == pytest.approx(cost + 9.0 - 0.2)
    state, catchup = reconcile(state, 2, 9.0)                # a retrain batch paid κ: nothing to correct
    assert catchup is False and state.cumulative_cost == pytest.approx(cost + 9.0 - 0.2)
    assert estimate_error(state)["batches"] == [1, 2]


def test_a_provisional_retrain_without_new_labels_is_deferred():
    doc, state, _ = _provisional_keeps("cara-t", {"tau": 1.0}, [])
    plan = plan_step(doc, state, Production(1, 0), InUse(1, False),
                     BatchObservation(batch=1, psi_bar=3.0, n_classes=2, previous=0, provisional=True, labelled=None))
    assert plan.action == "keep" and plan.wanted and plan.guard == NO_NEW_LABELS
    assert plan.deferred == "no-new-labels" and "no new labels" in plan.reason
    forced = plan_step(doc, state, Production(1, 0), InUse(1, False),
                       BatchObservation(batch=1, psi_bar=0.0, n_classes=2, previous=0, provisional=True, labelled=None),
                       force_retrain=True)
    assert forced.action == "keep" and forced.deferred == "no-new-labels"


def test_without_the_setting_nothing_is_kept():
    doc = _doc("cara-ct", {"tau_cum": 50.0})
    state = ManagerState.fresh(make_policy("cara-ct", tau_cum=50.0), version=1, kappa=5.0, batch=0)
    plan = plan_step(doc, state, Production(1, 0), InUse(1, False),
                     BatchObservation(batch=1, psi_bar=0.5, n_classes=2, previous=0))
    after = settle(plan, state, None, cooldown=3)
    assert after.provisional == () and after.observed == () and after.policy_base is None
    assert set(after.to_dict()) == set(state.to_dict())      # the stored state is as before
