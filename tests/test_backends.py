"""Retraining through MLflow Projects backends (``--backend``, ``--backend-config``,
``--retrain-timeout``): the options and their refusals, the policy's stored backend, and the
detached path — submitted once per batch, waited for, found again after a crash or a timeout,
failing without touching production — run for real here through the local backend detached
(``{"detach": true}``) and through an installed backend plugin. No mocks: real ``mlflow run``
processes, the store's own sqlite.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import textwrap
import time
from pathlib import Path

import pytest

from cara_mlflow.backends import Backend, parse_backend_config
from cara_mlflow.errors import InputError, SetupError
from cara_mlflow.lifecycle import StepOptions
from cara_mlflow.lifecycle.training import RETRAIN_DIR
from cara_mlflow.policy_doc import PolicyDocument
from cara_mlflow.tracking.projects import TAG_BACKEND, TAG_LOG, TAG_PROCESS, check_backend

from .crash_harness import KILL_ENV
from .helpers import INIT_BATCH, ok, one_line_error, registry, run_cli, runs_of, snapshot

pytestmark = pytest.mark.usefixtures("mlflow_globals_untouched")

DETACHED = ("--backend", "local", "--backend-config", '{"detach": true}')
BATCH = INIT_BATCH + 1


# ------------------------------------------------------------------------------ options, refusals


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ("/nonexistent/spec.json", "no file '/nonexistent/spec.json'"),
])
def test_a_bad_backend_config_is_one_line_naming_the_option(text, message):
    with pytest.raises(InputError, match="^--backend-config: ") as caught:
        parse_backend_config(text)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_backend_config_file_is_read_and_detach_is_for_local_only(tmp_path):
    spec = tmp_path / "cluster.json"
    spec.write_text('{"new_cluster": {"num_workers": 2}}')
    assert Backend.parse("databricks", str(spec)).config == {"new_cluster": {"num_workers": 2}}
    with pytest.raises(InputError, match="for the local backend only"):
        Backend.parse("databricks", '{"detach": true}')
    with pytest.raises(InputError, match="true or false"):
        Backend.parse("local", '{"detach": "yes"}')
    assert Backend.parse(None, None) == Backend() and not Backend().detached


def test_unknown_backends_and_incomplete_kubernetes_configs_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"no MLflow Projects backend 'nosuch' here \(known: local, databricks, "
                                         r"kubernetes"):
        check_backend(Backend("nosuch"))
    with pytest.raises(InputError, match='needs "kube-job-template-path"'):
        check_backend(Backend("kubernetes", {"repository-uri": "registry/cara"}))
    with pytest.raises(InputError, match="no Kubernetes job template"):
        check_backend(Backend("kubernetes", {"repository-uri": "r", "kube-job-template-path": str(tmp_path / "x")}))
    examples = Path(__file__).resolve().parents[1] / "examples" / "backends" / "kubernetes"
    backend = Backend.parse("kubernetes", str(examples / "kubernetes_config.json"))
    # the template's path is taken relative to the configuration file, stored absolute
    assert backend.config["kube-job-template-path"] == str(examples / "kubernetes_job_template.yaml")
    if all(importlib.util.find_spec(m) for m in ("kubernetes", "docker")):
        assert check_backend(backend).detached
    else:                                   # the example's configuration passes; the packages are missing
        with pytest.raises(SetupError, match=r"needs the Python packages kubernetes and docker .*"
                                             r"pip install 'cara-mlflow\[kubernetes\]'"):
            check_backend(backend)
    spec = json.loads((examples.parent / "databricks" / "cluster_spec.json").read_text())
    assert check_backend(Backend("databricks", spec)).detached


def test_the_policy_stores_a_backend_and_refuses_a_malformed_one():
    base = {"format": 1, "name": "m", "policy": "cara-t", "params": {"tau": 2.0}, "kappa": 5.0,
            "psi": {"gamma": 1.5, "loss": "zero_one"}, "target": "label", "features": ["x"], "trainer": {"model": "lr"}}
    doc = PolicyDocument.from_dict({**base, "backend": {"name": "kubernetes", "config": {"repository-uri": "r"}}})
    assert doc.backend == Backend("kubernetes", {"repository-uri": "r"})
    assert PolicyDocument.from_dict(doc.to_dict()) == doc
    assert "backend" not in PolicyDocument.from_dict(base).to_dict()       # the default writes nothing new
    for bad in ({"name": "kubernetes"}, {"name": "", "config": {}}, {"name": "local", "config": {"detach": 1}}):
        with pytest.raises(InputError, match="field 'backend'"):
            PolicyDocument.from_dict({**base, "backend": bad})


def test_step_options_override_the_policys_backend():
    stored = Backend("kubernetes", {"repository-uri": "r"})
    assert StepOptions().retrain_backend(stored) == stored
    assert StepOptions(retrain_timeout=5).retrain_backend(stored).timeout == 5
    assert StepOptions(backend="local").retrain_backend(stored) == Backend()       # a new name: no old config
    assert StepOptions(backend_config='{"detach": true}').retrain_backend(Backend()).detached
    with pytest.raises(InputError, match="--retrain-timeout"):
        StepOptions(retrain_timeout=-1)
    with pytest.raises(InputError, match="--backend: no MLflow Projects backend"):
        StepOptions(backend="nosuch")


def test_bad_backend_options_change_nothing(fresh, cara):
    before = snapshot(fresh)
    line = one_line_error(cara(fresh, "step", "--backend", "nosuch"))
    assert line.startswith("cara-mlflow: error: --backend: no MLflow Projects backend 'nosuch'")
    line = one_line_error(cara(fresh, "tune", "--offline", "0:5", "--kappa", "5", "--backend", "local",
                               "--backend-config", '{"detach": 2}'))
    assert "--backend-config" in line
    assert one_line_error(cara(fresh, "step", "--retrain-timeout", "-3")).count("retrain-timeout") == 1
    line = one_line_error(cara(fresh, "tune", "--offline", "0:5", "--kappa", "5", "--backend-config", "{}"))
    assert "--backend-config: give the backend it configures too (--backend NAME)" in line
    assert snapshot(fresh) == before


# ------------------------------------------------------------------------- projects the tests run


def _project(folder: Path, before: str) -> str:
    """A training project whose ``train`` runs the shell line ``before``, then cara-mlflow's trainer."""
    folder.mkdir()
    (folder / "MLproject").write_text(textwrap.dedent(f"""\
        name: test-trainer
        entry_points:
          train:
            parameters:
              data: {{type: string}}
              target: {{type: string, default: label}}
              features: {{type: string, default: ""}}
            command: "{before}; python -m cara_mlflow.train --data {{data}} --target {{target}} --features {{features}}"
        """))
    return str(folder)


