"""The lifecycle manager end to end: ``tune`` → ``init`` → ``step`` (and ``skip``, ``rollback``,
``status``, ``history``) against real MLflow — a sqlite tracking store inside each batch store,
real ``mlflow.projects.run`` retrains of the repo's own MLproject — with no mocks.

Where the process boundary is the thing under test (SIGKILL fault injection, two steps at once,
the lock, the one-line stderr and exit codes of the console script, every retrain, the
environment cron gives) the CLI runs as ``python -m cara_mlflow.cli`` in a subprocess. Elsewhere
``cara_mlflow.cli.main`` runs in-process (the same exit codes, without 2-3 s of imports per
call), with the environment set through ``monkeypatch``. Results are read back with an
``MlflowClient`` on the store's sqlite file; no test changes MLflow's global state (checked).

Speed: one tuned and initialised store is built per module and *copied* for every test that
needs a fresh start. The experiment's ``artifact_location`` (and the policy's logged model) is
an absolute path inside the original store, so a copy keeps writing its artifacts under the
original's ``mlartifacts``. That is harmless: every run and logged model writes under its own
unique id, each copy has its own ``mlflow.db`` (runs, versions, aliases, tags), and the
original is never stepped itself, so no test sees another's state.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cara_mlflow import lifecycle
from cara_mlflow.cli import cli
from cara_mlflow.lock import store_lock
from cara_mlflow.store import SUCCESS_MARKER, BatchStore, write_stream
from cara_mlflow.streams import make_stream
from cara_mlflow.tracking import default_tracking_uri
from cara_mlflow.train import split_holdout

from .crash_harness import KILL_ENV
from .helpers import (
    BATCH_SIZE,
    INIT_BATCH,
    KAPPA,
    NAME,
    OFFLINE,
    ONLINE,
    POLICY,
    TIMEOUT,
    client,
    closed_port,
    copy_store,
    drop_batches_from,
    error_lines,
    load_production,
    model_tags,
    ok,
    one_line_error,
    popen_cron,
    read_data,
    registry,
    rewrite_batch,
    run_cli,
    runs_of,
    snapshot,
    the_batch_run,
    timeline_points,
    with_x3,
)

pytestmark = pytest.mark.usefixtures("mlflow_globals_untouched")


@pytest.fixture(scope="module")
def ran_store(base_store, tmp_path_factory) -> tuple[Path, str]:
    """The base store after ``step --all`` over batches 6..13 (the policy decides); and its stdout."""
    root = copy_store(base_store, tmp_path_factory.mktemp("ran") / "store")
    result = ok(run_cli(root, "step", "--all"))
    return root, result.stdout


# ---------------------------------------------------------------------------------- 1. the main path


def test_step_all_processes_every_batch_in_order_and_says_so(ran_store):
    root, stdout = ran_store
    lines = stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [f"batch {b}" for b in ONLINE]
    assert lines[-1].startswith("nothing to do")
    assert registry(root).last_batch() == ONLINE[-1]


def test_registry_has_one_version_per_retrain_with_its_tags(ran_store):
    root, _ = ran_store
    reg = registry(root)
    decisions = {b: the_batch_run(reg, b).tags["cara.decision"] for b in ONLINE}
    retrains = [b for b, d in decisions.items() if d == "retrain"]
    assert retrains and "keep" in decisions.values(), f"want a mix of decisions for a meaningful test: {decisions}"
    versions = sorted(reg.versions(), key=lambda v: v.version)
    assert len(versions) == len(retrains) + 1
    assert [v.trained_on for v in versions] == [INIT_BATCH, *retrains]

    first, *rest = versions
    assert (first.tags["cara.trigger"], first.tags["cara.gate"]) == ("init", "off")
    for v in rest:
        assert v.tags["cara.trigger"] == POLICY
        assert v.tags["cara.gate"] in ("passed", "rejected")
    for v in versions:
        run = reg.runs.get(v.tags["cara.training_run"])
        assert run.tags["cara.run_type"] == "retrain"
        assert run.tags["cara.batch"] == str(v.trained_on)
        assert run.status == "FINISHED"
        assert run.tags["cara.model_uri"] == v.source
        assert len(runs_of(reg, "retrain", v.trained_on)) == 1         # one retrain per version

    # production: the version trained on the last retrain whose gate passed
    landed = [v for v in rest if v.tags["cara.gate"] == "passed"]
    assert landed[-1].trained_on == retrains[-1]
    assert reg.production().version == landed[-1].version


def test_one_finished_batch_run_per_committed_batch_with_metrics_and_state(ran_store):
    root, _ = ran_store
    reg = registry(root)
    assert {r.status for r in runs_of(reg, "batch")} == {"FINISHED"}
    assert len(runs_of(reg, "batch")) == len(ONLINE) + 1

    init = the_batch_run(reg, INIT_BATCH)
    assert init.tags["cara.decision"] == "init"
    assert init.tags["cara.model_version"] == "1"
    assert init.metrics["cumulative_cost"] == KAPPA
    cost = KAPPA
    in_use = 1
    for b in ONLINE:
        run = the_batch_run(reg, b)
        tags, metrics = run.tags, run.metrics
        assert run.name == f"batch-{b}"
        assert tags["cara.batch"] == str(b)
        assert tags["cara.decision"] in ("keep", "retrain")
        assert set(metrics) >= {"psi_bar", "decision", "kappa", "cumulative_cost", "n_data", "n_queries",
                                "psi_now", "psi_then"}
        assert metrics["psi_bar"] == pytest.approx(metrics["psi_now"] - metrics["psi_then"])
        assert (metrics["n_data"], metrics["n_queries"], metrics["kappa"]) == (BATCH_SIZE, BATCH_SIZE // 10, KAPPA)
        retrain = tags["cara.decision"] == "retrain"
        assert metrics["decision"] == float(retrain)
        # every retrain attempt pays κ, a keep pays Ψ̄
        cost += KAPPA if retrain else metrics["psi_bar"]
        assert metrics["cumulative_cost"] == pytest.approx(cost)
        if retrain and tags.get("cara.gate") == "passed":
            in_use = reg.versions(trained_on=b)[0].version
        assert tags["cara.model_version"] == str(in_use)
        state = reg.runs.load_json(run.run_id, "policy_state.json")
        assert state["model_version"] == in_use
        assert state["cumulative_cost"] == pytest.approx(cost)
        assert state["policy"]["policy"] == POLICY
        assert set(state["policy"]["state"]) == {"cum", "n"}
        if retrain:
            assert state["policy"]["state"] == {"cum": 0.0, "n": 0}     # reset once the retrain landed
            assert state["last_retrain"]["batch"] == b


def test_timeline_has_exactly_one_point_per_committed_batch(ran_store):
    root, _ = ran_store
    reg = registry(root)
    committed = [INIT_BATCH, *ONLINE]
    points = timeline_points(reg, "decision")
    assert [step for step, _ in points] == committed
    for step, value in points:
        assert value == the_batch_run(reg, step).metrics["decision"]
    assert [s for s, _ in timeline_points(reg, "psi_bar")] == ONLINE
    assert [s for s, _ in timeline_points(reg, "cumulative_cost")] == committed
    versions = dict(timeline_points(reg, "production_version"))
    assert versions[ONLINE[-1]] == reg.production().version


def test_history_json_matches_the_batch_runs(ran_store, cara):
    root, _ = ran_store
    reg = registry(root)
    result = ok(cara(root, "history", "--json"))
    rows = json.loads(result.stdout)
    assert [r["batch"] for r in rows] == [INIT_BATCH, *ONLINE]
    for row in rows:
        run = the_batch_run(reg, row["batch"])
        assert row["run_id"] == run.run_id
        assert row["decision"] == run.tags["cara.decision"]
        assert row["version"] == int(run.tags["cara.model_version"])
        assert row["psi_bar"] == run.metrics.get("psi_bar")
        assert row["cumulative_cost"] == run.metrics["cumulative_cost"]
        assert row["gate"] == run.tags.get("cara.gate")
        assert row["reason"] == run.tags.get("cara.reason", "")
        assert (row["kappa"], row["policy_version"]) == (5.0, 1)       # the base store's one tune
    table = ok(cara(root, "history"))
    assert len(table.stdout.strip().splitlines()) == len(rows) + 1


def test_a_clean_retrain_step_prints_one_line_and_nothing_on_stderr(fresh):
    result = ok(run_cli(fresh, "step", "--force-retrain"))
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1 and "retrain (forced by --force-retrain)" in result.stdout


def test_history_shows_a_retune_change_of_kappa_and_policy_version(fresh):
    ok(run_cli(fresh, "step"))                                        # batch 6 under policy v1, κ=5
    ok(run_cli(fresh, "tune", "--offline", "0:5", "--kappa", "9", "--model", "lr"))
    ok(run_cli(fresh, "skip", "--batch", "7", "--reason", "bad export"))
    ok(run_cli(fresh, "step"))                                        # batch 8 under policy v2, κ=9
    rows = {r["batch"]: r for r in json.loads(ok(run_cli(fresh, "history", "--json")).stdout)}
    assert [(rows[b]["kappa"], rows[b]["policy_version"]) for b in (5, 6, 7, 8)] == [(5.0, 1), (5.0, 1), (9.0, 2),
                                                                                     (9.0, 2)]


def test_status_json_says_where_production_stands(ran_store, cara):
    root, _ = ran_store
    reg = registry(root)
    s = json.loads(ok(cara(root, "status", "--json", "--ui", "http://mlflow.example:5000/")).stdout)
    production = reg.production()
    assert s["name"] == NAME
    assert s["tracking_uri"] == default_tracking_uri(root)
    assert s["store"] == str(root)
    assert s["production"] == {"version": production.version, "trained_on": production.trained_on,
                               "alias": "production"}
    assert s["last_batch"] == ONLINE[-1]
    assert (s["next_batch"], s["next_state"]) == (None, "none pending")
    doc = lifecycle.active_policy(reg)
    assert s["policy"] == {"name": POLICY, "params": dict(doc.params), "kappa": KAPPA, "version": 1,
                           "task": "classification", "loss": "zero_one", "features": ["x1", "x2"],
                           "feature_kinds": {"x1": "numeric", "x2": "numeric"},
                           "guards": {"max_model_age": None, "retrain_budget": None}, "psi_scale": "paper",
                           "verify_margin": 0.25, "notify": None, "decide_before_labels": False,
                           "backend": {"name": "local", "config": {}}, "offline": list(OFFLINE), "pool": []}
    assert s["provisional"] == [] and s["estimate_error"] is None and s["retrains_running"] == []
    # the last batch promoted (this store's history): its check waits for the next batch
    assert production.trained_on == ONLINE[-1]
    assert s["pending_check"] == {"version": production.version, "replaced": s["pending_check"]["replaced"],
                                  "batch": ONLINE[-1], "skip": None}
    assert s["pending_check"]["replaced"] < production.version
    last = the_batch_run(reg, ONLINE[-1])
    assert s["cumulative_cost"] == pytest.approx(last.metrics["cumulative_cost"])
    assert s["cooldown_left"] == 0 and s["last_retrain"]["version"] == production.version
    assert s["position"] == ONLINE[-1] and s["missing"] == [] and s["late_batches"] == []    # ids 0, 1, …: counts
    exp = reg.runs.experiment_id(create=False)
    timeline = reg.runs.find("timeline")[0].run_id
    base = "http://mlflow.example:5000/#"
    view = "?workflowType=machine_learning"
    assert s["ui"] == {"model": f"{base}/models/{NAME}", "runs": f"{base}/experiments/{exp}/runs{view}",
                       "timeline": f"{base}/experiments/{exp}/runs/{timeline}/model-metrics{view}"}
    text = ok(cara(root, "status")).stdout
    assert f"production   v{production.version} (@production)" in text and "ui timeline" in text


def test_tuning_run_and_active_policy_document(ran_store, tmp_path):
    root, _ = ran_store
    reg = registry(root)
    (tune_run,) = reg.runs.find("tune")
    assert tune_run.status == "FINISHED"
    names = set(reg.runs.artifact_paths(tune_run.run_id, "tuning"))
    assert names == {"tuning/cost_matrix.npy", "tuning/cost_matrix.png"}
    C = np.load(reg.runs.download(tune_run.run_id, "tuning/cost_matrix.npy", str(tmp_path)))
    T = OFFLINE[1] - OFFLINE[0]
    assert C.shape == (T, T)
    assert np.all(np.diag(C) == KAPPA) and np.all(np.isinf(C[np.tril_indices(T, -1)]))
    assert np.all(np.isfinite(C[np.triu_indices(T, 1)]))

    mv = client(ran_store[0]).get_model_version_by_alias(f"{NAME}.policy", "active")
    assert mv.run_id == tune_run.run_id
    text, version = reg.active_policy_text()                         # policy.json of NAME.policy@active
    doc = json.loads(text)
    assert version == 1 and lifecycle.active_policy(reg).to_dict() == doc   # the typed document writes it back
    assert doc["policy"] == POLICY and doc["kappa"] == KAPPA
    assert set(doc["params"]) == {"tau_cum", "kappa"} and doc["params"]["kappa"] == KAPPA   # τ relative to κ̄
    assert doc["params"]["tau_cum"] == pytest.approx(float(tune_run.params["theta.tau_cum"]))
    assert isinstance(doc["psi"]["gamma"], float) and doc["psi"]["gamma"] > 0
    assert doc["psi"]["method"] == "auto"   # tune's default, every step's default
    assert doc["psi"]["gamma"] == pytest.approx(tune_run.metrics["gamma"])
    assert doc["features"] == ["x1", "x2"] and doc["target"] == "label"
    assert doc["trainer"]["model"] == "lr" and doc["trainer"]["holdout"] == 0.2
    assert doc["offline"] == {"start": OFFLINE[0], "stop": OFFLINE[1]}


def test_production_alias_loads_as_a_sklearn_model(ran_store, tmp_path):
    root, _ = ran_store
    model = load_production(root, tmp_path / "model")
    batch = BatchStore(root).read(ONLINE[-1], target="label", features=["x1", "x2"])
    assert np.mean(model.predict(batch.frame) == batch.y) > 0.8
    # a DataFrame in any column order, with extra columns: the Pipeline selects by name
    shuffled = batch.frame[["x2", "x1"]].assign(extra="ignored")
    assert np.array_equal(model.predict(shuffled), model.predict(batch.frame))


# ---------------------------------------------------------------------------------- 2. nothing to do


def test_second_step_with_nothing_pending_changes_nothing(ran_store, tmp_path, cara):
    root = copy_store(ran_store[0], tmp_path / "store")
    before = snapshot(root)
    expected = f"nothing to do: batch {ONLINE[-1]} is the last one in {root / 'batches'}"
    assert ok(run_cli(root, "step")).stdout.strip() == expected
    assert snapshot(root) == before
    assert ok(cara(root, "step", "--all")).stdout.strip() == expected
    assert snapshot(root) == before


# ---------------------------------------------------------------------------------- 3. incomplete batch


def test_incomplete_next_batch_is_waited_for_even_when_later_ones_are_complete(fresh, cara):
    (fresh / "batches" / "6" / SUCCESS_MARKER).unlink()
    assert all(i.complete for i in BatchStore(fresh).list() if i.id > 6)
    before = snapshot(fresh)
    result = ok(run_cli(fresh, "step"))
    assert result.stdout.strip() == "waiting for batch 6 (no _SUCCESS yet)"
    assert snapshot(fresh) == before
    for args in (["step", "--all"], ["step", "--force-retrain"]):
        assert ok(cara(fresh, *args)).stdout.strip() == "waiting for batch 6 (no _SUCCESS yet)"
        assert snapshot(fresh) == before
    status = json.loads(ok(cara(fresh, "status", "--json")).stdout)
    assert (status["last_batch"], status["next_batch"], status["next_state"]) == (INIT_BATCH, 6, "waiting")


# ---------------------------------------------------------------------------------- 4. malformed batch, skip


def test_malformed_batch_fails_every_run_until_skipped(fresh, cara):
    data = read_data(fresh, 6)
    data.loc[[3, 17], "x2"] = np.nan
    rewrite_batch(fresh, 6, data)
    # batch 7 repeats batch 5's data: production (trained on 5) keeps, so no retrain is needed
    rewrite_batch(fresh, 7, read_data(fresh, INIT_BATCH))
    before = snapshot(fresh)
    line = one_line_error(run_cli(fresh, "step"))
    assert line.startswith("cara-mlflow: error: batch 6:") and "'x2'" in line and "2 NaN" in line
    assert line.endswith("; fix the batch, or commit past it with `cara-mlflow skip --batch 6 --reason TEXT`")
    assert snapshot(fresh) == before
    for args in (["step"], ["step", "--all"], ["step", "--force-retrain"]):       # every run, until fixed
        again = cara(fresh, *args)
        assert again.returncode == 1 and again.stderr.strip() == line
        assert snapshot(fresh) == before
    status = json.loads(ok(cara(fresh, "status", "--json")).stdout)
    assert status["next_batch"] == 6 and status["next_state"].startswith("malformed: batch 6")

    wrong = cara(fresh, "skip", "--batch", "7", "--reason", "wrong one")
    assert wrong.returncode == 1 and "pending: 6; got 7" in wrong.stderr
    assert snapshot(fresh) == before

    result = ok(cara(fresh, "skip", "--batch", "6", "--reason", "NaN in x2 from the exporter"))
    assert result.stdout.startswith("batch 6: skip (NaN in x2 from the exporter)")
    reg = registry(fresh)
    assert reg.last_batch() == 6
    skipped = the_batch_run(reg, 6)
    assert skipped.tags["cara.decision"] == "skip"
    assert skipped.tags["cara.reason"] == "NaN in x2 from the exporter"
    assert skipped.tags["cara.model_version"] == "1"
    assert skipped.metrics["decision"] == 0.0
    assert skipped.metrics["cumulative_cost"] == KAPPA          # a skip costs nothing
    assert snapshot(fresh)["versions"] == before["versions"]
    assert reg.production().version == 1

    result = ok(cara(fresh, "step"))
    assert result.stdout.startswith("batch 7:") and " keep (" in result.stdout
    assert reg.last_batch() == 7
    assert the_batch_run(reg, 7).tags["cara.decision"] == "keep"
    assert [s for s, _ in timeline_points(reg)] == [INIT_BATCH, 6, 7]


# ---------------------------------------------------------------------------------- 5. crash injection


def _assert_batch_6_done_once(store: Path, tmp_path: Path) -> list:
    """After the rerun: one version and one retrain for batch 6, one FINISHED batch run, the rest
    KILLED/FAILED, last_batch 6, one timeline point, and production loads. Returns batch 6's runs."""
    reg = registry(store)
    assert reg.last_batch() == 6
    (version,) = reg.versions(trained_on=6)                          # registered exactly once
    (retrain,) = runs_of(reg, "retrain", 6)                          # trained exactly once
    assert retrain.status == "FINISHED"
    assert version.tags["cara.training_run"] == retrain.run_id
    assert version.tags["cara.trigger"] == "manual"
    assert len(reg.versions()) == 2

    runs = runs_of(reg, "batch", 6)
    finished = [r for r in runs if r.status == "FINISHED"]
    assert len(finished) == 1
    assert {r.status for r in runs} <= {"FINISHED", "KILLED", "FAILED"}    # nothing left RUNNING
    run = finished[0]
    assert run.tags["cara.decision"] == "retrain"
    gate = version.tags["cara.gate"]
    assert run.tags["cara.gate"] == gate and gate in ("passed", "rejected")
    expected = version.version if gate == "passed" else 1
    assert reg.production().version == expected == int(run.tags["cara.model_version"])
    assert run.metrics["cumulative_cost"] == pytest.approx(2 * KAPPA)     # κ paid once
    assert timeline_points(reg) == [(INIT_BATCH, 1.0), (6, 1.0)]              # one point, never two
    model = load_production(store, tmp_path / "model")
    assert model.predict(pd.DataFrame({"x1": [0.0], "x2": [0.0]})).shape == (1,)
    return runs


