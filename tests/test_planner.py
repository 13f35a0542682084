"""The pure planner: every rule of a step as plain values in, a plan and a state out — no MLflow."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from cara_mlflow.batch_ids import show_range
from cara_mlflow.errors import InputError
from cara_mlflow.manager_state import LastRetrain, ManagerState
from cara_mlflow.planner import (
    BatchObservation,
    InUse,
    Production,
    RetrainOutcome,
    advance,
    model_in_use,
    plan_step,
    settle,
)
from cara_mlflow.policies import make_policy
from cara_mlflow.policy_doc import PolicyDocument

KAPPA = 5.0


def _params(policy, params):
    return params or ({"tau_cum": 3.0} if policy == "cara-ct" else {})


def doc(policy="cara-ct", **params) -> PolicyDocument:
    params = _params(policy, params)
    return PolicyDocument.from_dict({"format": 1, "name": "m", "policy": policy, "params": params, "kappa": KAPPA,
                                     "psi": {"gamma": 1.0}, "target": "label", "features": ["x"],
                                     "trainer": {"model": "lr"}})


def state(policy="cara-ct", version=1, cost=KAPPA, cooldown_left=0, position=4, **params) -> ManagerState:
    params = _params(policy, params)
    return ManagerState(policy=make_policy(policy, **params).to_dict(), cumulative_cost=cost, model_version=version,
                        cooldown_left=cooldown_left, last_retrain=LastRetrain(4, version, "off"), position=position)


def obs(batch, psi_bar, n_classes=2, errors=None, late=False, previous=None) -> BatchObservation:
    return BatchObservation(batch=batch, psi_bar=psi_bar, n_classes=n_classes, errors=errors, late=late,
                            previous=previous)


PROD = Production(version=1, trained_on=4)
IN_USE = InUse(version=1, resumed=False)


def test_keep_pays_psi_and_carries_the_policy_state():
    s = state()
    plan = plan_step(doc(), s, PROD, IN_USE, obs(5, 1.25))
    assert (plan.action, plan.trigger, plan.retrain) == ("keep", None, False)
    after = settle(plan, s, None, cooldown=3)
    assert after.cumulative_cost == KAPPA + 1.25 and after.model_version == 1
    assert after.policy["state"] == {"cum": 1.25, "n": 1}
    assert after.last_retrain == s.last_retrain and after.cooldown_left == 0 and after.position == 5


def test_retrain_that_lands_pays_kappa_resets_the_policy_and_moves_production():
    s = state(cost=7.0)
    s = settle(plan_step(doc(), s, PROD, IN_USE, obs(5, 2.0)), s, None, cooldown=3)     # cum 2 < 3: keep
    plan = plan_step(doc(), s, PROD, IN_USE, obs(6, 1.5))                               # cum 3.5 >= 3
    assert plan.action == "retrain" and plan.trigger == "cara-ct" and "≥ τ_cum=3" in plan.reason
    after = settle(plan, s, RetrainOutcome(challenger=2, gate="passed"), cooldown=3)
    assert after.cumulative_cost == 7.0 + 2.0 + KAPPA
    assert after.model_version == 2 and after.cooldown_left == 0
    assert after.policy["state"] == {"cum": 0.0, "n": 0}                               # production changed
    assert after.last_retrain == LastRetrain(6, 2, "passed")


@pytest.mark.parametrize("gate", ["passed", "off"])
def test_a_promoted_challenger_ends_a_cooldown(gate):
    s = state(cooldown_left=3)
    plan = plan_step(doc(), s, PROD, IN_USE, obs(6, 1.0), force_retrain=True)
    after = settle(plan, s, RetrainOutcome(2, gate), cooldown=3)
    assert after.cooldown_left == 0 and after.model_version == 2


def test_a_rejected_challenger_pays_kappa_keeps_the_staleness_and_cools_down():
    s = state()
    plan = plan_step(doc(), s, PROD, IN_USE, obs(5, 4.0))
    after = settle(plan, s, RetrainOutcome(challenger=2, gate="rejected"), cooldown=3)
    assert after.cumulative_cost == 2 * KAPPA and after.model_version == 1
    assert after.cooldown_left == 3 and after.last_retrain == LastRetrain(5, 2, "rejected")
    assert after.policy["state"] == {"cum": 4.0, "n": 1}                               # not reset


@pytest.mark.parametrize("ids", [(6, 7, 8, 9), (20261030, 20261102, 20261103, 20261110)])
def test_no_retrain_attempt_during_the_cooldown_and_one_after_it_counting_batches_not_ids(ids):
    s, previous = state(cooldown_left=3), 5
    for batch, more in zip(ids[:3], (2, 1, 0)):
        plan = plan_step(doc(), s, PROD, IN_USE, obs(batch, 4.0, previous=previous))
        assert plan.action == "keep" and plan.reason.endswith(f"cooling down ({more} more batch"
                                                              f"{'es' if more != 1 else ''} after this one)")
        s, previous = settle(plan, s, None, cooldown=3), batch
    plan = plan_step(doc(), s, PROD, IN_USE, obs(ids[3], 4.0, previous=previous))
    assert plan.action == "retrain"


def test_a_forced_retrain_overrides_the_policy_and_the_cooldown():
    s = state(cooldown_left=20)
    plan = plan_step(doc(), s, PROD, IN_USE, obs(6, 0.0), force_retrain=True)
    assert (plan.action, plan.trigger, plan.reason) == ("retrain", "manual", "forced by --force-retrain")


def test_a_resumed_promotion_is_judged_against_the_version_before_it_and_retrains():
    s = state(version=1)
    production = Production(version=2, trained_on=6)            # the alias moved, the commit did not
    in_use = model_in_use(s, production, batch=6)
    assert in_use == InUse(version=1, resumed=True)
    plan = plan_step(doc(), s, production, in_use, obs(6, 0.0))
    assert plan.action == "retrain" and plan.resumed and plan.reason.startswith("resuming a promotion")
    assert model_in_use(s, production, batch=7) == InUse(version=2, resumed=False)


def test_a_policy_re_tuned_since_the_last_batch_starts_afresh():
    s = settle(plan_step(doc(), state(), PROD, IN_USE, obs(5, 2.0)), state(), None, cooldown=3)
    assert s.policy["state"]["cum"] == 2.0
    plan = plan_step(doc(tau_cum=10.0), s, PROD, IN_USE, obs(6, 2.0))
    assert plan.policy == {"policy": "cara-ct", "params": {"tau_cum": 10.0}, "state": {"cum": 2.0, "n": 1}}
    other = plan_step(doc("cara-t", tau=1.0), s, PROD, IN_USE, obs(6, 2.0))
    assert other.action == "retrain" and other.policy["policy"] == "cara-t"


def test_a_rollback_by_hand_restarts_the_policy():
    s = settle(plan_step(doc(), state(version=3), Production(3, 8), IN_USE, obs(9, 2.0)), state(version=3),
               None, cooldown=3)
    rolled_back = Production(version=2, trained_on=6)           # production moved back by hand
    plan = plan_step(doc(), s, rolled_back, model_in_use(s, rolled_back, 10), obs(10, 2.0))
    assert plan.policy["state"] == {"cum": 2.0, "n": 1}          # only this batch's Ψ̄: reset before it
    assert settle(plan, s, None, cooldown=3).model_version == 2


def test_a_retrain_on_a_single_class_batch_is_refused_but_a_keep_is_not():
    with pytest.raises(InputError, match="holds one class only"):
        plan_step(doc(), state(), PROD, IN_USE, obs(5, 9.0, n_classes=1))
    assert plan_step(doc(), state(), PROD, IN_USE, obs(5, 0.5, n_classes=1)).action == "keep"


def test_cara_p_counts_processed_batches_not_id_differences():
    """On dated ids, 20261031 → 20261101 is one batch: CARA-P (φ=3) retrains every third batch."""
    ids = [20261029, 20261030, 20261031, 20261101, 20261102, 20261105, 20261106]
    s, previous, actions = replace(state("cara-p", phi=3, position=25), dated=True), 20261028, []
    for batch in ids:
        plan = plan_step(doc("cara-p", phi=3), s, PROD, IN_USE, obs(batch, 0.0, previous=previous))
        actions.append(plan.action)
        outcome = RetrainOutcome(challenger=2, gate="passed") if plan.retrain else None
        s, previous = settle(plan, s, outcome, cooldown=3), batch
    assert [a == "retrain" for a in actions] == [(t % 3 == 0) for t in range(26, 26 + len(ids))]
    assert s.position == 25 + len(ids)
    assert s.missing == ((20261032, 20261100), (20261103, 20261104)) and s.dated     # stored as ids…
    assert [show_range(r, dated=True) for r in s.missing] == [None, "20261103–20261104"]   # …shown as dates


def test_a_late_batch_is_kept_paid_fed_to_the_policy_and_not_a_tick():
    s = state(position=30, cooldown_left=2)
    s = replace(s, missing=((7, 9),))
    plan = plan_step(doc(), s, PROD, IN_USE, obs(8, 9.0, late=True), force_retrain=True)
    assert plan.action == "keep" and plan.reason.startswith("late batch") and plan.t == 30
    after = settle(plan, s, None, cooldown=3)
    assert after.cumulative_cost == KAPPA + 9.0 and after.policy["state"] == {"cum": 9.0, "n": 1}
    assert (after.position, after.cooldown_left) == (30, 2)           # the clock did not move
    assert after.missing == ((7, 7), (9, 9)) and after.late == (8,)
    nxt = plan_step(doc(), after, PROD, IN_USE, obs(31, 0.0, previous=30))
    assert nxt.action == "keep" and "cooling down" in nxt.reason      # ΣΨ̄ over τ_cum, still cooling


def test_advance_records_gaps_as_ranges_and_impossible_dates_are_not_missing():
    s = ManagerState.fresh(make_policy("nr"), version=1, kappa=1.0, batch=20261031)
    assert s.dated and s.position == 20261031
    s = advance(s, 20261101, 20261031)
    assert s.missing == ((20261032, 20261100),)                # a typo such as 20261050 would still be found
    s = advance(s, 20261201, 20261101)
    assert s.missing == ((20261032, 20261100), (20261102, 20261200))
    assert [show_range(r, dated=True) for r in s.missing] == [None, "20261102–20261130"]
    plain = advance(ManagerState.fresh(make_policy("nr"), version=1, kappa=1.0, batch=3), 10, 3)
    assert plain.missing == ((4, 9),) and not plain.dated


def test_a_state_from_before_positions_counts_from_its_batch_id():
    old = {"policy": make_policy("nr").to_dict(), "model_version": 2, "cumulative_cost": 1.0, "cooldown_until": 12}
    s = ManagerState.from_dict(old, batch=10)
    assert (s.position, s.cooldown_left, s.missing, s.late) == (10, 2, (), ())


def test_drift_detectors_get_the_errors():
    errors = np.r_[np.zeros(300), np.ones(300)].astype(np.int64)
    s = state("ddm")
    plan = plan_step(doc("ddm"), s, PROD, IN_USE, obs(5, 0.0, errors=errors))
    assert plan.action == "retrain" and plan.score >= 1


@pytest.mark.parametrize("policy", ["ddm", "adwin"])
def test_drift_detectors_see_a_regression_loss_as_zero_one_errors(policy):
    """Squared losses (any size) are errors when > 0: the detectors get 0/1, never a refused value."""
    losses = np.r_[np.zeros(300), np.full(300, 300.5)]
    plan = plan_step(doc(policy), state(policy), PROD, IN_USE, obs(5, 0.0, errors=losses))
    same = plan_step(doc(policy), state(policy), PROD, IN_USE, obs(5, 0.0, errors=(losses > 0).astype(np.int64)))
    assert (plan.action, plan.score) == (same.action, same.score)


def test_settle_refuses_a_retrain_plan_without_its_outcome():
    plan = plan_step(doc(), state(), PROD, IN_USE, obs(5, 9.0))
    with pytest.raises(ValueError, match="outcome"):
        settle(plan, state(), None, cooldown=3)


def test_states_round_trip_through_json_and_bad_ones_are_refused():
    import json

    s = state(cooldown_left=2)
    assert ManagerState.from_json(json.dumps(s.to_dict())) == s
    for bad in ({"policy": s.policy}, {**s.to_dict(), "model_version": "2"}, {**s.to_dict(), "surprise": 1},
                {**s.to_dict(), "cooldown_until": 1.5}, {**s.to_dict(), "last_retrain": {"batch": 1}},
                {**s.to_dict(), "cooldown_left": -1}, {**s.to_dict(), "missing": [[1]]},
                {**s.to_dict(), "late": ["3"]}, {**s.to_dict(), "dated": "yes"}):
        with pytest.raises(InputError):
            ManagerState.from_dict(bad)


def test_the_planner_runs_without_importing_mlflow():
    code = ("import sys\nfrom tests.test_planner import *\n"
            "test_retrain_that_lands_pays_kappa_resets_the_policy_and_moves_production()\n"
            "test_a_resumed_promotion_is_judged_against_the_version_before_it_and_retrains()\n"
            "print(sorted(m for m in ('mlflow', 'click') if m in sys.modules))")
    from pathlib import Path

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
