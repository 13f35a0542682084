"""Decisions before labels, end to end: a stream whose queries land L batches before their labels,
stepped one cron step at a time (tune --decide-before-labels). Every batch is processed once,
provisional then reconciled on the same run, in order; retrains train on the latest labelled
batch, never twice on one; a label flip the estimate cannot see is caught up when its labels land;
and without the setting a batch of queries waits, as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from cara_mlflow.store import QUERIES_MARKER, BatchStore
from cara_mlflow.tracking import registry as reg_mod

from .crash_harness import KILL_ENV
from .helpers import client, copy_store, ok, one_line_error, registry, run_cli, runs_of

pytestmark = pytest.mark.usefixtures("mlflow_globals_untouched")

DELAY = 2
INIT, LAST = 6, 13


def _held_stream(root: Path, stream: str, *tune_args: str) -> Path:
    """A store of ``stream`` (14 batches of 250) tuned on 0:6 and initialised on 6, whose batches
    7..13 are held aside (``root/held``) to land as a producer would: queries first, labels later."""
    from cara_mlflow.cli import cli

    store = root / "store"
    made = CliRunner().invoke(cli, ["make-stream", stream, "--out", str(store), "--n-batches", str(LAST + 1),
                                    "--batch-size", "250"])
    assert made.exit_code == 0, made.output
    ok(run_cli(store, "tune", "--offline", f"0:{INIT}", "--model", "lr", *tune_args))
    ok(run_cli(store, "init", "--batch", str(INIT)))
    held = root / "held"
    held.mkdir()
    for b in range(INIT + 1, LAST + 1):
        shutil.move(store / "batches" / str(b), held / str(b))
    return store


def _queries(store: Path, t: int) -> None:
    """Batch ``t``'s queries land: queries.parquet, then _QUERIES."""
    held = store.parent / "held" / str(t)
    BatchStore(store).write_queries(t, pd.read_parquet(held / "queries.parquet"))


def _labels(store: Path, t: int) -> None:
    """Batch ``t``'s labels land: data.parquet, then _SUCCESS (its queries are kept)."""
    held = store.parent / "held" / str(t)
    BatchStore(store).write(t, pd.read_parquet(held / "data.parquet"))


def _cron(store: Path, t: int, cara) -> str:
    """One period: batch t's queries land, batch t - DELAY's labels land, then `step` runs."""
    if t <= LAST:
        _queries(store, t)
    if INIT < t - DELAY <= LAST:
        _labels(store, t - DELAY)
    return ok(cara(store, "step")).stdout


def _history(store: Path, cara) -> dict[int, dict]:
    return {row["batch"]: row for row in json.loads(ok(cara(store, "history", "--json")).stdout)}


@pytest.fixture(scope="module")
def gauss_store(tmp_path_factory) -> Path:
    """GAUSS-D (covariate drift only): the estimate can follow the realized Ψ̄."""
    return _held_stream(tmp_path_factory.mktemp("gauss"), "gauss-d", "--kappa", "0.3", "--policy", "cara-ct",
                        "--decide-before-labels")