def test_step_killed_again_and_again_at_every_phase_then_rerun(fresh, tmp_path):
    drop_batches_from(fresh, 7)
    reg = registry(fresh)
    for phase in lifecycle.PHASES:
        killed = run_cli(fresh, "step", "--force-retrain", **{KILL_ENV: phase})
        assert killed.returncode in (-9, 137), (phase, killed.returncode, killed.stderr)
        assert reg.last_batch() == (6 if phase == "after-commit" else INIT_BATCH), phase
        assert len(reg.versions(trained_on=6)) <= 1 and len(runs_of(reg, "retrain", 6)) <= 1, phase
    rerun = ok(run_cli(fresh, "step", "--force-retrain"))
    assert rerun.stdout.startswith("nothing to do: batch 6")
    runs = _assert_batch_6_done_once(fresh, tmp_path)
    # a batch run for every attempt from after-batch-run on: all but the committed one KILLED
    assert len(runs) == len(lifecycle.PHASES) - 2
    assert sorted(r.status for r in runs).count("FINISHED") == 1


def test_committed_run_is_found_by_id_and_a_stale_hint_is_ignored(fresh):
    """``cara.last_run`` (written just before the commit point) names the committing batch run,
    so a step reads it by id; a hint for an uncommitted batch (a kill between the hint and the
    commit point), for a run that does not exist or for another batch's run is not trusted."""
    drop_batches_from(fresh, 9)                                       # pending: 6, 7, 8
    reg = registry(fresh)
    assert reg.committed_run(INIT_BATCH).run_id == the_batch_run(reg, INIT_BATCH).run_id
    init_run = the_batch_run(reg, INIT_BATCH).run_id
    client(fresh).set_registered_model_tag(NAME, "cara.last_run", "6:0123456789abcdef0123456789abcdef")
    assert registry(fresh).committed_run(INIT_BATCH) is None          # names batch 6, last is 5
    ok(run_cli(fresh, "step"))
    reg = registry(fresh)
    assert reg.last_batch() == 6
    run6 = the_batch_run(reg, 6).run_id
    assert model_tags(fresh)["cara.last_run"] == f"6:{run6}"
    assert reg.committed_run(6).run_id == run6
    for hint in ("6:0123456789abcdef0123456789abcdef", f"6:{init_run}", "garbage"):
        client(fresh).set_registered_model_tag(NAME, "cara.last_run", hint)
        assert registry(fresh).committed_run(6) is None, hint
    client(fresh).set_registered_model_tag(NAME, "cara.last_run", f"6:{init_run}")
    ok(run_cli(fresh, "step"))                                        # falls back to the search
    reg = registry(fresh)
    assert reg.last_batch() == 7
    assert reg.committed_run(7).run_id == the_batch_run(reg, 7).run_id
    assert {r.status for r in runs_of(reg, "batch")} == {"FINISHED"}
    assert [s for s, _ in timeline_points(reg)] == [INIT_BATCH, 6, 7]