def _gated(tmp_path: Path) -> tuple[str, Path]:
    """A project that trains only once the file ``go`` exists: a retrain as slow as the test wants.
    It gives up (exit 3) after two minutes, so a test that fails before ``go`` leaves no process."""
    go = tmp_path / "go"
    wait = f"for i in $(seq 600); do [ -e {go} ] && break; sleep 0.2; done; [ -e {go} ] || exit 3"
    return _project(tmp_path / "gated", wait), go


def _retrains(store: Path, batch: int = BATCH) -> list:
    return runs_of(registry(store), "retrain", batch)


def _project_runs(store: Path, batch: int = BATCH) -> list:
    """Every run MLflow created for the batch's detached retrain, tagged or not (by its data)."""
    data = str(store / RETRAIN_DIR / str(batch))
    return registry(store).runs.with_param("data", data)


# ------------------------------------------------------------------------------ the detached path


def test_a_detached_retrain_is_submitted_once_waited_for_and_promoted(fresh):
    before = registry(fresh).production().version
    line = ok(run_cli(fresh, "step", "--force-retrain", *DETACHED)).stdout
    assert f"batch {BATCH}:" in line and "gate=" in line
    reg = registry(fresh)
    [run] = _retrains(fresh)
    assert run.status == "FINISHED" and run.tags[TAG_BACKEND] == "local" and run.tags[TAG_PROCESS]
    assert TAG_LOG not in run.tags                  # its log file is removed after a success, and so is its name
    assert run.tags["mlflow.parentRunId"] == runs_of(reg, "batch", BATCH, "FINISHED")[0].run_id
    assert run.params["data"] == str(fresh / RETRAIN_DIR / str(BATCH)) and run.metrics["training_seconds"] > 0
    [version] = reg.versions(trained_on=BATCH)
    assert version.tags["cara.training_run"] == run.run_id
    assert reg.last_batch() == BATCH and reg.production().version in (before, version.version)
    assert not (fresh / RETRAIN_DIR / str(BATCH)).exists()      # the rows are removed once the run ended