def test_queries_first_stepped_one_cron_step_at_a_time(gauss_store, tmp_path, cara):
    store = copy_store(gauss_store, tmp_path / "store")
    shutil.copytree(gauss_store.parent / "held", tmp_path / "held")
    reg = registry(store)
    lines = {}
    for t in range(INIT + 1, LAST + 1 + DELAY):
        lines[t] = _cron(store, t, cara)
        assert reg.last_batch() == min(t, LAST)                     # order: one batch per period
        if t == INIT + 2:                                            # mid-way: 7 and 8 still provisional
            rows = _history(store, cara)
            assert rows[7]["provisional"] is True and rows[7]["psi_bar_realized"] is None
            assert rows[7]["psi_bar"] == rows[7]["psi_bar_estimated"]
            status = json.loads(ok(cara(store, "status", "--json")).stdout)
            assert status["provisional"] == [7, 8] and status["policy"]["decide_before_labels"] is True
    assert "(provisional: before its labels)" in lines[INIT + 1]
    assert f"reconciled batch {LAST}" in lines[LAST + DELAY]
    rows = _history(store, cara)
    state = reg.runs.load_json(reg.committed_run(reg.last_run_batch()).run_id, "policy_state.json")
    for b in range(INIT + 1, LAST + 1):
        runs = runs_of(reg, "batch", b)
        assert [r.status for r in runs] == ["FINISHED"], b                  # processed once, one run
        run = runs[0]
        assert run.tags[reg_mod.TAG_PROVISIONAL] == "false"                 # reconciled on the same run
        assert {"psi_bar_estimated", "psi_bar_realized", "estimate_error"} <= set(run.metrics)
        row = rows[b]
        assert row["provisional"] is False and row["psi_bar"] == row["psi_bar_realized"] == run.metrics[
            "psi_bar_realized"]
        assert row["psi_bar_estimated"] == run.metrics["psi_bar_estimated"]
    assert state.get("provisional") in (None, [])
    # retrains train on the latest labelled batch, decided later; never two versions on one batch
    versions = [v for v in reg.versions() if v.tags.get(reg_mod.TAG_TRIGGER) != "init"]
    assert versions, "the drift should ask for at least one retrain"
    trained = [v.trained_on for v in versions]
    assert len(trained) == len(set(trained))
    for v in versions:
        decided = int(v.tags[reg_mod.TAG_DECIDED_AT])
        assert v.trained_on <= decided - DELAY or v.tags.get(reg_mod.TAG_DECIDED_AT) in {
            str(r) for r in rows if rows[r]["catchup"]}
    # the cumulative cost is the realized one: κ per attempt (and init), realized Ψ̄ per kept batch
    kappa = 0.3
    attempts = sum(1 for r in rows.values() if r["decision"] == "retrain") + sum(1 for r in rows.values()
                                                                                   if r["catchup"])
    kept = sum(r["psi_bar_realized"] for b, r in rows.items() if b > INIT and r["decision"] == "keep")
    assert state["cumulative_cost"] == pytest.approx(kappa * (1 + attempts) + kept, rel=1e-9)
    deferred = [r for r in rows.values() if r["deferred"] == "no-new-labels"]
    for r in deferred:
        assert "no new labels" in r["reason"]
    # status says how far the estimates were from the realized values
    status = json.loads(ok(cara(store, "status", "--json")).stdout)
    error = status["estimate_error"]
    assert error["batches"] == list(range(INIT + 1, LAST + 1))
    diffs = [rows[b]["psi_bar_estimated"] - rows[b]["psi_bar_realized"] for b in error["batches"]]
    assert error["mean_abs_error"] == pytest.approx(sum(map(abs, diffs)) / len(diffs))
    text = ok(cara(store, "status")).stdout
    assert "estimates    off by" in text and "label flip" in text


@pytest.fixture(scope="module")
def flip_store(tmp_path_factory) -> Path:
    """CovCon-D (its labels flip at batch 10, its inputs' law unchanged), stepped with labels 2
    batches late through batch 11: batch 10's labels are the next to land."""
    store = _held_stream(tmp_path_factory.mktemp("flip"), "covcon-d", "--kappa", "2", "--policy", "cara-t",
                         "--decide-before-labels")
    for t in range(INIT + 1, 10 + DELAY):
        _queries(store, t)
        if t - DELAY > INIT:
            _labels(store, t - DELAY)
        ok(run_cli(store, "step"))
    return store


def _copy(store: Path, tmp_path: Path) -> Path:
    shutil.copytree(store.parent / "held", tmp_path / "held")
    return copy_store(store, tmp_path / "store")


def test_a_flip_the_estimate_cannot_see_is_caught_up_when_its_labels_land(flip_store, tmp_path, cara):
    """The estimate of batch 10 stays small (it does not pretend to see the flip), the realized Ψ̄
    jumps, and the retrain the policy would have taken is taken at the step that reconciles batch
    10, recorded on batch 10's run, trained on the latest labelled batch."""
    store = _copy(flip_store, tmp_path)
    reg = registry(store)
    out = _cron(store, 10 + DELAY, cara)
    rows = _history(store, cara)
    flip = rows[10]
    assert flip["psi_bar_realized"] > 10 * max(abs(flip["psi_bar_estimated"]), 0.5)
    assert flip["catchup"] and "missed" in flip["catchup"]
    assert "catch-up retrain" in out
    caught = reg.versions(decided_at=10)
    assert len(caught) == 1 and caught[0].trained_on == 10
    assert reg.production().version == caught[0].version
    retrain_runs = runs_of(reg, "retrain", 10)
    assert [r.tags.get("mlflow.parentRunId") for r in retrain_runs] == [runs_of(reg, "batch", 10)[0].run_id]