# ---------------------------------------------------------------------------------- 6. concurrency


def test_two_concurrent_step_all_never_process_a_batch_twice(fresh, tmp_path):
    """Two cron runs at once, in cron's environment (the retrain project must still find python)."""
    drop_batches_from(fresh, 8)                         # pending: 6 and 7, both retrained
    home = tmp_path / "home"
    home.mkdir()
    procs = [popen_cron(fresh, home, "step", "--all", "--force-retrain", "--lock-timeout", "60") for _ in range(2)]
    outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode in (0, 75), (proc.returncode, out, err)
        assert "Traceback" not in err, err
        if proc.returncode == 75:
            assert "holds the lock" in err
    assert 0 in [p.returncode for p in procs]
    processed = [line for out, _ in outputs for line in out.splitlines() if line.startswith("batch ")]
    assert sorted(line.split(":")[0] for line in processed) == ["batch 6", "batch 7"]

    reg = registry(fresh)
    assert reg.last_batch() == 7
    for b in (6, 7):
        run = the_batch_run(reg, b)
        assert run.tags["cara.decision"] == "retrain"
        assert len(runs_of(reg, "batch", b)) == 1
        assert len(reg.versions(trained_on=b)) == 1
        assert len(runs_of(reg, "retrain", b)) == 1
    assert len(reg.versions()) == 2 + 1                # versions == retrains + 1
    assert [s for s, _ in timeline_points(reg)] == [INIT_BATCH, 6, 7]
    assert sorted(p.name for p in home.iterdir()) == []   # no stray mlruns/ or mlflow.db in cron's cwd