def test_a_retrain_past_the_timeout_is_left_running_and_the_next_step_waits_for_it(fresh, tmp_path):
    """Exit 75 and the run left RUNNING; `status` shows it; a synchronous retrain is refused
    meanwhile; the next step finds it, waits, and submits nothing (one project run)."""
    project, go = _gated(tmp_path)
    events = tmp_path / "events.jsonl"
    args = ("step", "--force-retrain", *DETACHED, "--project-uri", project, "--notify", f"cat >> {events}")
    line = one_line_error(run_cli(fresh, *args, "--retrain-timeout", "2"), code=75)
    assert f"the retrain of batch {BATCH}" in line and "still running after 2 s" in line
    assert registry(fresh).last_batch() == INIT_BATCH
    assert [r.status for r in _retrains(fresh)] == ["RUNNING"]
    assert (fresh / RETRAIN_DIR / str(BATCH) / "data.parquet").is_file()
    shown = ok(run_cli(fresh, "status")).stdout
    assert f"retraining   batch {BATCH} on local: run {_retrains(fresh)[0].run_id} still running" in shown
    # retraining here, synchronously, while it runs would train the batch twice: refused
    line = one_line_error(run_cli(fresh, "step", "--force-retrain", "--project-uri", project))
    assert f"retrain run {_retrains(fresh)[0].run_id} is still running on backend local" in line
    assert [r.status for r in _retrains(fresh)] == ["RUNNING"]
    go.touch()
    ok(run_cli(fresh, *args, "--retrain-timeout", "120"))
    assert [r.status for r in _retrains(fresh)] == ["FINISHED"] and len(_project_runs(fresh)) == 1
    assert registry(fresh).last_batch() == BATCH
    # announced once, when submitted; a retrain still running is no failure
    sent = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert sent[0] == "retrain" and sent.count("retrain") == 1 and "failed" not in sent


def test_kill_9_between_the_submission_and_its_tags_finds_the_run_by_its_data(fresh, tmp_path):
    project, go = _gated(tmp_path)
    args = ("step", "--force-retrain", *DETACHED, "--project-uri", project)
    killed = run_cli(fresh, *args, **{KILL_ENV: "after-submit"})
    assert killed.returncode == -signal.SIGKILL
    [orphan] = _project_runs(fresh)
    assert orphan.status == "RUNNING" and "cara.run_type" not in orphan.tags     # submitted, never tagged
    go.touch()
    ok(run_cli(fresh, *args, "--retrain-timeout", "120"))
    [run] = _retrains(fresh)
    assert run.run_id == orphan.run_id and run.status == "FINISHED" and len(_project_runs(fresh)) == 1
    assert registry(fresh).versions(trained_on=BATCH)[0].tags["cara.training_run"] == orphan.run_id


def test_a_failed_retrain_leaves_production_unchanged_and_the_next_step_submits_again(fresh, tmp_path):
    reg = registry(fresh)
    production, versions = reg.production().version, len(reg.versions())
    failing = _project(tmp_path / "failing", "echo 'out of memory' >&2; exit 3")
    events = tmp_path / "events.jsonl"
    line = one_line_error(run_cli(fresh, "step", "--force-retrain", *DETACHED, "--project-uri", failing,
                                  "--notify", f"cat >> {events}"))
    announced, failed = [json.loads(text) for text in events.read_text().splitlines()]
    assert announced["event"] == "retrain" and failed["event"] == "failed" and "ended FAILED" in failed["text"]
    assert f"the retrain of batch {BATCH} on backend local (detached) ended FAILED" in line
    assert "production is unchanged" in line and ".log" in line
    log = Path(line.split(" and ")[-1].split(";")[0])
    assert "out of memory" in log.read_text()
    assert reg.production().version == production and len(reg.versions()) == versions
    assert reg.last_batch() == INIT_BATCH and not (fresh / RETRAIN_DIR / str(BATCH)).exists()
    ok(run_cli(fresh, "step", "--force-retrain", *DETACHED))
    assert sorted(r.status for r in _retrains(fresh)) == ["FAILED", "FINISHED"]
    assert reg.last_batch() == BATCH


def test_a_local_detached_retrain_whose_process_died_is_marked_failed_and_redone(fresh, tmp_path):
    project, go = _gated(tmp_path)
    args = ("step", "--force-retrain", *DETACHED, "--project-uri", project)
    one_line_error(run_cli(fresh, *args, "--retrain-timeout", "1"), code=75)
    [stuck] = _retrains(fresh)
    os.killpg(int(stuck.tags[TAG_PROCESS].split(":")[1]), signal.SIGKILL)   # `mlflow run` and its trainer
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and Path(f"/proc/{stuck.tags[TAG_PROCESS].split(':')[1]}").exists():
        time.sleep(0.1)
    go.touch()
    ok(run_cli(fresh, *args, "--retrain-timeout", "120"))
    statuses = {r.run_id: r.status for r in _retrains(fresh)}
    assert statuses.pop(stuck.run_id) == "FAILED" and list(statuses.values()) == ["FINISHED"]