def test_without_the_setting_a_batch_of_queries_waits_as_before(tmp_path, cara):
    store = _held_stream(tmp_path, "gauss-d", "--kappa", "0.3", "--policy", "cara-ct")
    _queries(store, 7)
    assert (store / "batches" / "7" / QUERIES_MARKER).exists()
    out = ok(cara(store, "step")).stdout
    assert out.strip() == "waiting for batch 7 (no _SUCCESS yet)"
    assert registry(store).last_batch() == INIT and not runs_of(registry(store), "batch", 7)
    _labels(store, 7)
    assert ok(cara(store, "step")).stdout.startswith("batch 7: ")
    row = _history(store, cara)[7]
    assert row["provisional"] is False and row["psi_bar_estimated"] is None
    assert row["psi_bar_realized"] == row["psi_bar"]


def test_decide_before_labels_refused_for_a_drift_detector(tmp_path):
    store = tmp_path / "store"
    from cara_mlflow.cli import cli

    CliRunner().invoke(cli, ["make-stream", "gauss-d", "--out", str(store), "--n-batches", "4", "--batch-size", "50"])
    result = run_cli(store, "tune", "--offline", "0:3", "--kappa", "1", "--policy", "adwin", "--decide-before-labels")
    assert "decide-before-labels: adwin watches the errors" in one_line_error(result)
    assert not (store / "mlflow.db").exists()


@pytest.mark.parametrize("phase", ["during-retrain", "after-alias", "after-commit"])
def test_kill_9_during_a_provisional_retrain_then_rerun_does_it_once(gauss_store, tmp_path, phase):
    """Batch 7 is labelled and skipped, batch 8 holds queries only: a forced retrain at 8 trains on
    7. Killed at each phase, the rerun commits batch 8 once, with one version trained on 7."""
    store = _copy(gauss_store, tmp_path)
    _queries(store, 7)
    _labels(store, 7)
    ok(run_cli(store, "skip", "--batch", "7", "--reason", "test: a labelled batch newer than production's"))
    _queries(store, 8)
    killed = run_cli(store, "step", "--force-retrain", **{KILL_ENV: phase})
    assert killed.returncode in (-9, 137), (phase, killed.returncode, killed.stderr)
    rerun = ok(run_cli(store, "step", "--force-retrain"))            # cron reruns the same command
    assert "Traceback" not in rerun.stderr
    reg = registry(store)
    assert reg.last_batch() == 8
    assert [r.status for r in runs_of(reg, "batch", 8)].count("FINISHED") == 1
    trained = reg.versions(trained_on=7)
    assert len(trained) == 1 and trained[0].tags[reg_mod.TAG_DECIDED_AT] == "8"
    gate = trained[0].tags[reg_mod.TAG_GATE]
    assert gate in ("passed", "rejected")
    assert (reg.production().version == trained[0].version) == (gate == "passed")
    state = reg.runs.load_json(reg.committed_run(8).run_id, "policy_state.json")
    assert [p["batch"] for p in state["provisional"]] == [8]


@pytest.mark.parametrize("phase", ["during-reconcile", "after-alias"])
def test_kill_9_during_a_reconciliation_then_rerun_reconciles_once(flip_store, tmp_path, phase):
    """The flip's reconciliation, with its catch-up retrain, killed at each phase: the rerun
    records the realized Ψ̄ once, trains one catch-up version and commits once."""
    store = _copy(flip_store, tmp_path)
    _queries(store, 10 + DELAY)
    _labels(store, 10)
    killed = run_cli(store, "step", **{KILL_ENV: phase})
    assert killed.returncode in (-9, 137), (phase, killed.returncode, killed.stderr)
    rerun = ok(run_cli(store, "step"))
    assert "Traceback" not in rerun.stderr
    reg = registry(store)
    run = runs_of(reg, "batch", 10)
    assert [r.status for r in run] == ["FINISHED"]
    assert len(client(store).get_metric_history(run[0].run_id, "psi_bar_realized")) == 1
    assert len(reg.versions(decided_at=10)) == 1 and reg.production().tags[reg_mod.TAG_DECIDED_AT] == "10"
    assert reg.last_batch() == 10 + DELAY
    state = reg.runs.load_json(reg.committed_run(reg.last_run_batch()).run_id, "policy_state.json")
    assert 10 not in [p["batch"] for p in state["provisional"]]
    assert ok(run_cli(store, "step")).stdout.startswith("nothing to do")