# ---------------------------------------------------------------------------------- 7. the lock


def test_lock_timeout_zero_while_the_lock_is_held_exits_75(fresh):
    before = snapshot(fresh)
    with store_lock(fresh, 5):
        result = run_cli(fresh, "step", "--lock-timeout", "0")
    assert result.returncode == 75, result.stderr
    (line,) = error_lines(result)
    assert "holds the lock" in line and str(fresh) in line and "retry" in line
    assert result.stdout == ""
    assert snapshot(fresh) == before


# ---------------------------------------------------------------------------------- 8. environment errors


def test_missing_production_alias_fails_with_one_line_and_changes_nothing(fresh):
    client(fresh).delete_registered_model_alias(NAME, "production")
    before = snapshot(fresh)
    line = one_line_error(run_cli(fresh, "step"))
    assert "'production' alias" in line and f"'{NAME}'" in line
    assert snapshot(fresh) == before


def test_missing_production_alias_can_be_put_back_with_rollback_to(fresh, cara):
    client(fresh).delete_registered_model_alias(NAME, "production")
    ok(cara(fresh, "rollback", "--to", "1", "--reason", "alias deleted by hand"))
    assert registry(fresh).production().version == 1


def _unreachable(store: Path, uri: str, *args: str) -> subprocess.CompletedProcess:
    return run_cli(store, *args, MLFLOW_TRACKING_URI=uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
                   MLFLOW_HTTP_REQUEST_TIMEOUT="2")


