"""Notifications: the delivery of one event to a user's command (real processes, a real shell),
and a step's events through the CLI — a command that fails or hangs never fails the step."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cara_mlflow.errors import InputError
from cara_mlflow.notify import EVENTS, check_command, check_timeout, deliver, event

from .helpers import drop_batches_from, error_lines, ok, read_data, registry, rewrite_batch, run_cli, the_batch_run


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _alive(pid: int) -> bool:
    """Running (a zombie left to a parent that does not reap it is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


# ---------------------------------------------------------------------------------- delivery


def test_the_event_reaches_the_command_as_one_json_line_with_its_kind_in_the_environment(tmp_path):
    out = tmp_path / "got"
    payload = event("promotion", "churn", 57, "v5 serves", **{"from": 4, "to": 5})
    delivery = deliver(f'cat > {out}; echo "$CARA_EVENT" > {out}.kind', payload)
    assert delivery.ok and delivery.outcome == "sent" and delivery.kind == "promotion"
    text = out.read_text()
    assert text.count("\n") == 1 and json.loads(text) == payload
    assert (tmp_path / "got.kind").read_text().strip() == "promotion"


def test_a_failing_command_is_an_outcome_with_its_exit_code_and_last_stderr_line_never_an_exception():
    delivery = deliver("echo first >&2; echo 'webhook said 404' >&2; exit 22", event("failed", "m", None, "x"))
    assert not delivery.ok and delivery.outcome == "failed: exit 22 (webhook said 404)"
    assert deliver("/no/such/program", event("revert", "m", 3, "x")).outcome.startswith("failed: exit 127")


def test_a_hanging_command_is_killed_with_its_children_after_the_timeout(tmp_path):
    pid_file = tmp_path / "child.pid"
    start = time.monotonic()
    delivery = deliver(f"sleep 60 & echo $! > {pid_file}; wait", event("retrain", "m", 1, "x"), timeout=1.0)
    took = time.monotonic() - start
    assert delivery.outcome == "timed out after 1 s" and 0.9 < took < 5, took
    child = int(pid_file.read_text())
    time.sleep(0.2)
    assert not _alive(child)                             # the shell's child went with it


def test_a_command_that_ignores_stdin_still_counts_as_sent():
    assert deliver("exec 0<&-; true", event("deferred", "m", 2, "x" * 200_000)).ok


def test_events_and_settings_are_checked():
    assert set(EVENTS) == {"retrain", "promotion", "rejection", "revert", "deferred", "failed"}
    with pytest.raises(ValueError, match="unknown kind"):
        event("party", "m", 1, "x")
    assert check_command(" OFF ") is None and check_command(None) is None
    with pytest.raises(InputError, match="notify timeout"):
        check_timeout(0)
    with pytest.raises(InputError, match="notify:"):
        check_command(["curl"])


# ---------------------------------------------------------------------------------- a step's events


def test_a_step_sends_retrain_then_promotion_and_records_the_delivery(fresh, tmp_path):
    drop_batches_from(fresh, 7)
    out = tmp_path / "events.jsonl"
    line = ok(run_cli(fresh, "step", "--force-retrain", "--no-gate", "--notify", f"cat >> {out}")).stdout
    assert "production=v2" in line
    events = _events(out)
    assert [e["event"] for e in events] == ["retrain", "promotion"]
    retrain, promotion = events
    assert retrain["batch"] == promotion["batch"] == 6 and retrain["model"] == "demo"
    assert retrain["trigger"] == "manual" and retrain["serving"] == 1
    assert (promotion["from"], promotion["to"], promotion["gate"]) == (1, 2, "off")
    assert promotion["text"].startswith("Batch 6: v2 promoted without a gate and serves (was v1")
    run = the_batch_run(registry(fresh), 6)
    assert promotion["run_id"] == run.run_id
    assert run.tags["cara.notify"] == "retrain: sent; promotion: sent"


def test_a_failing_or_hanging_command_never_fails_the_step(fresh):
    drop_batches_from(fresh, 8)
    failing = run_cli(fresh, "step", "--force-retrain", "--no-gate", "--notify", "exit 7")
    ok(failing)
    warnings = error_lines(failing)
    assert len(warnings) == 2 and all(w.startswith("cara-mlflow: warning: notify: the ") for w in warnings)
    assert "retrain event of batch 6 was not delivered (failed: exit 7)" in warnings[0]
    reg = registry(fresh)
    assert reg.last_batch() == 6 and the_batch_run(reg, 6).tags["cara.notify"] == (
        "retrain: failed: exit 7; promotion: failed: exit 7")

    start = time.monotonic()
    hanging = ok(run_cli(fresh, "step", "--force-retrain", "--notify", "sleep 120", "--notify-timeout", "1"))
    assert time.monotonic() - start < 100
    assert "timed out after 1 s" in hanging.stderr and reg.last_batch() == 7
    assert the_batch_run(reg, 7).tags["cara.notify"].endswith("timed out after 1 s")


def test_a_failed_step_sends_failed_with_its_batch_and_keeps_its_one_line_error(fresh, tmp_path):
    out = tmp_path / "events.jsonl"
    rewrite_batch(fresh, 6, read_data(fresh, 6).drop(columns=["x1"]))
    result = run_cli(fresh, "step", "--notify", f"cat >> {out}")
    assert result.returncode == 1 and len(error_lines(result)) == 1
    (failed,) = _events(out)
    assert failed["event"] == "failed" and failed["batch"] == 6 and failed["exit_code"] == 1
    assert "x1" in failed["error"] and failed["text"].startswith("A step of demo failed on batch 6: ")
    assert registry(fresh).last_batch() == 5


def test_a_command_stored_at_tune_is_used_unless_the_step_says_off(fresh, tmp_path):
    out = tmp_path / "events.jsonl"
    ok(run_cli(fresh, "tune", "--offline", "0:5", "--kappa", "5", "--policy", "cara-ct", "--model", "lr",
               "--notify", f"cat >> {out}", "--notify-timeout", "5"))
    doc = json.loads(ok(run_cli(fresh, "status", "--json")).stdout)
    assert doc["policy"]["name"] == "cara-ct"
    ok(run_cli(fresh, "step", "--force-retrain", "--no-gate", "--notify", "off"))
    assert _events(out) == []
    ok(run_cli(fresh, "step", "--force-retrain", "--no-gate"))
    assert [e["event"] for e in _events(out)] == ["retrain", "promotion"]
    assert _events(out)[0]["batch"] == 7
    # a re-tune (the weekly cron line) keeps the command, and says so; --notify off drops it
    retuned = ok(run_cli(fresh, "tune", "--offline", "0:5", "--kappa", "4", "--policy", "cara-ct", "--model", "lr"))
    assert "kept from the active policy v2: its notify command" in retuned.stdout + retuned.stderr
    stored = json.loads(ok(run_cli(fresh, "status", "--json")).stdout)["policy"]["notify"]
    assert stored == {"command": f"cat >> {out}", "timeout": 5.0}
    assert f"notify `cat >> {out}` (timeout 5 s)" in ok(run_cli(fresh, "status")).stdout
    ok(run_cli(fresh, "tune", "--offline", "0:5", "--kappa", "4", "--policy", "cara-ct", "--model", "lr",
               "--notify", "off"))
    assert json.loads(ok(run_cli(fresh, "status", "--json")).stdout)["policy"]["notify"] is None
    empty = run_cli(fresh, "step", "--notify", " ")
    assert error_lines(empty) == ["cara-mlflow: error: notify: expected a shell command, or off for none; got ' '"]


def test_a_timeout_without_a_command_at_tune_is_one_line(fresh):
    result = run_cli(fresh, "tune", "--offline", "0:5", "--kappa", "5", "--notify-timeout", "5")
    assert result.returncode == 1 and error_lines(result) == [
        "cara-mlflow: error: notify-timeout: it bounds the --notify command; give --notify CMD too, or drop it"]


def test_a_budget_deferral_is_an_event(fresh, tmp_path):
    out = tmp_path / "events.jsonl"
    drop_batches_from(fresh, 8)
    ok(run_cli(fresh, "step", "--force-retrain", "--no-gate", "--retrain-budget", "1:10"))   # the one attempt
    data = read_data(fresh, 7)
    rewrite_batch(fresh, 7, data.assign(label=1 - data["label"]))     # every answer now wrong: the policy retrains
    line = ok(run_cli(fresh, "step", "--retrain-budget", "1:10", "--notify", f"cat >> {out}")).stdout
    assert "deferred" in line
    kinds = [e["event"] for e in _events(out)]
    assert kinds[-1] == "deferred" and "retrain" not in kinds
    deferred = _events(out)[-1]
    assert deferred["batch"] == 7 and deferred["reason"] == "budget" and deferred["serving"] == 2


def test_a_store_that_is_not_there_is_a_failed_event_too(tmp_path):
    out = tmp_path / "events.jsonl"
    missing = tmp_path / "no-store"
    result = run_cli(missing, "step", "--notify", f"cat >> {out}")
    assert result.returncode == 1 and len(error_lines(result)) == 1
    (failed,) = _events(out)
    assert failed["event"] == "failed" and failed["batch"] is None and "is not a batch store" in failed["error"]
    assert not missing.exists()
