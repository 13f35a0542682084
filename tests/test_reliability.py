"""Reliability and security of the cron path: kill -9 at every phase, eight steps at once, hostile
input, secrets, file modes, and a short soak — real processes, real MLflow (sqlite), no mocks.

The store, helpers and conventions are those of ``tests/helpers.py`` (a CovCon-D store tuned on
0:5 with CARA-CT, κ=5, lr, initialised on batch 5; copied per test).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from cara_mlflow import lifecycle
from cara_mlflow.cli import cli
from cara_mlflow.policy_doc import check_policy_document, parse_policy_document
from cara_mlflow.store import SUCCESS_MARKER, BatchStore, BatchStoreError

from .crash_harness import KILL_ENV
from .helpers import (
    INIT_BATCH,
    NAME,
    TIMEOUT,
    all_runs,
    cli_env,
    client,
    copy_store,
    drop_batches_from,
    load_production,
    ok,
    one_line_error,
    read_data,
    registry,
    rewrite_batch,
    run_cli,
    runs_of,
    snapshot,
    timeline_points,
    with_x3,
)

pytestmark = pytest.mark.usefixtures("mlflow_globals_untouched")

# ---------------------------------------------------------------------------------- 1. kill -9 matrix


def _batch_invariants(store: Path, batches: list[int], tmp_path: Path) -> dict:
    """Every batch processed exactly once, ≤ 1 version per batch, one FINISHED batch run each,
    nothing left RUNNING, one timeline point per batch, production loads. Returns a summary."""
    reg = registry(store)
    assert reg.last_batch() == batches[-1]
    for b in batches:
        runs = runs_of(reg, "batch", b)
        assert [r.status for r in runs].count("FINISHED") == 1, (b, [r.status for r in runs])
        assert {r.status for r in runs} <= {"FINISHED", "KILLED", "FAILED"}, b
        assert len(reg.versions(trained_on=b)) <= 1, b
        assert len(runs_of(reg, "retrain", b, "FINISHED")) <= 1, b
    steps = [s for s, _ in timeline_points(reg)]
    assert steps == [INIT_BATCH, *batches]
    model = load_production(store, tmp_path / "production")
    assert type(model).__name__ == "Pipeline"               # the default trainer's DataFrame model
    assert model.predict(pd.DataFrame({"x2": [0.0, 1.0], "x1": [0.0, 1.0]})).shape == (2,)
    return {"versions": len(reg.versions()), "production": reg.production().version,
            "batch_runs": {b: sorted(r.status for r in runs_of(reg, "batch", b)) for b in batches}}


@pytest.mark.parametrize("phase", lifecycle.PHASES)
def test_kill_9_at_each_phase_then_rerun_processes_every_batch_exactly_once(fresh, tmp_path, phase):
    drop_batches_from(fresh, 9)                          # pending 6, 7, 8
    killed = run_cli(fresh, "step", "--force-retrain", **{KILL_ENV: phase})
    assert killed.returncode in (-9, 137), (phase, killed.returncode, killed.stderr)
    reg = registry(fresh)
    assert reg.last_batch() == (6 if phase == "after-commit" else INIT_BATCH)
    assert len(reg.versions(trained_on=6)) <= 1
    attempts = runs_of(reg, "batch", 6)
    before_rerun = {r.run_id: r.status for r in attempts}

    rerun = ok(run_cli(fresh, "step", "--all"))
    assert "Traceback" not in rerun.stderr
    assert rerun.stdout.startswith("batch 7:" if phase == "after-commit" else "batch 6:")
    if phase == "after-alias":
        assert reg.production().trained_on == 6 and "resuming a promotion" in rerun.stdout
    summary = _batch_invariants(fresh, [6, 7, 8], tmp_path)
    for run_id, status in before_rerun.items():           # the killed attempt's run is closed
        after = reg.runs.get(run_id).status
        assert after in ("FINISHED", "KILLED", "FAILED")
        if phase != "after-commit" and status == "RUNNING":
            assert after in ("KILLED", "FAILED"), (phase, run_id)
    # versions = initial + one per landed retrain; the forced one on batch 6 landed exactly once
    assert len(reg.versions(trained_on=6)) == 1
    assert summary["versions"] == 1 + sum(len(reg.versions(trained_on=b)) for b in (6, 7, 8))
    # a retrain child whose step was killed stops with it: no retrain run left RUNNING
    assert not [r for r in runs_of(reg, "retrain", 6) if r.status == "RUNNING"]
    ok(run_cli(fresh, "step", "--all"))                    # and a further step has nothing to redo
    assert _batch_invariants(fresh, [6, 7, 8], tmp_path) == summary


@pytest.mark.parametrize("phase", ["after-read", "after-psi", "after-batch-run", "after-commit"])
def test_kill_9_while_a_late_batch_is_processed_then_rerun_processes_it_exactly_once(fresh, tmp_path, phase):
    drop_batches_from(fresh, 9)                          # pending 6, 7, 8; 7 will come late
    aside = tmp_path / "7"
    (fresh / "batches" / "7").rename(aside)
    ok(run_cli(fresh, "step", "--all"))                  # 6 and 8; 7 missing
    aside.rename(fresh / "batches" / "7")
    killed = run_cli(fresh, "step", **{KILL_ENV: phase})
    assert killed.returncode in (-9, 137), (phase, killed.returncode, killed.stderr)
    reg = registry(fresh)
    assert reg.last_batch() == 8                         # a late batch never moves the commit point

    rerun = ok(run_cli(fresh, "step", "--all"))
    assert rerun.stderr == ""
    expected = "nothing to do" if phase == "after-commit" else "batch 7 (late): "
    assert rerun.stdout.startswith(expected), rerun.stdout
    assert reg.last_batch() == 8
    runs = runs_of(reg, "batch", 7)
    assert [r.status for r in runs].count("FINISHED") == 1 and {r.status for r in runs} <= {"FINISHED", "KILLED"}
    (done,) = [r for r in runs if r.status == "FINISHED"]
    assert done.tags["cara.late"] == "true" and not reg.versions(trained_on=7)
    assert sorted(s for s, _ in timeline_points(reg)) == [INIT_BATCH, 6, 7, 8]
    assert [s for s, _ in timeline_points(reg)].count(7) == 1
    status = json.loads(ok(run_cli(fresh, "status", "--json")).stdout)
    assert status["late_batches"] == [7] and status["missing"] == []
    assert ok(run_cli(fresh, "step")).stdout.startswith("nothing to do")


def test_a_failure_after_a_late_batch_committed_keeps_its_run_and_state(fresh, tmp_path):
    """A bug after the commit (here at after-commit) must not mark the committed run FAILED: the
    state it holds is the committed one, so the late batch is neither lost nor processed twice."""
    from .crash_harness import BUG_ENV

    drop_batches_from(fresh, 9)
    (fresh / "batches" / "7").rename(tmp_path / "7")
    ok(run_cli(fresh, "step", "--all"))                  # 6 and 8
    (tmp_path / "7").rename(fresh / "batches" / "7")
    failed = run_cli(fresh, "step", **{BUG_ENV: "after-commit"})
    assert failed.returncode == 1 and "Traceback" in failed.stderr
    reg = registry(fresh)
    assert [r.status for r in runs_of(reg, "batch", 7)] == ["FINISHED"]
    assert ok(run_cli(fresh, "step")).stdout.startswith("nothing to do")
    status = json.loads(ok(run_cli(fresh, "status", "--json")).stdout)
    assert status["late_batches"] == [7] and status["missing"] == []


def test_a_kill_between_the_hint_and_the_commit_point_is_finished_not_redone(fresh):
    """``cara.last_run`` names batch 6 (its state stored), ``cara.last_batch`` still says 5: the
    next step finishes that commit and goes on with 7; batch 6 is never processed twice."""
    drop_batches_from(fresh, 8)
    ok(run_cli(fresh, "step"))
    reg = registry(fresh)
    client(fresh).set_registered_model_tag(NAME, "cara.last_batch", str(INIT_BATCH))   # the write a kill cut
    dry = ok(run_cli(fresh, "step", "--dry-run"))
    assert dry.stdout.startswith("[dry run] batch 7:") and registry(fresh).last_batch() == INIT_BATCH
    assert ok(run_cli(fresh, "step")).stdout.startswith("batch 7:")
    assert [r.status for r in runs_of(reg, "batch", 6)] == ["FINISHED"]
    assert registry(fresh).last_batch() == 7


@pytest.mark.parametrize("phase", ["during-retrain", "after-register", "after-alias"])
def test_kill_9_during_a_schema_retrain_then_rerun_retrains_exactly_once(fresh, tmp_path, phase):
    drop_batches_from(fresh, 9)                          # pending 6, 7, 8
    with_x3(fresh, [0, 1, 2, 3, 4, 6, 7, 8])
    ok(run_cli(fresh, "tune", "--offline", "0:5", "--kappa", "5", "--model", "lr"))      # x1, x2, x3
    killed = run_cli(fresh, "step", **{KILL_ENV: phase})
    assert killed.returncode in (-9, 137), (phase, killed.returncode, killed.stderr)
    rerun = ok(run_cli(fresh, "step", "--all"))
    assert rerun.stderr == "" and rerun.stdout.startswith("batch 6: retrain (")
    assert "features changed at re-tune (added x3)" in rerun.stdout.splitlines()[0]
    reg = registry(fresh)
    (v6,) = reg.versions(trained_on=6)
    assert v6.tags["cara.trigger"] == "schema" and v6.tags["cara.gate"] == "off"
    assert reg.production().version >= v6.version
    assert len(runs_of(reg, "retrain", 6, "FINISHED")) == 1
    for b in (6, 7, 8):
        assert [r.status for r in runs_of(reg, "batch", b)].count("FINISHED") == 1
    assert reg.last_batch() == 8
    model = load_production(fresh, tmp_path / "production")
    assert model.predict(pd.DataFrame({"x1": [0.0], "x2": [1.0], "x3": [-1.0]})).shape == (1,)


# ---------------------------------------------------------------------------------- 2. eight at once


@pytest.fixture(scope="module")
def long_store(tmp_path_factory) -> Path:
    """CovCon-D, 26 batches of 120: tuned on 0:5, initialised on 5, so 20 batches (6..25) pending."""
    root = tmp_path_factory.mktemp("long") / "store"
    made = CliRunner().invoke(cli, ["make-stream", "covcon-d", "--out", str(root), "--n-batches", "26",
                                    "--batch-size", "120"])
    assert made.exit_code == 0, made.output
    ok(run_cli(root, "tune", "--offline", "0:5", "--kappa", "8", "--policy", "cara-t", "--model", "lr"))
    ok(run_cli(root, "init", "--batch", "5"))
    return root


def test_eight_concurrent_step_all_over_twenty_batches(long_store, tmp_path):
    store = copy_store(long_store, tmp_path / "store")
    env = cli_env(store)
    procs = [subprocess.Popen([sys.executable, "-m", "cara_mlflow.cli", "step", "--all", "--lock-timeout", "600"],
                              env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    outputs = [p.communicate(timeout=900) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode in (0, 75), (proc.returncode, out, err)
        assert "Traceback" not in err, err
    processed = sorted(int(line.split(":")[0].split()[1]) for out, _ in outputs for line in out.splitlines()
                       if line.startswith("batch "))
    assert processed == list(range(6, 26))                 # each batch once, over all 8 processes
    summary = _batch_invariants(store, list(range(6, 26)), tmp_path)
    reg = registry(store)
    retrains = [b for b in range(6, 26) if runs_of(reg, "batch", b, "FINISHED")[0].tags["cara.decision"]
                == "retrain"]
    assert summary["versions"] == len(retrains) + 1        # versions = retrains + 1


# ---------------------------------------------------------------------------------- 3. hostile input


def _queries(store: Path, batch_id: int) -> pd.DataFrame:
    return pd.read_parquet(BatchStore(store).info(batch_id).path / "queries.parquet")


def _write_raw(store: Path, batch_id: int, files: dict[str, bytes | pd.DataFrame], *, success=True):
    """Replace a batch directory by exactly these files (DataFrames as parquet)."""
    import shutil

    path = BatchStore(store).info(batch_id).path
    shutil.rmtree(path)
    path.mkdir()
    for name, content in files.items():
        if isinstance(content, pd.DataFrame):
            content.to_parquet(path / name)
        else:
            (path / name).write_bytes(content)
    if success:
        (path / SUCCESS_MARKER).touch()
    return path


def _hostile_batch(kind: str, store: Path, tmp_path: Path) -> str:
    """Make batch 6 hostile in one way; return a fragment the one-line error must contain."""
    data, queries = read_data(store, 6), _queries(store, 6)
    if kind == "missing feature column":
        _write_raw(store, 6, {"data.parquet": data.drop(columns=["x2"]), "queries.parquet": queries})
        return "'x2'"
    if kind == "missing target column":
        _write_raw(store, 6, {"data.parquet": data.drop(columns=["label"]), "queries.parquet": queries})
        return "'label'"
    if kind == "feature of the wrong dtype":
        data["x1"] = data["x1"].map(lambda v: f"{v:.3f}")
        _write_raw(store, 6, {"data.parquet": data, "queries.parquet": queries})
        return "'x1'"
    if kind == "strings in a numeric csv column":
        data = data.astype({"x1": object})
        data.loc[2, "x1"] = "abc"
        _write_raw(store, 6, {"data.csv": data.to_csv(index=False).encode(), "queries.parquet": queries})
        return "'x1'"
    if kind == "NaN in a feature":
        data.loc[[0, 5], "x1"] = np.nan
        _write_raw(store, 6, {"data.parquet": data, "queries.parquet": queries})
        return "2 NaN/inf"
    if kind == "inf in a feature":
        data.loc[3, "x2"] = np.inf
        _write_raw(store, 6, {"data.parquet": data, "queries.parquet": queries})
        return "'x2'"
    if kind == "missing target value":
        data["label"] = data["label"].astype("float64")
        data.loc[4, "label"] = np.nan
        _write_raw(store, 6, {"data.parquet": data, "queries.parquet": queries})
        return "'label'"
    if kind == "empty batch":
        _write_raw(store, 6, {"data.parquet": data.iloc[:0], "queries.parquet": queries})
        return "no rows"
    if kind == "one class only (a retrain)":
        data["label"] = 1
        _write_raw(store, 6, {"data.parquet": data, "queries.parquet": queries})
        return "one class"
    if kind == "queries file with other columns":
        _write_raw(store, 6, {"data.parquet": data, "queries.parquet": queries.rename(columns={"x1": "z"})})
        return "queries.parquet"
    if kind == "truncated parquet":
        raw = (BatchStore(store).info(6).path / "data.parquet").read_bytes()
        _write_raw(store, 6, {"data.parquet": raw[: len(raw) // 2], "queries.parquet": queries})
        return "cannot read data.parquet"
    if kind == "two data files":
        _write_raw(store, 6, {"data.parquet": data, "data.csv": data.to_csv(index=False).encode(),
                              "queries.parquet": queries})
        return "both"
    if kind == "batch directory linked out of the store":
        outside = tmp_path / "outside"
        outside.mkdir()
        data.to_parquet(outside / "data.parquet")
        (outside / SUCCESS_MARKER).touch()
        import shutil

        path = BatchStore(store).info(6).path
        shutil.rmtree(path)
        path.symlink_to(outside, target_is_directory=True)
        return "outside the store"
    if kind == "data file linked out of the store":
        outside = tmp_path / "elsewhere.parquet"
        data.to_parquet(outside)
        path = _write_raw(store, 6, {"queries.parquet": queries})
        (path / "data.parquet").symlink_to(outside)
        return "outside the batch directory"
    raise AssertionError(kind)


HOSTILE_BATCHES = ["missing feature column", "missing target column", "feature of the wrong dtype",
                   "strings in a numeric csv column", "NaN in a feature", "inf in a feature", "missing target value",
                   "empty batch", "one class only (a retrain)", "queries file with other columns",
                   "truncated parquet", "two data files", "batch directory linked out of the store",
                   "data file linked out of the store"]


@pytest.mark.parametrize("kind", HOSTILE_BATCHES)
def test_hostile_batch_is_one_line_changes_nothing_and_is_not_committed(fresh, tmp_path, cara, kind):
    fragment = _hostile_batch(kind, fresh, tmp_path)
    before = snapshot(fresh)
    args = ["step", "--force-retrain"] if "one class" in kind else ["step"]
    result = cara(fresh, *args)
    assert result.returncode == 1, (kind, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert fragment in lines[0], lines[0]
    assert "batch 6" in lines[0], lines[0]
    assert snapshot(fresh) == before
    assert registry(fresh).last_batch() == INIT_BATCH


def _policy_file(store: Path) -> Path:
    raw = client(store)
    mv = raw.get_model_version_by_alias(f"{NAME}.policy", "active")
    location = raw.get_logged_model(mv.source.removeprefix("models:/")).artifact_location
    return Path(location.removeprefix("file://")) / "policy.json"


@pytest.mark.parametrize("corruption, fragment", [
    (lambda doc: "{ this is not json", "not valid JSON"),
    (lambda doc: json.dumps({**doc, "surprise": 1}), "unknown field 'surprise'"),
    (lambda doc: json.dumps({**doc, "kappa": "five"}), "'kappa'"),
    (lambda doc: json.dumps({**doc, "kappa": -1}), "'kappa'"),
    (lambda doc: json.dumps({**doc, "params": {"tau_cum": "high"}}), "'params'"),
    (lambda doc: json.dumps({**doc, "policy": "magic"}), "'policy'"),
    (lambda doc: json.dumps({k: v for k, v in doc.items() if k != "features"}), "missing field 'features'"),
    (lambda doc: json.dumps([doc]), "JSON object"),
])
def test_corrupt_policy_document_is_one_line_and_changes_nothing(fresh, cara, corruption, fragment):
    path = _policy_file(fresh)          # shared with the module's base store: restored below
    original = path.read_text()
    path.write_text(corruption(json.loads(original)))
    try:
        before = snapshot(fresh)
        result = cara(fresh, "step")
    finally:
        path.write_text(original)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0] and "tune" in lines[0], result.stderr
    assert snapshot(fresh) == before


@pytest.mark.parametrize("command", ["step", "status", "history", "skip"])
def test_unknown_registered_model_is_one_line_that_says_check_name(fresh, command):
    args = [command, "--batch", "6", "--reason", "x"] if command == "skip" else [command]
    line = one_line_error(run_cli(fresh, *args, CARA_NAME="no-such-model"))
    assert "no-such-model" in line and "check --name" in line


@pytest.mark.parametrize("args, fragment", [
    (["tune", "--kappa", "0"], "kappa"), (["tune", "--kappa", "nan"], "kappa"),
    (["tune", "--kappa", "-3"], "kappa"), (["tune", "--kappa", "5", "--policy", "genius"], "policy"),
    (["skip", "--batch", "../x", "--reason", "r"], "batch"),
    (["skip", "--batch", "/etc/passwd", "--reason", "r"], "batch"),
])
def test_bad_arguments_exit_1_with_one_line(fresh, args, fragment):
    before = snapshot(fresh)
    line = one_line_error(run_cli(fresh, *args))
    assert fragment in line
    assert snapshot(fresh) == before


def test_batch_directory_without_success_is_waited_for_not_committed(fresh, cara):
    (BatchStore(fresh).info(6).path / SUCCESS_MARKER).unlink()
    before = snapshot(fresh)
    result = ok(cara(fresh, "step"))
    assert "waiting for batch 6" in result.stdout
    assert snapshot(fresh) == before


def test_directory_that_is_not_a_batch_id_is_ignored_with_a_warning(fresh, cara):
    (BatchStore(fresh).batches_dir / "not-a-batch").mkdir()
    result = ok(run_cli(fresh, "step"))                    # a process of its own: its warnings shown once
    assert result.stdout.startswith("batch 6:")
    warned = [line for line in result.stderr.splitlines() if "not-a-batch" in line]
    assert warned and all(line.startswith("cara-mlflow: warning: ") for line in result.stderr.splitlines())


def test_extra_columns_are_ignored_because_features_are_fixed_at_tune(fresh, cara):
    data = read_data(fresh, 6)
    data["leaky_extra"] = "text"
    rewrite_batch(fresh, 6, data)
    assert ok(cara(fresh, "step")).stdout.startswith("batch 6:")


# ---------------------------------------------------------------------------------- 4. fuzzing


column_values = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=6),
    st.lists(st.integers(-5, 5), min_size=0, max_size=6),
    st.lists(st.text(max_size=3), min_size=0, max_size=6),
    st.lists(st.booleans(), min_size=0, max_size=6),
)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(columns=st.dictionaries(st.sampled_from(["x1", "x2", "label", "other"]), column_values, max_size=4),
       fmt=st.sampled_from(["parquet", "csv"]))
def test_fuzzed_batches_either_read_cleanly_or_raise_batch_store_error(columns, fmt):
    n = min((len(v) for v in columns.values()), default=0)
    frame = pd.DataFrame({k: v[:n] for k, v in columns.items()})
    with tempfile.TemporaryDirectory() as tmp:
        store = BatchStore(tmp)
        try:
            store.write(0, frame, fmt=fmt)
        except (BatchStoreError, ValueError):
            return                                       # refused at write time: fine
        try:
            batch = store.read(0, target="label", features=["x1", "x2"])
        except BatchStoreError as exc:
            assert "\n" not in str(exc) and "batch 0" in str(exc)
            return
        # one column per numeric feature, one per category of a text one (the kernel space's one-hot)
        assert batch.X.shape[0] == n and batch.X.shape[1] >= 2 and np.isfinite(batch.X).all()
        assert batch.y.shape == (n,)


json_values = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                        max_size=3),
                           max_leaves=8)
VALID_DOC = {"format": 1, "name": "m", "policy": "cara-t", "params": {"tau": 2.0}, "kappa": 5.0,
             "psi": {"gamma": 1.5, "loss": "zero_one"}, "target": "label", "features": ["x1", "x2"],
             "trainer": {"model": "lr"}}


@settings(max_examples=150, deadline=None, derandomize=True)
@given(key=st.sampled_from(sorted(VALID_DOC) + ["extra"]), value=json_values)
def test_fuzzed_policy_documents_are_accepted_only_when_valid(key, value):
    doc = {**VALID_DOC, key: value}
    try:
        checked = parse_policy_document(json.dumps(doc))
    except ValueError as exc:
        assert "\n" not in str(exc) and "tune" in str(exc)
        return
    assert checked == doc and key != "extra"


@settings(max_examples=80, deadline=None, derandomize=True)
@given(text=st.binary(max_size=40))
def test_fuzzed_policy_bytes_never_escape_as_other_errors(text):
    try:
        parse_policy_document(text)
    except ValueError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize("key", sorted(VALID_DOC))
@pytest.mark.parametrize("value", [[], {}, [1, 2], {"a": [1]}, None, True, "x", -1, 1e308])
def test_every_field_with_every_json_type_is_accepted_or_refused_in_one_line(key, value):
    try:
        parse_policy_document(json.dumps({**VALID_DOC, key: value}))
    except ValueError as exc:
        assert "\n" not in str(exc) and "tune" in str(exc)


def test_valid_policy_document_round_trips():
    assert check_policy_document(dict(VALID_DOC)) == VALID_DOC


# ---------------------------------------------------------------------------------- 5. security


# The username is not a secret: MLflow records it as the runs' user on purpose (who ran what).
SECRETS = {"MLFLOW_TRACKING_PASSWORD": "pw-Secret-7d1f", "MLFLOW_TRACKING_TOKEN": "tok-Secret-c0ffee"}
USER = {"MLFLOW_TRACKING_USERNAME": "user-Zq81"}


def _text_files(root: Path):
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 5_000_000:
            yield path


def test_credentials_never_reach_logs_params_tags_or_files(fresh, base_store, tmp_path):
    drop_batches_from(fresh, 8)
    env = {**SECRETS, **USER}
    outputs = [ok(run_cli(fresh, "step", "--all", "--force-retrain", **env)),
               ok(run_cli(fresh, "status", "--json", **env)), ok(run_cli(fresh, "history", "--json", **env))]
    printed = "".join(r.stdout + r.stderr for r in outputs)
    reg = registry(fresh)
    logged = json.dumps([(dict(r.params), dict(r.tags)) for r in all_runs(reg)])
    logged += json.dumps([(v.tags, v.source) for v in reg.versions()])
    for secret in [*SECRETS.values(), *USER.values()]:
        assert secret not in printed
        assert secret not in logged
    files = [*_text_files(fresh.parent), *_text_files(base_store / "mlartifacts")]  # db, store, artifacts
    assert any(p.name == "mlflow.db" for p in files)
    for path in files:
        content = path.read_bytes()
        for secret in SECRETS.values():
            assert secret.encode() not in content, path


def test_files_written_into_the_store_follow_the_umask_and_are_never_world_writable(tmp_path):
    root = tmp_path / "store"
    env = {**cli_env(root)}
    script = ("import os, sys; os.umask(0o027); from cara_mlflow.cli import main; "
              "main(['make-stream', 'gauss-d', '--out', sys.argv[1], '--n-batches', '3', '--batch-size', '20'])")
    done = subprocess.run([sys.executable, "-c", script, str(root)], env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files
    for path in files:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o002 == 0, (path, oct(mode))          # never world-writable
        assert mode & 0o027 == 0, (path, oct(mode))          # the umask applies
    assert any(stat.S_IMODE(p.stat().st_mode) & 0o040 for p in files if p.suffix == ".parquet")  # group-readable


def test_a_model_uri_tag_pointing_elsewhere_is_never_registered(fresh, cara):
    """Models come from the registry's own runs only: a retrain run whose cara.model_uri names a
    model it did not log (here production's, logged by another run) is refused, nothing registered."""
    reg = registry(fresh)
    foreign = reg.version(1).source                                     # models:/m-... of the init run
    run_id = reg.runs.start("retrain", run_name="retrain-6", tags={"cara.batch": 6})
    reg.runs.set_tags(run_id, {"cara.model_uri": foreign})
    reg.runs.end(run_id, "FINISHED")
    before = snapshot(fresh)
    result = cara(fresh, "step", "--force-retrain")
    assert result.returncode == 1
    (line,) = [x for x in result.stderr.splitlines() if x.strip()]
    assert "not a model logged by this run" in line and run_id in line
    assert snapshot(fresh)["versions"] == before["versions"]
    assert reg.last_batch() == INIT_BATCH


def test_stray_files_in_a_batch_are_never_loaded(fresh, cara):
    path = BatchStore(fresh).info(6).path
    (path / "model.pkl").write_bytes(b"\x80\x04not a pickle we would ever open")
    (path / "policy.json").write_text('{"policy": "nr"}')
    result = ok(cara(fresh, "step"))
    assert result.stdout.startswith("batch 6:")
    assert lifecycle.active_policy(registry(fresh)).policy == "cara-ct"


# ---------------------------------------------------------------------------------- 6. soak (short)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_short_soak_in_one_process_leaks_no_fds_or_temp_dirs(long_store, tmp_path, monkeypatch):
    """20 steps in one process (the library, as `step --all` runs them): fds and temp dirs stay put."""
    from cara_mlflow.tracking import Registry, default_tracking_uri

    store = copy_store(long_store, tmp_path / "store")
    tmp_root = tmp_path / "tmp"
    tmp_root.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_root))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_root))
    reg = Registry(default_tracking_uri(store), NAME)
    bs = BatchStore(store)
    lifecycle.step(bs, reg)                               # warm-up: imports, connections, caches
    fds, leftovers = _open_fds(), sorted(p.name for p in tmp_root.iterdir())
    for _ in range(19):
        lifecycle.step(bs, reg)                           # takes and releases the store lock each time
    assert reg.last_batch() == 25
    assert _open_fds() <= fds + 2
    assert sorted(p.name for p in tmp_root.iterdir()) == leftovers
