"""Guard rails (issue 16): maximum model age, retrain budget, with the cooldown and --force-retrain.

The planner runs over long streams against a plain per-batch reference of the rules, then the
whole thing runs through the CLI on a real store (tune stores them, step overrides them)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cara_mlflow.errors import InputError
from cara_mlflow.guards import MAX_BUDGET_ATTEMPTS, Guards
from cara_mlflow.manager_state import LastRetrain, ManagerState
from cara_mlflow.planner import BatchObservation, InUse, Production, RetrainOutcome, plan_step, settle
from cara_mlflow.policies import make_policy
from cara_mlflow.policy_doc import PolicyDocument
from tests.helpers import ok, registry, the_batch_run

TAU = 1.0


def doc(guards: Guards | None = None, policy="cara-t", params=None) -> PolicyDocument:
    d = {"format": 1, "name": "m", "policy": policy, "params": {"tau": TAU} if params is None else params,
         "kappa": 5.0, "psi": {"gamma": 1.0}, "target": "label", "features": ["x"], "trainer": {"model": "lr"}}
    if guards is not None:
        d["guards"] = guards.to_dict()
    return PolicyDocument.from_dict(d)


def fresh_state(policy="cara-t", params=None) -> ManagerState:
    return ManagerState.fresh(make_policy(policy, **({"tau": TAU} if params is None else params)), version=1,
                              kappa=5.0, batch=0, position=0)


def run_planner(psis, gates, forced, guards: Guards, cooldown: int, d: PolicyDocument | None = None):
    """The planner and settle over a stream of batches 1..T; returns each batch's (action, guard, trigger)."""
    d = d or doc(guards)
    state, version, out = fresh_state(), 1, []
    for t, (psi, gate, force) in enumerate(zip(psis, gates, forced), start=1):
        production = Production(version, trained_on=None)
        plan = plan_step(d, state, production, InUse(version, False), BatchObservation(t, psi, 2, previous=t - 1),
                         force_retrain=force, guards=guards)
        outcome = RetrainOutcome(version + 1, gate) if plan.retrain else None
        state = settle(plan, state, outcome, cooldown=cooldown)
        version = state.model_version
        out.append((plan.action, plan.guard, plan.trigger))
    return out, state


def reference(psis, gates, forced, guards: Guards, cooldown: int):
    """The rules of DESIGN/README written out per batch, for CARA-T (a stateless threshold)."""
    model_at, attempts, cool, out = 0, [], 0, []
    n, w = guards.retrain_budget or (None, None)
    for t, (psi, gate, force) in enumerate(zip(psis, gates, forced), start=1):
        age = t - model_at
        policy_wants = psi >= TAU
        aged = not policy_wants and guards.max_model_age is not None and age > guards.max_model_age
        guard = None
        if force:
            action, trigger = "retrain", "manual"
        else:
            wants = policy_wants or aged
            if wants and cool > 0:
                guard = "cooldown"
            elif wants and n is not None and len([a for a in attempts if t - w < a < t]) >= n:
                guard = "budget"
            elif aged:
                guard = "max-age"
            action = "retrain" if wants and guard in (None, "max-age") else "keep"
            trigger = ("max-age" if aged else "cara-t") if action == "retrain" else None
        cool = max(0, cool - 1)
        if action == "retrain":
            attempts.append(t)
            if gate in ("passed", "off"):
                model_at, cool = t, 0
            else:
                cool = cooldown
        out.append((action, guard, trigger))
    return out


GUARDS = [Guards(max_model_age=4), Guards(retrain_budget=(2, 7)), Guards(max_model_age=3, retrain_budget=(1, 5)),
          Guards(max_model_age=6, retrain_budget=(3, 10)), Guards()]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("guards", GUARDS, ids=lambda g: g.describe())