def test_unreachable_tracking_server_fails_with_one_line_naming_it(fresh):
    uri = f"http://127.0.0.1:{closed_port()}"
    before = snapshot(fresh)
    line = one_line_error(_unreachable(fresh, uri, "step"), code=75)     # EX_TEMPFAIL: cron retries
    assert f"cannot reach the MLflow tracking store at {uri}" in line
    assert snapshot(fresh) == before


@pytest.mark.parametrize("command", ["step", "status"])
def test_credentials_in_the_tracking_uri_are_never_shown(fresh, command):
    uri = f"http://user:secret@127.0.0.1:{closed_port()}"
    result = _unreachable(fresh, uri, command)
    line = one_line_error(result, code=75)
    assert "user:***@127.0.0.1" in line
    assert "secret" not in result.stderr + result.stdout


# ---------------------------------------------------------------------------------- 9. the gate


def test_rejected_challenger_leaves_production_and_cools_down(fresh, tmp_path, cara):
    reg = registry(fresh)
    doc = lifecycle.active_policy(reg)
    production = reg.production()
    (tmp_path / "v1").mkdir()
    model = reg.load_model(production, str(tmp_path / "v1"))
    features = list(doc.features)

    # batch 6: constant 0 on the rows the trainer trains on, production's own answers on the rows it
    # holds out → the challenger is "always 0" and loses on held-out rows that production gets right
    data = read_data(fresh, 6)
    _, held = split_holdout(len(data), doc.trainer.holdout, doc.trainer.seed)
    predicted = model.predict(data[features])
    assert predicted[held].sum() > 0, "production must answer 1 on some held-out row"
    label = np.zeros(len(data), dtype=np.int64)
    label[held] = predicted[held]
    rewrite_batch(fresh, 6, data.assign(label=label))
    # batches 7, 8: the opposite of production's answers → Ψ̄ is large, the policy says retrain
    for b in (7, 8):
        data = read_data(fresh, b)
        rewrite_batch(fresh, b, data.assign(label=1 - model.predict(data[features])))

    result = ok(run_cli(fresh, "step", "--force-retrain", "--cooldown", "2"))
    assert "gate=rejected" in result.stdout and "production=v1" in result.stdout
    (challenger,) = reg.versions(trained_on=6)
    assert challenger.tags["cara.gate"] == "rejected"
    assert reg.production().version == production.version == 1
    run = the_batch_run(reg, 6)
    assert run.tags["cara.decision"] == "retrain" and run.tags["cara.gate"] == "rejected"
    assert run.tags["cara.model_version"] == "1"
    assert run.metrics["cumulative_cost"] == pytest.approx(2 * KAPPA)     # the attempt pays κ
    state = reg.runs.load_json(run.run_id, "policy_state.json")
    assert state["cooldown_left"] == 2                         # batches, counted in order
    assert state["last_retrain"] == {"batch": 6, "version": challenger.version, "gate": "rejected"}
    assert state["policy"]["state"]["n"] == 1                  # not reset: production did not change

    for b in (7, 8):
        result = ok(cara(fresh, "step", "--cooldown", "2"))
        run = the_batch_run(reg, b)
        assert run.tags["cara.decision"] == "keep"
        reason = run.tags["cara.reason"]
        assert "≥ τ_cum" in reason and f"cooling down ({8 - b} more batch" in reason     # the policy said retrain
        assert "cooling down" in result.stdout
        assert run.metrics["score"] >= doc.params["tau_cum"]
        assert len(reg.versions()) == 2 and not runs_of(reg, "retrain", b)
        assert reg.production().version == 1
    status = json.loads(ok(cara(fresh, "status", "--json")).stdout)
    assert status["cooldown_left"] == 0 and status["last_retrain"]["gate"] == "rejected"
    # the cooldown is over at batch 9: the policy's retrain is attempted again
    result = ok(cara(fresh, "step", "--dry-run"))
    assert result.stdout.startswith("[dry run] batch 9:") and " retrain (" in result.stdout