def test_databricks_without_a_databricks_workspace_is_refused_in_one_line_before_any_run(fresh):
    before = snapshot(fresh)
    spec = json.dumps({"new_cluster": {"spark_version": "15.4.x-scala2.12", "num_workers": 1}})
    line = one_line_error(run_cli(fresh, "step", "--force-retrain", "--backend", "databricks",
                                  "--backend-config", spec))
    assert f"the retrain of batch {BATCH} could not be submitted to the databricks backend" in line
    assert _project_runs(fresh) == [] and registry(fresh).last_batch() == INIT_BATCH
    after = snapshot(fresh)
    assert after["versions"] == before["versions"] and after["aliases"] == before["aliases"]


# ------------------------------------------------------------------------------ a backend plugin

_PLUGIN = '''
"""A test-only MLflow Projects backend plugin: the local backend, detached, under another name."""
from mlflow.projects.backend.local import LocalBackend
from mlflow.projects.utils import PROJECT_ENV_MANAGER


class DetachedLocal(LocalBackend):
    def run(self, project_uri, entry_point, params, version, backend_config, tracking_uri, experiment_id):
        config = {**backend_config, PROJECT_ENV_MANAGER: "local"}
        return super().run(project_uri, entry_point, params, version, config, tracking_uri, experiment_id)


class PushDenied(RuntimeError):
    """Not an MLflow error: as docker's or kubernetes' own exceptions are not."""


class Refusing(LocalBackend):
    """Creates the project's run, then fails as an image push refused by a registry would."""
    def run(self, project_uri, entry_point, params, version, backend_config, tracking_uri, experiment_id):
        from mlflow.projects.utils import fetch_and_validate_project, get_or_create_run

        work_dir = fetch_and_validate_project(project_uri, version, entry_point, params)
        get_or_create_run(None, project_uri, experiment_id, work_dir, version, entry_point, params)
        raise PushDenied("image push denied: quota exceeded")
'''


def _install_plugin(folder: Path) -> str:
    """Install the plugin as pip would (a module and a dist-info declaring the entry point); the
    folder goes on PYTHONPATH."""
    folder.mkdir()
    (folder / "cara_test_backend.py").write_text(_PLUGIN)
    info = folder / "cara_test_backend-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cara-test-backend\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[mlflow.project_backend]\ncara-test = cara_test_backend:DetachedLocal\n"
                                           "cara-refusing = cara_test_backend:Refusing\n")
    return os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


def test_an_installed_backend_plugin_runs_the_retrain_detached(fresh, tmp_path):
    path = _install_plugin(tmp_path / "plugin")
    line = one_line_error(run_cli(fresh, "step", "--backend", "cara-test2"))
    assert "known: local, databricks, kubernetes" in line
    line = one_line_error(run_cli(fresh, "step", "--backend", "cara-test2", PYTHONPATH=path))
    assert "kubernetes, cara-refusing, cara-test)" in line       # the plugins are listed once installed
    ok(run_cli(fresh, "step", "--force-retrain", "--backend", "cara-test", PYTHONPATH=path))
    [run] = _retrains(fresh)
    assert run.status == "FINISHED" and run.tags[TAG_BACKEND] == "cara-test"
    assert TAG_PROCESS not in run.tags           # only a local backend's process is ours to watch
    assert registry(fresh).last_batch() == BATCH


def test_a_submission_the_backend_refuses_is_one_line_and_its_run_is_not_left_running(fresh, tmp_path):
    path = _install_plugin(tmp_path / "plugin")
    before = registry(fresh).production().version
    line = one_line_error(run_cli(fresh, "step", "--force-retrain", "--backend", "cara-refusing", PYTHONPATH=path))
    assert f"the retrain of batch {BATCH} could not be submitted to the cara-refusing backend" in line
    assert "(PushDenied: image push denied: quota exceeded)" in line
    assert [r.status for r in _project_runs(fresh)] == ["FAILED"]     # MLflow's run, ended by us
    assert not (fresh / RETRAIN_DIR / str(BATCH)).exists()            # the staged rows removed
    assert registry(fresh).production().version == before and registry(fresh).last_batch() == INIT_BATCH


def test_tune_stores_the_backend_and_a_re_tune_keeps_it(fresh, tmp_path):
    out = ok(run_cli(fresh, "tune", "--offline", "0:5", "--kappa", "5", "--model", "lr", *DETACHED)).stdout
    doc = json.loads(registry(fresh).active_policy_text()[0])
    assert doc["backend"] == {"name": "local", "config": {"detach": True}}
    out = ok(run_cli(fresh, "tune", "--offline", "0:5", "--kappa", "5", "--model", "lr")).stdout
    assert "kept from the active policy" in out and "its retrain backend (local (detached))" in out
    assert json.loads(registry(fresh).active_policy_text()[0])["backend"] == doc["backend"]