def test_the_planner_follows_the_rules_over_long_streams_with_the_cooldown(guards, seed):
    rng = np.random.default_rng(seed)
    T = 400
    psis = rng.exponential(0.45, T)                     # CARA-T retrains on about 1 batch in 10
    gates = rng.choice(["passed", "rejected", "off"], T, p=[0.6, 0.3, 0.1])
    forced = rng.random(T) < 0.02
    got, state = run_planner(psis, gates, forced, guards, cooldown=2)
    assert got == reference(psis, gates, forced, guards, cooldown=2)
    # the invariants the README states, on the planner's own output
    retrain_at = [t for t, (a, _, _) in enumerate(got, start=1) if a == "retrain"]
    if guards.retrain_budget is not None:
        n, w = guards.retrain_budget
        unforced = [t for t in retrain_at if not forced[t - 1]]
        for t in unforced:       # the budget holds at every attempt it judged
            assert sum(1 for a in retrain_at if t - w < a <= t) <= n
        assert any(g == "budget" for _, g, _ in got), "the budget never bit: the test would show nothing"
    if guards.max_model_age is not None:
        assert any(trig == "max-age" for _, _, trig in got)
        for a, g, _ in got:
            if g == "max-age":
                assert a == "retrain"
    assert state.retrain_attempts == tuple(retrain_at[-MAX_BUDGET_ATTEMPTS:])


def test_no_model_serves_past_its_maximum_age_without_an_attempt_unless_a_guard_blocked_it():
    rng = np.random.default_rng(7)
    T, guards = 300, Guards(max_model_age=5, retrain_budget=(1, 8))
    psis, gates = np.zeros(T), rng.choice(["passed", "rejected"], T, p=[0.7, 0.3])    # the policy never asks
    got, _ = run_planner(psis, gates, np.zeros(T, bool), guards, cooldown=3)
    model_at = 0
    for t, (action, guard, trigger) in enumerate(got, start=1):
        if t - model_at > 5:
            assert action == "retrain" or guard in ("cooldown", "budget")
        else:
            assert action == "keep" and guard is None
        if action == "retrain":
            assert trigger == "max-age"
            if gates[t - 1] == "passed":
                model_at = t


def test_force_retrain_overrides_every_guard_rail_and_still_counts_against_the_budget():
    guards = Guards(max_model_age=50, retrain_budget=(1, 10))
    state = ManagerState(**{**fresh_state().__dict__, "cooldown_left": 3, "retrain_attempts": (0,)})
    plan = plan_step(doc(guards), state, Production(1, 0), InUse(1, False), BatchObservation(1, 0.0, 2, previous=0),
                     force_retrain=True)
    assert (plan.action, plan.trigger, plan.guard) == ("retrain", "manual", None)
    after = settle(plan, state, RetrainOutcome(2, "passed"), cooldown=3)
    assert after.retrain_attempts == (0, 1) and after.model_position == 1
    # the next policy retrain is then deferred by the budget
    plan = plan_step(doc(guards), after, Production(2, 1), InUse(2, False), BatchObservation(2, 9.0, 2, previous=1))
    assert (plan.action, plan.guard, plan.deferred) == ("keep", "budget", "budget")
    assert "deferred: the retrain budget allows 1 attempt in any 10 batches" in plan.reason


def test_the_guards_stored_in_the_policy_apply_and_step_overrides_them():
    stored = doc(Guards(max_model_age=2))
    state = ManagerState(**{**fresh_state().__dict__, "position": 3, "model_position": 0})
    obs = BatchObservation(4, 0.0, 2, previous=3)
    assert plan_step(stored, state, Production(1, 0), InUse(1, False), obs).trigger == "max-age"
    off = Guards(max_model_age=2).override(max_model_age="off")
    assert plan_step(stored, state, Production(1, 0), InUse(1, False), obs, guards=off).action == "keep"


def test_a_state_from_before_ages_counts_the_age_from_its_own_position():
    legacy = ManagerState.from_dict({"policy": make_policy("cara-t", tau=TAU).to_dict(), "model_version": 1,
                                     "position": 40, "last_retrain": None})
    assert legacy.model_position is None and legacy.retrain_attempts == ()
    plan = plan_step(doc(Guards(max_model_age=1)), legacy, Production(1, 3), InUse(1, False),
                     BatchObservation(41, 0.0, 2, previous=40))
    assert (plan.action, plan.age) == ("keep", 1)
    after = settle(plan, legacy, None, cooldown=3)
    assert after.model_position == 40
    plan = plan_step(doc(Guards(max_model_age=1)), after, Production(1, 3), InUse(1, False),
                     BatchObservation(42, 0.0, 2, previous=41))
    assert (plan.action, plan.trigger, plan.age) == ("retrain", "max-age", 2)