# ---------------------------------------------------------------------------------- 10. rollback


def test_rollback_moves_production_back_and_the_policy_restarts(ran_store, tmp_path, cara):
    root = copy_store(ran_store[0], tmp_path / "store")           # ≥ 2 retrains landed
    reg = registry(root)
    landed = [v for v in sorted(reg.versions(), key=lambda v: v.version) if v.tags["cara.gate"] != "rejected"]
    assert len(landed) >= 3
    current, previous = landed[-1], landed[-2]
    assert reg.production().version == current.version

    def add_batch(batch_id: int, like: int) -> None:              # a copy of an earlier batch's data
        bs = BatchStore(root)
        queries = pd.read_parquet(bs.info(like).path / "queries.parquet")
        bs.write(batch_id, read_data(root, like), queries=queries)

    # batch 14 repeats the data production was trained on: a keep, and ΣΨ̄ is over 1 batch
    add_batch(14, like=current.trained_on)
    ok(cara(root, "step"))
    run14 = the_batch_run(reg, 14)
    assert run14.tags["cara.decision"] == "keep"
    assert reg.runs.load_json(run14.run_id, "policy_state.json")["policy"]["state"]["n"] == 1

    missing = cara(root, "rollback", "--to", "999", "--reason", "bad")
    assert missing.returncode == 1 and "999" in missing.stderr
    assert reg.production().version == current.version

    result = ok(cara(root, "rollback", "--reason", "bad"))
    assert result.stdout.strip() == f"production of {NAME}: v{current.version} -> v{previous.version} (bad)"
    assert reg.production().version == previous.version
    reason = model_tags(root)["cara.rollback_reason"]
    assert reason == f"v{current.version} -> v{previous.version}: bad"
    assert reg.version(current.version).tags["cara.rolled_back"] == "bad"
    assert reg.last_batch() == 14                                    # a rollback commits no batch

    # batch 15 repeats the data the rolled-back-to version was trained on
    add_batch(15, like=previous.trained_on)
    ok(cara(root, "step"))
    run15 = the_batch_run(reg, 15)
    assert run15.tags["cara.decision"] == "keep"
    assert run15.tags["cara.model_version"] == str(previous.version)    # Ψ̄ of the rolled-back model
    assert "over 1 batch " in run15.tags["cara.reason"]        # restarted: not "over 2 batches"
    state = reg.runs.load_json(run15.run_id, "policy_state.json")
    assert state["policy"]["state"] == {"cum": pytest.approx(run15.metrics["psi_bar"]), "n": 1}
    assert state["model_version"] == previous.version
    assert len(reg.versions()) == len(landed)                        # no retrain happened


def test_rollback_default_skips_a_version_that_never_passed_a_gate(fresh, cara):
    reg = registry(fresh)
    # batch 6 repeats batch 5's data: the policy keeps; a forced retrain is killed once registered
    rewrite_batch(fresh, 6, read_data(fresh, INIT_BATCH))
    killed = run_cli(fresh, "step", "--force-retrain", **{KILL_ENV: "after-register"})
    assert killed.returncode in (-9, 137)
    assert "keep (" in ok(cara(fresh, "step")).stdout               # cron's rerun: the policy keeps
    (orphan,) = reg.versions(trained_on=6)
    assert "cara.gate" not in orphan.tags and reg.production().version == 1
    ok(run_cli(fresh, "step", "--force-retrain", "--no-gate"))      # 7 → v3 in production
    assert reg.production().version == 3 and orphan.version == 2
    result = ok(cara(fresh, "rollback", "--reason", "v3 is bad"))
    assert result.stdout.strip() == f"production of {NAME}: v3 -> v1 (v3 is bad)"


# ---------------------------------------------------------------------------------- 11. --help


COMMANDS = sorted(cli.commands)


