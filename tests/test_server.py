"""The lifecycle against a real tracking server: ``mlflow server`` on loopback with a PostgreSQL
backend store (tests/pgserver.py), reached over HTTP exactly as production would reach it.

Outages are real: the server process is killed in the middle of a step (the step paused at a
named phase through ``CARA_TEST_PAUSE_AT``, read by ``tests/crash_harness.py``) and started
again. MLflow's own HTTP retry settings are lowered so an outage test takes seconds. Skipped,
with the reason, only when PostgreSQL or the server cannot start; under
``CARA_REQUIRE_SERVER=1`` (``.ci/run``) that is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from cara_mlflow.cli import cli
from cara_mlflow.tracking import Registry
from cara_mlflow.tracking.connection import mlflow_scope

from .crash_harness import PAUSE_ENV
from .helpers import TIMEOUT, cli_command, cli_env, ok, one_line_error
from .pgserver import PgMlflowServer

QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


@pytest.fixture(scope="module")
def server():
    srv = PgMlflowServer()
    reason = srv.start()
    if reason:
        srv.stop()
        message = f"no PostgreSQL-backed MLflow server: {reason}"
        if os.environ.get("CARA_REQUIRE_SERVER") == "1":
            pytest.fail(message)
        print(f"SKIPPED: {message}", file=sys.stderr)
        pytest.skip(message)
    yield srv
    srv.stop()


def _env(server, name: str, **extra) -> dict:
    return {"CARA_NAME": name, "MLFLOW_TRACKING_URI": server.uri, **QUICK_HTTP, **extra}


def _run(store: Path, server, name: str, *args: str, **extra) -> subprocess.CompletedProcess:
    env = cli_env(store, **_env(server, name, **extra))
    return subprocess.run([*cli_command(env), *args], env=env, cwd=store.parent, capture_output=True, text=True,
                          timeout=TIMEOUT)


def _popen(store: Path, server, name: str, *args: str, **extra) -> subprocess.Popen:
    env = cli_env(store, **_env(server, name, **extra))
    return subprocess.Popen([*cli_command(env), *args], env=env, cwd=store.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _ready_store(tmp_path: Path, server, name: str, n_batches: int = 10) -> Path:
    """A CovCon-D store tuned on 0:4 and initialised on 4, its MLflow state on the server."""
    store = tmp_path / "store"
    made = CliRunner().invoke(cli, ["make-stream", "covcon-d", "--out", str(store), "--n-batches", str(n_batches),
                                    "--batch-size", "150"])
    assert made.exit_code == 0, made.output
    ok(_run(store, server, name, "tune", "--offline", "0:4", "--kappa", "5", "--policy", "cara-t", "--model", "lr"))
    ok(_run(store, server, name, "init", "--batch", "4"))
    assert not (store / "mlflow.db").exists()                 # everything went to the server
    return store


def _registry(server, name: str) -> Registry:
    return Registry(server.uri, name)


def _finished_batch_runs(reg: Registry, batch: int) -> list:
    return [r for r in reg.runs.find("batch", batch=batch) if r.status == "FINISHED"]


def test_lifecycle_end_to_end_against_a_postgresql_backed_server(server, tmp_path):
    name = "srv-e2e"
    store = _ready_store(tmp_path, server, name)
    out = ok(_run(store, server, name, "step", "--all")).stdout
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("batch")] == [
        f"batch {b}" for b in range(5, 10)
    ]
    reg = _registry(server, name)
    assert reg.last_batch() == 9
    for b in range(5, 10):
        assert len(_finished_batch_runs(reg, b)) == 1
        assert len(reg.versions(trained_on=b)) <= 1
    history = json.loads(ok(_run(store, server, name, "history", "--json")).stdout)
    assert [h["batch"] for h in history][-5:] == list(range(5, 10))
    import mlflow.sklearn

    (tmp_path / "m").mkdir()
    with mlflow_scope(server.uri):
        model = mlflow.sklearn.load_model(f"models:/{name}@production", dst_path=str(tmp_path / "m"))
    assert model.predict(pd.DataFrame({"x1": [0.5], "x2": [0.5]})).shape == (1,)
    assert any(server.artifacts.rglob("MLmodel"))             # artifacts proxied to the server's destination


def _pause_then(store, server, name, tmp_path, phase: str, during_pause, **extra):
    """Run one step, paused at ``phase``; call ``during_pause()``; let the step go on; return it."""
    gate = tmp_path / f"pause-{phase}"
    gate.mkdir()
    proc = _popen(store, server, name, "step", **{PAUSE_ENV: f"{phase}:{gate}"}, **extra)
    deadline = time.monotonic() + 120
    while not (gate / "paused").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the step never reached the pause"
        time.sleep(0.05)
    during_pause()
    (gate / "resume").touch()
    out, err = proc.communicate(timeout=TIMEOUT)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_server_stopped_mid_step_fails_cleanly_and_the_next_step_completes_the_batch(server, tmp_path):
    phase = "after-batch-run"                      # the batch run exists (RUNNING) when the server goes
    name = "srv-outage"
    store = _ready_store(tmp_path, server, name, n_batches=7)
    try:
        failed = _pause_then(store, server, name, tmp_path, phase, server.stop_server)
        line = one_line_error(failed, code=75)              # EX_TEMPFAIL: cron retries it
        assert server.uri in line, line                     # names the tracking URI
    finally:
        assert server.start_server() is None
    reg = _registry(server, name)
    assert reg.last_batch() == 4                             # nothing committed
    assert not _finished_batch_runs(reg, 5)
    assert not reg.versions(trained_on=5)
    rerun = ok(_run(store, server, name, "step"))
    assert rerun.stdout.startswith("batch 5:")
    assert reg.last_batch() == 5 and len(_finished_batch_runs(reg, 5)) == 1
    assert {r.status for r in reg.runs.find("batch", batch=5)} <= {"FINISHED", "KILLED", "FAILED"}


def test_a_short_outage_is_ridden_out_by_retries_with_backoff(server, tmp_path):
    name = "srv-transient"
    store = _ready_store(tmp_path, server, name, n_batches=7)
    restarted = []

    def outage():
        server.stop_server()
        threading.Thread(target=lambda: restarted.append(server.start_server()), daemon=True).start()

    patient = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "9", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}
    try:
        result = _pause_then(store, server, name, tmp_path, "after-psi", outage, **patient)
    finally:
        deadline = time.monotonic() + 200
        while not restarted and time.monotonic() < deadline:
            time.sleep(0.2)
    assert restarted == [None]
    ok(result)
    assert result.stdout.startswith("batch 5:")
    assert _registry(server, name).last_batch() == 5


def test_a_permanent_error_is_not_retried(server, tmp_path):
    store = _ready_store(tmp_path, server, "srv-permanent", n_batches=6)
    slow_retries = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "4",
                    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}
    clock = time.monotonic()
    result = _run(store, server, "srv-no-such-model", "step", **slow_retries)
    elapsed = time.monotonic() - clock
    line = one_line_error(result)
    assert "srv-no-such-model" in line
    # retrying a 404 with this backoff would take over a minute (4+8+16+32 s); it was not retried
    assert elapsed < 40, elapsed


def test_eight_concurrent_steps_against_the_server(server, tmp_path):
    name = "srv-concurrent"
    store = _ready_store(tmp_path, server, name, n_batches=12)       # 7 pending: 5..11
    procs = [_popen(store, server, name, "step", "--all", "--lock-timeout", "600") for _ in range(8)]
    outputs = [p.communicate(timeout=900) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode in (0, 75), (proc.returncode, out, err)
        assert "Traceback" not in err, err
    processed = sorted(int(line.split(":")[0].split()[1]) for out, _ in outputs for line in out.splitlines()
                       if line.startswith("batch "))
    assert processed == list(range(5, 12))
    reg = _registry(server, name)
    retrains = 0
    for b in range(5, 12):
        (run,) = _finished_batch_runs(reg, b)
        retrains += run.tags["cara.decision"] == "retrain"
        assert len(reg.versions(trained_on=b)) <= 1
    assert len(reg.versions()) == retrains + 1