def test_after_a_rollback_the_age_is_that_of_the_version_put_back():
    state = ManagerState(**{**fresh_state().__dict__, "model_version": 5, "position": 30, "model_position": 29,
                            "last_retrain": LastRetrain(29, 5, "passed")})
    rolled_back = Production(version=3, trained_on=20, trained_at=20)
    plan = plan_step(doc(Guards(max_model_age=8)), state, rolled_back, InUse(3, False),
                     BatchObservation(31, 0.0, 2, previous=30))
    assert (plan.age, plan.action, plan.trigger) == (11, "retrain", "max-age")
    unknown = Production(version=3, trained_on=20)            # its batch is gone: counted from the rollback
    plan = plan_step(doc(Guards(max_model_age=8)), state, unknown, InUse(3, False),
                     BatchObservation(31, 0.0, 2, previous=30))
    assert (plan.age, plan.action) == (1, "keep")


def test_a_late_batch_is_no_tick_of_the_age_and_never_retrained_by_a_guard():
    state = ManagerState(**{**fresh_state().__dict__, "position": 10, "model_position": 0})
    plan = plan_step(doc(Guards(max_model_age=2)), state, Production(1, 0), InUse(1, False),
                     BatchObservation(7, 0.0, 2, late=True))
    assert (plan.action, plan.guard) == ("keep", None)
    after = settle(plan, state, None, cooldown=3)
    assert (after.position, after.model_position) == (10, 0)


@pytest.mark.parametrize("age, budget, message", [
    ("-2", None, "--max-model-age: expected a whole number ≥ 1, got '-2'"),
    ("x", None, "--max-model-age: expected a whole number ≥ 1, got 'x'"),
    (None, "3", "--retrain-budget: expected N:W"),
    (None, "5:3", "--retrain-budget: expected N:W with 1 ≤ N ≤ 100 and N ≤ W, got 5:3"),
    (None, "0:3", "--retrain-budget N: expected a whole number ≥ 1, got '0'"),
])
def test_bad_guard_rails_are_one_line_errors(age, budget, message):
    with pytest.raises(InputError) as info:
        Guards.parse(max_model_age=age, retrain_budget=budget)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_off_and_0_switch_a_guard_rail_off():
    assert Guards.parse(max_model_age="0", retrain_budget="off") == Guards()
    assert Guards(max_model_age=3).override(max_model_age="OFF").max_model_age is None


def test_guards_round_trip_through_the_policy_document_and_bad_ones_are_refused():
    d = doc(Guards(max_model_age=30, retrain_budget=(2, 10)))
    assert PolicyDocument.from_dict(d.to_dict()) == d and d.to_dict()["guards"]["retrain_budget"]["window"] == 10
    assert "guards" not in doc().to_dict()              # documents without guard rails are as before
    bad = {**d.to_dict(), "guards": {"max_model_age": "30"}}
    with pytest.raises(InputError, match="field 'guards'"):
        PolicyDocument.from_dict(bad)


def test_tune_stores_the_guard_rails_step_applies_and_overrides_them_and_history_shows_deferrals(fresh, cara):
    """NR never retrains: every retrain below is the maximum age's; the budget defers one."""
    ok(cara(fresh, "tune", "--offline", "0:5", "--kappa", "5", "--policy", "nr", "--model", "lr",
               "--max-model-age", "2", "--retrain-budget", "1:4"))
    status = json.loads(ok(cara(fresh, "status", "--json")).stdout)
    assert status["policy"]["guards"] == {"max_model_age": 2, "retrain_budget": {"attempts": 1, "window": 4}}
    ok(cara(fresh, "step", "--all", "--no-gate"))
    rows = {r["batch"]: r for r in json.loads(ok(cara(fresh, "history", "--json")).stdout)}
    decisions = [(b, rows[b]["decision"], rows[b]["deferred"]) for b in range(6, 14)]
    # the model of batch 5 is 3 batches old at 8; the next one (8) is 3 old at 11, where the budget
    # (one attempt in any 4 batches: 8 is among 8..11) defers it to 12
    assert decisions == [(6, "keep", None), (7, "keep", None), (8, "retrain", None), (9, "keep", None),
                         (10, "keep", None), (11, "keep", "budget"), (12, "retrain", None), (13, "keep", None)]
    assert [rows[b]["model_age"] for b in range(6, 14)] == [1, 2, 3, 1, 2, 3, 4, 1]
    reg = registry(fresh)
    assert the_batch_run(reg, 11).tags["cara.deferred"] == "budget"
    assert {v.tags.get("cara.trigger") for v in reg.versions() if v.trained_on in (8, 12)} == {"max-age"}
    text = ok(cara(fresh, "status")).stdout
    assert "model age    1 batches (maximum 2)" in text and "budget       1 of 1 retrain attempt used" in text