def _options(command: str) -> list:
    import click

    return [p for p in cli.commands[command].params if isinstance(p, click.Option)]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command_exits_0_and_lists_its_options(command, cara, tmp_path):
    result = cara(tmp_path, command, "--help")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith(f"Usage: cara-mlflow {command} ")
    summary = " ".join(cli.commands[command].help.strip().split("\n")[0].split())
    assert summary in " ".join(result.stdout.split())
    for option in _options(command):
        assert any(opt in result.stdout for opt in option.opts), (command, option.opts)
        if option.help:
            assert " ".join(option.help.split()[:3]) in " ".join(result.stdout.split())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_a_help_text(command):
    assert [o.opts for o in _options(command) if not o.help] == []


# ---------------------------------------------------------------------------------- 12. dry run


def test_dry_run_prints_a_decision_and_writes_nothing(fresh, cara):
    before = snapshot(fresh)
    result = ok(run_cli(fresh, "step", "--dry-run"))
    line = result.stdout.strip()
    assert line.startswith("[dry run] batch 6: Ψ̄=") and (" keep (" in line or " retrain (" in line)
    assert snapshot(fresh) == before
    for args in (["step", "--dry-run", "--all"], ["step", "--dry-run", "--force-retrain"]):
        lines = ok(cara(fresh, *args)).stdout.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("[dry run] batch 6: Ψ̄=")
        assert snapshot(fresh) == before
    assert "retrain (forced by --force-retrain)" in lines[0]
    decision = json.loads(ok(cara(fresh, "step", "--dry-run", "--json")).stdout)
    assert decision["status"] == "dry-run" and decision["batch"] == 6 and decision["version"] == 1
    assert decision["decision"] in ("keep", "retrain")
    assert snapshot(fresh) == before
    # --psi-method reaches the step: on batches this small every method computes the exact Ψ̄
    psi = {m: json.loads(ok(cara(fresh, "step", "--dry-run", "--json", "--psi-method", m)).stdout)["psi_bar"]
           for m in ("exact", "sample")}
    assert psi["exact"] == decision["psi_bar"] and psi["sample"] == pytest.approx(psi["exact"], rel=1e-12)
    bad = cara(fresh, "step", "--dry-run", "--psi-method", "fast")
    assert bad.returncode == 1 and "'fast' is not one of" in bad.stderr
    assert snapshot(fresh) == before


# ---------------------------------------------------------------------------------- 13. init, tune errors


def test_init_twice_fails_clearly_and_changes_nothing(fresh):
    before = snapshot(fresh)
    line = one_line_error(run_cli(fresh, "init", "--batch", "6"))
    assert "already initialised" in line and "last batch 5" in line
    assert snapshot(fresh) == before


def test_tune_with_fewer_than_two_offline_batches_exits_1_and_changes_nothing(fresh):
    before = snapshot(fresh)
    result = run_cli(fresh, "tune", "--offline", "13:20", "--kappa", "5")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = error_lines(result)[-1]
    assert line.startswith("cara-mlflow: error: offline: 1 complete batch has an id in 13:20 in ")
    assert snapshot(fresh) == before


def _features_of(store: Path, version) -> list[str]:
    import tempfile

    reg = registry(store)
    with tempfile.TemporaryDirectory() as tmp:
        info, _ = reg.training_info(reg.version(version), tmp)
    return info["features"]


def test_a_schema_change_steps_through_a_column_added_then_one_removed(fresh):
    reg = registry(fresh)
    ok(run_cli(fresh, "step"))                                             # batch 6 on x1, x2
    with_x3(fresh, [0, 1, 2, 3, 4, *range(7, 14)])
    tuned = ok(run_cli(fresh, "tune", "--offline", "0:5", "--kappa", "5", "--model", "lr"))
    assert "features changed at re-tune (added x3)" in tuned.stdout + tuned.stderr
    status = json.loads(ok(run_cli(fresh, "status", "--json")).stdout)
    assert status["schema_change"] == {"added": ["x3"], "removed": []}
    assert status["next_state"].startswith("ready: the next step retrains on the policy's features")
    stepped = ok(run_cli(fresh, "step"))
    assert stepped.stdout.startswith("batch 7: retrain (features changed at re-tune (added x3): retrain on the new "
                                     "features, without a gate)") and "gate=off" in stepped.stdout
    assert stepped.stderr == ""
    (v7,) = reg.versions(trained_on=7)
    assert v7.tags["cara.trigger"] == "schema" and v7.tags["cara.gate"] == "off"
    assert reg.production().version == v7.version and _features_of(fresh, v7.version) == ["x1", "x2", "x3"]
    assert json.loads(ok(run_cli(fresh, "status", "--json")).stdout)["schema_change"] is None
    after = ok(run_cli(fresh, "step")).stdout                              # batch 8: the policy goes on, with Ψ̄
    assert after.startswith("batch 8: Ψ̄=")
    # no check of a schema promotion: reverting it would bring back the features the re-tune dropped
    assert the_batch_run(reg, 8).tags["cara.verify"].startswith("skipped: a schema promotion")

    ok(run_cli(fresh, "tune", "--offline", "0:5", "--kappa", "5", "--model", "lr", "--features", "x1,x3"))
    stepped = ok(run_cli(fresh, "step"))
    assert stepped.stdout.startswith("batch 9: retrain (features changed at re-tune (removed x2)")
    (v9,) = reg.versions(trained_on=9)
    assert v9.tags["cara.trigger"] == "schema" and _features_of(fresh, v9.version) == ["x1", "x3"]
    assert ok(run_cli(fresh, "step")).stdout.startswith("batch 10: Ψ̄=")
    rows = {r["batch"]: r for r in json.loads(ok(run_cli(fresh, "history", "--json")).stdout)}
    assert rows[7]["psi_bar"] is None and rows[7]["decision"] == "retrain" and rows[7]["policy_version"] == 2
    assert rows[9]["policy_version"] == 3 and rows[10]["psi_bar"] is not None
    moves = json.loads(ok(run_cli(fresh, "history", "--production", "--json")).stdout)
    assert [(m["by"], m["to"]) for m in moves if m["by"] == "schema retrain"] == [("schema retrain", v7.version),
                                                                                ("schema retrain", v9.version)]


