"""Trust after promotion, end to end through the CLI (real MLflow, real project runs): a promoted
model checked at the next batch and reverted when it is worse, the history of every production
move, and a kill after the revert's alias move.

The bad model is a trainer that inverts the labels (``tests/fixtures/inverting_project``),
promoted with the gate off, as a mislabelled export would be.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cara_mlflow import lifecycle

from .crash_harness import KILL_ENV
from .helpers import INIT_BATCH, drop_batches_from, ok, one_line_error, registry, run_cli, runs_of, the_batch_run

INVERTING = str(Path(__file__).parent / "fixtures" / "inverting_project")


def _promote_inverted(store: Path) -> None:
    """Batch 6: a forced retrain by the inverting trainer, promoted without a gate (v2)."""
    line = ok(run_cli(store, "step", "--force-retrain", "--no-gate", "--project-uri", INVERTING)).stdout
    assert line.startswith("batch 6:") and "production=v2" in line and "gate=off" in line


@pytest.fixture(scope="module")
def reverted(base_store, tmp_path_factory) -> Path:
    """Batches 6 (the inverted model promoted) and 7 (its check) processed."""
    from .helpers import copy_store

    store = copy_store(base_store, tmp_path_factory.mktemp("reverted") / "store")
    _promote_inverted(store)
    ok(run_cli(store, "step"))
    return store


def test_a_model_trained_on_inverted_labels_is_reverted_at_the_next_batch(reverted, cara):
    reg = registry(reverted)
    run = the_batch_run(reg, 7)
    assert run.tags["cara.verify"] == "reverted"
    assert (run.tags["cara.revert_from"], run.tags["cara.revert_to"]) == ("2", "1")
    assert run.metrics["verify_loss_new"] > 3 * run.metrics["verify_loss_old"]
    assert run.tags["cara.reason"].startswith("v2 worse than v1 on this batch")
    # then batch 7 was decided with the restored v1, by a policy that restarted (ΣΨ̄ over 1 batch):
    # it retrained at once, and v3 replaced v1, not v2
    assert "ΣΨ̄=" in run.tags["cara.reason"] and " over 1 batch ≥ τ_cum" in run.tags["cara.reason"]
    assert run.tags["cara.decision"] == "retrain" and run.tags["cara.gate"] == "passed"
    assert run.tags["cara.production_from"] == "1" and run.tags["cara.model_version"] == "3"
    assert reg.production().version == 3 and reg.version(3).trained_on == 7
    assert run.tags["mlflow.note.content"].startswith("Auto-reverted v2 -> v1, then retrained: v3 passed the gate")
    v2 = reg.version(2)
    assert v2.tags["cara.reverted_at"] == "7" and v2.tags["cara.reverted"].startswith("batch 7: v2 worse")
    state = reg.runs.load_json(run.run_id, "policy_state.json")
    assert state["model_version"] == 3 and state["verify"] == {"version": 3, "replaced": 1, "batch": 7, "skip": None}
    rows = {r["batch"]: r for r in json.loads(ok(cara(reverted, "history", "--json")).stdout)}
    assert rows[7]["revert"] == {"from": 2, "to": 1} and rows[7]["verify"] == "reverted"
    assert rows[6]["revert"] is None and rows[INIT_BATCH]["revert"] is None


def test_a_good_promotion_is_checked_and_kept_and_a_reverted_version_is_never_rolled_back_to(reverted, tmp_path,
                                                                                            cara):
    from .helpers import copy_store

    store = copy_store(reverted, tmp_path / "store")
    reg = registry(store)
    ok(run_cli(store, "step", "--force-retrain", "--no-gate"))          # batch 8: v3 checked, then v4 forced
    assert the_batch_run(reg, 8).tags["cara.verify"] == "passed"
    assert the_batch_run(reg, 8).tags["cara.production_from"] == "3" and reg.production().version == 4
    line = ok(run_cli(store, "step")).stdout                             # batch 9: v4 checked against v3
    assert "auto-revert" not in line
    run = the_batch_run(reg, 9)
    assert run.tags["cara.verify"] == "passed" and "cara.revert_from" not in run.tags
    assert reg.production().version == 4
    assert ok(cara(store, "rollback", "--reason", "first")).stdout.strip() == "production of demo: v4 -> v3 (first)"
    # the default rollback skips v2 (reverted) and goes back to v1
    result = ok(cara(store, "rollback", "--reason", "checking"))
    assert result.stdout.strip() == "production of demo: v3 -> v1 (checking)"

    moves = json.loads(ok(cara(store, "history", "--production", "--json")).stdout)
    assert [(m["by"], m["from"], m["to"], m["batch"]) for m in moves] == [
        ("init", None, 1, INIT_BATCH), ("promotion", 1, 2, 6), ("auto-revert", 2, 1, 7), ("promotion", 1, 3, 7),
        ("promotion", 3, 4, 8), ("rollback", 4, 3, None), ("rollback", 3, 1, None)]
    assert moves[-1]["reason"] == "checking" and moves[2]["reason"].startswith("v2 worse than v1 on this batch")
    assert moves[2]["trigger"] == "auto-revert" and moves[3]["trigger"] == "cara-ct"
    assert all(m["time"].endswith("+00:00") for m in moves)
    assert [m["time"] for m in moves] == sorted(m["time"] for m in moves)
    table = ok(cara(store, "history", "--production")).stdout.splitlines()
    assert table[0].split()[:3] == ["time", "(UTC)", "by"] and len(table) == 1 + len(moves)
    assert "auto-revert" in table[3] and " v2 " in table[3] and " v1 " in table[3]
    # a rollback is a run of its own (type rollback), never a batch
    rollbacks = runs_of(reg, "rollback")
    assert [r.status for r in rollbacks] == ["FINISHED"] * 2 and rollbacks[0].tags["cara.model_version"] == "1"
    assert reg.last_batch() == 9
    # by hand, a reverted version may serve again: said in one warning line
    again = ok(run_cli(store, "rollback", "--to", "2", "--reason", "on purpose"))
    assert again.stderr.startswith("cara-mlflow: warning: rollback: v2 was reverted automatically (batch 7: ")
    assert reg.production().version == 2


def test_dry_run_shows_the_revert_and_changes_nothing_then_the_step_notifies_it(base_store, tmp_path, cara):
    from .helpers import copy_store

    store = copy_store(base_store, tmp_path / "store")
    _promote_inverted(store)
    status = json.loads(ok(cara(store, "status", "--json")).stdout)
    assert status["pending_check"] == {"version": 2, "replaced": 1, "batch": 6, "skip": None}
    assert "next check   v2 against v1, reverted if worse" in ok(cara(store, "status")).stdout
    line = ok(run_cli(store, "step", "--dry-run")).stdout
    assert line.startswith("[dry run] auto-revert v2 -> v1; batch 7:") and "production=v1" in line
    reg = registry(store)
    assert reg.production().version == 2 and "cara.reverted" not in reg.version(2).tags
    assert reg.last_batch() == 6

    events = tmp_path / "events.jsonl"
    ok(run_cli(store, "step", "--notify", f"cat >> {events}"))
    sent = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["event"] for e in sent] == ["revert", "retrain", "promotion"]    # as they happened
    revert = sent[0]
    assert (revert["event"], revert["from"], revert["to"], revert["batch"]) == ("revert", 2, 1, 7)
    assert revert["trigger"] == "auto-revert"
    assert (sent[2]["from"], sent[2]["to"]) == (1, 3)
    assert revert["text"].startswith("Batch 7: production reverted from v2 to v1 (v2 worse than v1")
    explained = json.loads(ok(cara(store, "explain", "--batch", "7", "--json")).stdout)
    assert explained["verify"] == "reverted" and explained["revert"] == {"from": 2, "to": 1}
    assert "  check     reverted (v2 -> v1)" in ok(cara(store, "explain", "--batch", "7")).stdout.splitlines()
    assert json.loads(ok(cara(store, "status", "--json")).stdout)["pending_check"] == {
        "version": 3, "replaced": 1, "batch": 7, "skip": None}


def test_kill_after_the_revert_alias_move_then_rerun_reverts_exactly_once(base_store, tmp_path):
    from .helpers import copy_store

    store = copy_store(base_store, tmp_path / "store")
    drop_batches_from(store, 9)
    _promote_inverted(store)
    killed = run_cli(store, "step", **{KILL_ENV: lifecycle.REVERT_PHASE})
    assert killed.returncode in (-9, 137), killed.stderr
    reg = registry(store)
    assert reg.production().version == 1 and reg.last_batch() == 6          # moved, not committed
    rerun = ok(run_cli(store, "step", "--all")).stdout.splitlines()
    assert rerun[0].startswith("auto-revert v2 -> v1; batch 7:") and rerun[1].startswith("batch 8:")
    runs = runs_of(reg, "batch", 7)
    assert [r.status for r in runs].count("FINISHED") == 1
    run = the_batch_run(reg, 7)
    assert run.tags["cara.verify"] == "reverted" and run.tags["cara.production_from"] == "1"
    state = reg.runs.load_json(run.run_id, "policy_state.json")
    assert state["model_version"] == int(run.tags["cara.model_version"]) == 3
    assert len(reg.versions(trained_on=7)) == 1 and len(runs_of(reg, "retrain", 7)) == 1   # retrained once
    assert reg.production().version == int(the_batch_run(reg, 8).tags["cara.model_version"])
    moves = lifecycle.production_history(reg)
    assert [m["by"] for m in moves].count("auto-revert") == 1


def test_a_rollback_by_hand_before_the_check_skips_it(base_store, tmp_path, cara):
    from .helpers import copy_store

    store = copy_store(base_store, tmp_path / "store")
    _promote_inverted(store)
    ok(cara(store, "rollback", "--to", "1", "--reason", "looked wrong"))
    pending = json.loads(ok(cara(store, "status", "--json")).stdout)["pending_check"]
    assert pending["version"] == 2 and pending["skip"] == "production was moved by hand (to v1) since v2 was promoted"
    ok(run_cli(store, "step"))
    run = the_batch_run(registry(store), 7)
    assert run.tags["cara.verify"].startswith("skipped: production was moved by hand (to v1)")
    assert "cara.revert_from" not in run.tags


def test_history_production_of_an_unknown_model_is_one_line(fresh):
    line = one_line_error(run_cli(fresh, "history", "--production", "--name", "nobody"))
    assert "nobody" in line


def test_the_check_can_be_switched_off_for_a_step_and_bad_margins_are_one_line(base_store, tmp_path, cara):
    from .helpers import copy_store

    store = copy_store(base_store, tmp_path / "store")
    _promote_inverted(store)
    bad = run_cli(store, "step", "--verify-margin", "-1")
    assert one_line_error(bad).startswith("cara-mlflow: error: verify-margin: expected a fraction >= 0")
    ok(run_cli(store, "step", "--verify-margin", "off"))
    run = the_batch_run(registry(store), 7)
    assert run.tags["cara.verify"] == "skipped: the check after a promotion is off (--verify-margin off)"
    assert registry(store).production().version == 2
    # stored at tune: status shows it (the default is 0.25)
    assert json.loads(ok(cara(store, "status", "--json")).stdout)["policy"]["verify_margin"] == 0.25
    ok(run_cli(store, "tune", "--offline", "0:5", "--kappa", "5", "--policy", "cara-ct", "--model", "lr",
               "--verify-margin", "off"))
    assert json.loads(ok(cara(store, "status", "--json")).stdout)["policy"]["verify_margin"] is None


def test_the_check_is_skipped_and_recorded_when_the_batch_lacks_features_a_version_needs(base_store, tmp_path):
    from .helpers import copy_store

    store = copy_store(base_store, tmp_path / "store")
    _promote_inverted(store)
    ok(run_cli(store, "tune", "--offline", "0:5", "--kappa", "5", "--policy", "cara-ct", "--model", "lr",
               "--features", "x1"))                                  # the batches are read without x2 from now on
    line = ok(run_cli(store, "step")).stdout
    assert line.startswith("batch 7: retrain (features changed at re-tune (removed x2)")
    run = the_batch_run(registry(store), 7)
    assert run.tags["cara.verify"].startswith("skipped: v2 was trained on other features than the batch's")