def test_step_switches_a_stored_guard_rail_off_and_refuses_a_bad_one_before_writing(fresh, cara):
    ok(cara(fresh, "tune", "--offline", "0:5", "--kappa", "5", "--policy", "nr", "--model", "lr",
               "--max-model-age", "1"))
    bad = cara(fresh, "step", "--retrain-budget", "2")
    assert bad.returncode == 1 and "--retrain-budget: expected N:W" in bad.stderr
    assert registry(fresh).last_batch() == 5
    ok(cara(fresh, "step", "--all", "--max-model-age", "off"))
    rows = json.loads(ok(cara(fresh, "history", "--json")).stdout)
    assert {r["decision"] for r in rows if r["batch"] > 5} == {"keep"}


def test_explain_shows_the_logged_figures_and_the_flip_kappa_re_decides_the_other_way(fresh, cara):
    """MARKOV compares Ψ̄ with κ itself: each batch's flip κ is its Ψ̄, checked by re-deciding."""
    from cara_mlflow.explain import kappa_to_flip  # noqa: F401  (the function the step logged)
    from cara_mlflow.policies import Observation, policy_from_dict

    ok(cara(fresh, "tune", "--offline", "0:5", "--kappa", "0.5", "--policy", "markov", "--model", "lr",
            "--max-model-age", "3"))
    ok(cara(fresh, "step", "--all", "--no-gate"))
    reg = registry(fresh)
    seen = 0
    for batch in range(6, 14):
        e = json.loads(ok(cara(fresh, "explain", "--batch", str(batch), "--json")).stdout)
        run = the_batch_run(reg, batch)
        assert e["decision"] == run.tags["cara.decision"] and e["psi_bar"] == run.metrics["psi_bar"]
        assert e["psi_terms"]["now"] - e["psi_terms"]["then"] == pytest.approx(e["psi_bar"])
        assert e["guards"]["in_force"].startswith("maximum model age 3 batches; cooldown 3") and e["kappa"] == 0.5
        if e["guards"]["applied"] == "max-age":
            assert e["kappa_to_flip"] is None and e["trigger"] == "max-age"
            assert e["no_flip_reason"] == "the guard rail max-age decided"
            continue
        flip = e["kappa_to_flip"]
        if e["psi_bar"] <= 0:           # Ψ̄ ≥ κ > 0 never holds: no κ retrains
            assert flip is None and e["decision"] == "keep" and "≤ 0: no κ > 0 retrains" in e["no_flip_reason"]
            continue
        assert flip == pytest.approx(e["psi_bar"], rel=1e-9) and e["threshold"] == 0.5     # MARKOV compares with κ
        policy = policy_from_dict(reg.runs.load_json(run.run_id, "policy_state.json")["policy"])
        obs = Observation(t=1, trained_on=0, psi_bar=e["psi_bar"])
        for kappa, retrain in ((flip * (1 - 1e-6), True), (flip * (1 + 1e-6), False)):
            assert policy_from_dict(policy.to_dict()).decide(Observation(**{**obs.__dict__, "kappa": kappa})
                                                              ).retrain is retrain
        seen += 1
    assert seen >= 2
    text = ok(cara(fresh, "explain", "--batch", "7")).stdout
    assert text.startswith("batch 7: ") and "κ to flip" in text
    missing = cara(fresh, "explain", "--batch", "99")
    assert missing.returncode == 1 and "no committed batch 99" in missing.stderr