def test_a_retune_on_another_window_counts_cara_p_from_that_window(fresh):
    """tune counts CARA-P's t from its window's first batch (0); after a re-tune on 2:8, batch 8
    is t = 6 (batches 2…7 before it), whatever the first window was."""
    ok(run_cli(fresh, "step", "--all"))                                    # 6 … 13 on the first policy
    ok(run_cli(fresh, "tune", "--offline", "2:8", "--kappa", "5", "--model", "lr", "--policy", "cara-p"))
    params = json.loads(ok(run_cli(fresh, "status", "--json")).stdout)["policy"]["params"]
    phi, offset = params["phi"], params["offset"]
    data = read_data(fresh, 13)
    BatchStore(fresh).write(14, data)                                      # one more batch, in order
    line = ok(run_cli(fresh, "step")).stdout
    t = 14 - 2                                                             # batches 2 … 13 before it
    assert f"({t}−{offset}) mod {phi} = {(t - offset) % phi}" in line, line
    assert json.loads(ok(run_cli(fresh, "status", "--json")).stdout)["position"] == t


def test_a_late_batch_after_a_schema_change_goes_after_the_schema_retrain(fresh, tmp_path):
    drop_batches_from(fresh, 12)                                           # pending 6..11; 7 comes late
    for b in (7, 11):
        (fresh / "batches" / str(b)).rename(tmp_path / str(b))
    ok(run_cli(fresh, "step", "--all"))                                    # 6, 8, 9, 10
    (tmp_path / "7").rename(fresh / "batches" / "7")
    with_x3(fresh, [0, 1, 2, 3, 4, 7])
    ok(run_cli(fresh, "tune", "--offline", "0:5", "--kappa", "5", "--model", "lr"))
    waiting = ok(run_cli(fresh, "step"))                                   # nothing in order to retrain on yet
    assert waiting.stdout.startswith("waiting: late batch 7 cannot be scored by production v")
    assert "features changed at re-tune (added x3)" in waiting.stdout
    (tmp_path / "11").rename(fresh / "batches" / "11")
    with_x3(fresh, [11])
    lines = ok(run_cli(fresh, "step", "--all")).stdout.splitlines()
    assert lines[0].startswith("batch 11: retrain (features changed at re-tune (added x3)")
    assert lines[1].startswith("batch 7 (late): Ψ̄=") and lines[2].startswith("nothing to do")
    status = json.loads(ok(run_cli(fresh, "status", "--json")).stdout)
    assert status["late_batches"] == [7] and status["last_batch"] == 11 and status["missing"] == []


@pytest.mark.parametrize("loss, expected", [
    ("os:getcwd", "loss posix:getcwd: failed on the batches from 0 on (TypeError: "),
    ("tests.reference:psi_slow", "loss tests.reference:psi_slow: failed on the batches from 0 on ("),
])
def test_a_user_loss_that_fails_is_one_line_naming_it_and_changes_nothing(fresh, loss, expected):
    before = snapshot(fresh)
    line = one_line_error(run_cli(fresh, "tune", "--offline", "0:5", "--kappa", "5", "--model", "lr", "--loss", loss,
                                  PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    assert expected in line and "expected a vectorised f(y_true, y_pred)" in line
    assert snapshot(fresh) == before


def test_tune_input_error_is_one_line(fresh):
    line = one_line_error(run_cli(fresh, "tune", "--offline", "14:16", "--kappa", "5"))
    assert "offline: 0 complete batches have an id in 14:16" in line


@pytest.mark.parametrize("args, expected", [
    (["--offline", "0:5", "--kappa", "0"], "Invalid value for '--kappa'"),
    (["--offline", "0:5", "--kappa", "-1"], "Invalid value for '--kappa'"),
    (["--offline", "0:5", "--kappa", "nan"], "Invalid value for '--kappa'"),
    (["--offline", "4:5", "--kappa", "5"], "offline: 1 complete batch has an id in 4:5"),
    (["--offline", "0:5"], "kappa: give --kappa K, or the money it stands for: --retrain-cost AMOUNT|measured"),
    (["--offline", "0:5", "--kappa", "5", "--error-cost", "2"], "error-cost: κ comes from --kappa or from money"),
    (["--offline", "0:5", "--error-cost", "2"], "--retrain-cost: κ from money needs the cost of one retrain"),
])
def test_tune_usage_errors_exit_1_and_change_nothing(fresh, cara, args, expected):
    before = snapshot(fresh)
    result = cara(fresh, "tune", *args)
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(("cara-mlflow tune: error:", "cara-mlflow: error:")) and expected in line
    assert snapshot(fresh) == before


def test_tune_library_refuses_bad_kappa_and_window_before_writing(tmp_path):
    root = tmp_path / "store"
    write_stream(make_stream("covcon-d", n_batches=3, batch_size=40, seed=0), root)
    reg = registry(root)
    for kappa in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="^kappa: "):
            lifecycle.tune(BatchStore(root), reg, offline=(0, 3), kappa=kappa)
    with pytest.raises(ValueError, match=r"^offline: 1 complete batch has an id in 2:5 "):
        lifecycle.tune(BatchStore(root), reg, offline=(2, 5), kappa=1.0)
    assert client(root).search_registered_models() == []
