"""Shared helpers of the lifecycle, reliability and server tests (fixtures are in ``conftest.py``).

A CovCon-D store of 14 batches of 250, tuned on 0:5 (CARA-CT, κ=5, lr) and initialised on 5; the
CLI run as cron runs it (a subprocess, the store's own sqlite), or with fault injection through
``tests/crash_harness.py``. Results are read back with a plain ``MlflowClient`` on the store's
sqlite file, or through the library's adapter.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd

from cara_mlflow.store import SUCCESS_MARKER, BatchStore
from cara_mlflow.tracking import Registry, default_tracking_uri
from cara_mlflow.tracking.connection import mlflow_scope

from . import crash_harness

NAME = "demo"
KAPPA = 5.0
POLICY = "cara-ct"           # stateful (ΣΨ̄, n): a reset of the policy is visible in its state
N_BATCHES, BATCH_SIZE = 14, 250
OFFLINE = (0, 5)
INIT_BATCH = 5
ONLINE = list(range(INIT_BATCH + 1, N_BATCHES))          # 6..13
TIMEOUT = 240                                            # seconds, per CLI subprocess


def cli_env(store: Path, **extra: str) -> dict[str, str]:
    """What cron gives the step: CARA_NAME/CARA_STORE, no MLflow URI (the store's sqlite default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    for key in crash_harness.FAULT_VARIABLES:
        env.pop(key, None)
    env.update(CARA_NAME=NAME, CARA_STORE=str(store), MLFLOW_DISABLE_TELEMETRY="true")
    env.update(extra)
    return env


def cli_command(env: dict[str, str]) -> list[str]:
    """``python -m cara_mlflow.cli``; the crash harness instead when the env asks for a fault."""
    if any(key in env for key in crash_harness.FAULT_VARIABLES):
        return [sys.executable, crash_harness.__file__]
    return [sys.executable, "-m", "cara_mlflow.cli"]


def run_cli(store: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
    """The CLI with ``ARGS`` in a subprocess, from a directory next to the store."""
    env = cli_env(store, **extra_env)
    return subprocess.run([*cli_command(env), *args], env=env, cwd=store.parent, capture_output=True, text=True,
                          timeout=TIMEOUT)


def popen_cron(store: Path, home: Path, *args: str) -> subprocess.Popen:
    """The console script as examples/crontab runs it: PATH=/usr/bin:/bin (no venv), cwd $HOME."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "CARA_NAME": NAME, "CARA_STORE": str(store),
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    script = Path(sys.executable).parent / "cara-mlflow"
    return subprocess.Popen([str(script), *args], env=env, cwd=home, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def one_line_error(result: subprocess.CompletedProcess, code: int = 1) -> str:
    """The contract for bad input or environment: exit ``code``, exactly one line on stderr."""
    assert result.returncode == code, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    lines = error_lines(result)
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return lines[0]


def registry(store: Path) -> Registry:
    return Registry(default_tracking_uri(store), NAME)


def client(store_or_uri: Path | str):
    """A plain ``MlflowClient`` on a store's sqlite file (or a tracking URI): what the test reads with."""
    from mlflow import MlflowClient

    uri = store_or_uri if isinstance(store_or_uri, str) else default_tracking_uri(store_or_uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def drop_batches_from(store: Path, first: int) -> None:
    """Remove batches ``first..``: keeps a copy's pending work (and its retrains) small."""
    for info in BatchStore(store).list():
        if info.id >= first:
            shutil.rmtree(info.path)


def all_runs(reg: Registry) -> list:
    return reg.runs.all()


def runs_of(reg: Registry, run_type: str, batch: int | None = None, status: str | None = None) -> list:
    runs = reg.runs.find(run_type, batch=batch)
    return [r for r in runs if status is None or r.status == status]


def the_batch_run(reg: Registry, batch: int):
    finished = runs_of(reg, "batch", batch, "FINISHED")
    assert len(finished) == 1, f"batch {batch}: {len(finished)} FINISHED batch runs"
    return finished[0]


def timeline_points(reg: Registry, metric: str = "decision") -> list[tuple[int, float]]:
    timelines = reg.runs.find("timeline")
    assert len(timelines) == 1, f"{len(timelines)} timeline runs"
    return sorted(reg.runs.metric_history(timelines[0].run_id, metric))


def model_tags(store: Path) -> dict:
    """The registered model's tags (the commit point, the hint, the rollback reason)."""
    return dict(client(store).get_registered_model(NAME).tags)


def snapshot(store: Path) -> dict:
    """Everything a step may write: registry (versions, tags, aliases, policy), runs, timeline."""
    reg = registry(store)
    raw = client(store)
    model = raw.get_registered_model(NAME) if reg.exists() else None
    policy_versions = reg.policy_versions()
    runs = all_runs(reg)
    timeline = reg.runs.find("timeline")
    return {
        "model_tags": dict(model.tags) if model else None,
        "aliases": dict(model.aliases) if model else None,
        "versions": sorted((v.version, tuple(sorted(v.tags.items()))) for v in reg.versions()),
        "policy_versions": sorted(v.version for v in policy_versions),
        "runs": sorted((r.run_id, r.status, tuple(sorted(r.tags.items())), tuple(sorted(r.metrics.items())))
                       for r in runs),
        "timeline": timeline_points(reg) if timeline else [],
    }


def load_production(store: Path, dst: Path):
    """``mlflow.sklearn.load_model("models:/NAME@production")``, the way a server loads it."""
    import mlflow.sklearn

    dst.mkdir(parents=True, exist_ok=True)
    with mlflow_scope(default_tracking_uri(store)):
        return mlflow.sklearn.load_model(f"models:/{NAME}@production", dst_path=str(dst))


def rewrite_batch(store: Path, batch_id: int, data: pd.DataFrame, *, complete: bool = True) -> None:
    """Replace a batch's data (keeping its queries), as a producer would write it afresh."""
    bs = BatchStore(store)
    path = bs.info(batch_id).path
    queries = pd.read_parquet(path / "queries.parquet")
    shutil.rmtree(path)
    bs.write(batch_id, data, queries=queries)
    if not complete:
        (path / SUCCESS_MARKER).unlink()


def read_data(store: Path, batch_id: int) -> pd.DataFrame:
    return pd.read_parquet(BatchStore(store).info(batch_id).path / "data.parquet")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_x3(store: Path, batch_ids) -> None:
    """A producer adds the column x3 to batches (data and queries), as after a schema change."""
    bs = BatchStore(store)
    for b in batch_ids:
        path = bs.info(b).path
        data, queries = pd.read_parquet(path / "data.parquet"), pd.read_parquet(path / "queries.parquet")
        shutil.rmtree(path)
        bs.write(b, data.assign(x3=data["x1"] - data["x2"]), queries=queries.assign(x3=queries["x1"] - queries["x2"]))


def load_benchmark(script: str):
    """``benchmarks/SCRIPT`` imported as a module, for the tests of its functions."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    spec = importlib.util.spec_from_file_location(f"{path.stem}_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
