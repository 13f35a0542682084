"""Fixtures shared by the test modules (plain helpers are in ``tests/helpers.py``)."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from .crash_harness import FAULT_VARIABLES
from .helpers import BATCH_SIZE, INIT_BATCH, KAPPA, N_BATCHES, NAME, OFFLINE, POLICY, copy_store, ok, run_cli


@pytest.fixture
def mlflow_globals_untouched():
    """Nothing in the test (nor the library, in-process) may leave MLflow's global URIs changed:
    the URIs MLflow resolves, the variables children inherit, and PATH."""
    import mlflow

    def state():
        return (mlflow.get_tracking_uri(), mlflow.get_registry_uri(), os.environ.get("MLFLOW_TRACKING_URI"),
                os.environ.get("MLFLOW_REGISTRY_URI"), os.environ.get("PATH"))

    before = state()
    yield
    assert state() == before


@pytest.fixture
def cara(monkeypatch, capsys):
    """``cara_mlflow.cli.main(ARGS)`` in-process, with the env of :func:`helpers.cli_env`.

    Returns a ``CompletedProcess`` (exit code of ``SystemExit``, captured stdout/stderr). What
    the CLI sets in the environment and on the loggers is restored afterwards.
    """
    from cara_mlflow.cli import main

    levels = {n: logging.getLogger(n).level for n in ("mlflow", "alembic")}

    def run(store: Path, *args: str) -> subprocess.CompletedProcess:
        for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
            monkeypatch.delenv(key)
        for key in FAULT_VARIABLES:
            monkeypatch.delenv(key, raising=False)
        for key, value in dict(CARA_NAME=NAME, CARA_STORE=str(store), MLFLOW_DISABLE_TELEMETRY="true",
                               MLFLOW_LOGGING_LEVEL="WARNING").items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)

    yield run
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)


@pytest.fixture(scope="session")
def base_store(tmp_path_factory) -> Path:
    """A CovCon-D store of 14 batches of 250, tuned on 0:5 (CARA-CT, κ=5, lr) and initialised on 5.

    Built once per session and never stepped itself: tests take a copy (:func:`fresh`). A copy
    keeps writing artifacts under the original's ``mlartifacts`` (the experiment's location is an
    absolute path): harmless, every run writes under its own id and each copy has its own
    ``mlflow.db``.
    """
    from cara_mlflow.cli import cli
    from cara_mlflow.store import BatchStore

    root = tmp_path_factory.mktemp("base") / "store"
    made = CliRunner().invoke(cli, ["make-stream", "covcon-d", "--out", str(root), "--n-batches", str(N_BATCHES),
                                    "--batch-size", str(BATCH_SIZE)])
    assert made.exit_code == 0, made.output
    assert [i.id for i in BatchStore(root).list() if i.complete] == list(range(N_BATCHES))
    ok(run_cli(root, "tune", "--offline", f"{OFFLINE[0]}:{OFFLINE[1]}", "--kappa", str(KAPPA),
               "--policy", POLICY, "--model", "lr", "--n-estimators", "10"))
    ok(run_cli(root, "init", "--batch", str(INIT_BATCH)))
    for stray in ("mlruns", "mlflow.db"):          # the default store is the store's own sqlite
        assert not (root.parent / stray).exists()
    return root


@pytest.fixture
def fresh(base_store, tmp_path) -> Path:
    """A private copy of the tuned and initialised store: last_batch 5, batches 6..13 pending."""
    return copy_store(base_store, tmp_path / "store")
