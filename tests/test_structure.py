"""The shape of the package and the error contract at the edge.

* Only ``cara_mlflow/tracking/`` imports mlflow; nothing under ``cara_mlflow/`` reads a test
  variable; ``cara-mlflow --help`` imports neither mlflow nor scikit-learn.
* Our errors are one line with their exit code (1, or 75 for a busy lock or an unreachable
  server); anything else is a bug and reaches the terminal with its traceback, exit 1.
* A Python caller of the lifecycle gets the store lock and the reachability check too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cara_mlflow import lifecycle
from cara_mlflow.errors import LockBusy, Unreachable
from cara_mlflow.lock import store_lock
from cara_mlflow.store import BatchStore
from cara_mlflow.tracking import Registry

from .crash_harness import BUG_ENV
from .helpers import INIT_BATCH, NAME, closed_port, drop_batches_from, ok, one_line_error, registry, run_cli, snapshot

PACKAGE = Path(__file__).resolve().parent.parent / "cara_mlflow"


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_only_the_adapter_package_imports_mlflow():
    importers = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if any(m == "mlflow" or m.startswith("mlflow.") for m in _imported_modules(p))}
    assert importers, "the adapter must import mlflow somewhere"
    assert all(p.startswith("tracking/") for p in importers), sorted(importers)


def test_no_product_code_reads_a_test_variable():
    readers = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "CARA_TEST" in p.read_text()]
    assert readers == []


def test_help_imports_neither_mlflow_nor_scikit_learn():
    code = ("import sys\nfrom cara_mlflow.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('mlflow', 'sklearn') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_a_bug_reaches_the_terminal_with_its_traceback_and_exit_1(fresh):
    before = snapshot(fresh)
    result = run_cli(fresh, "step", **{BUG_ENV: "after-read"})
    assert result.returncode == 1, result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == "ValueError: a bug at after-read: not an input error"
    assert snapshot(fresh) == before                       # it failed before writing anything


def test_a_bug_after_the_batch_run_started_marks_the_run_failed_and_commits_nothing(fresh):
    result = run_cli(fresh, "step", **{BUG_ENV: "after-batch-run"})
    assert result.returncode == 1 and "Traceback" in result.stderr
    reg = registry(fresh)
    assert reg.last_batch() == INIT_BATCH
    (run,) = reg.runs.find("batch", batch=INIT_BATCH + 1)
    assert run.status == "FAILED" and run.tags["cara.error"].startswith("a bug at after-batch-run")
    ok(run_cli(fresh, "step"))                             # the next step does the batch
    assert reg.last_batch() == INIT_BATCH + 1


@pytest.mark.parametrize("retries", ["0", "2"])
def test_an_unreachable_server_exits_75_within_the_retry_settings(fresh, retries):
    """75 (EX_TEMPFAIL) with one line naming the server, once MLflow's retries are spent:
    with 2 retries at backoff factor 1 that is a few seconds, not MLflow's default minutes."""
    uri = f"http://127.0.0.1:{closed_port()}"
    clock = time.monotonic()
    result = run_cli(fresh, "step", MLFLOW_TRACKING_URI=uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES=retries,
                     MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1", MLFLOW_HTTP_REQUEST_BACKOFF_JITTER="0",
                     MLFLOW_HTTP_REQUEST_TIMEOUT="2")
    elapsed = time.monotonic() - clock
    line = one_line_error(result, code=75)
    assert line.startswith(f"cara-mlflow: cannot reach the MLflow tracking store at {uri}: ")
    assert elapsed < 60, elapsed


def test_the_library_takes_the_lock_and_checks_the_server_for_a_python_caller(fresh, mlflow_globals_untouched,
                                                                              monkeypatch):
    drop_batches_from(fresh, 9)                              # pending: 6, 7, 8
    store, reg = BatchStore(fresh), registry(fresh)
    before = snapshot(fresh)
    with store_lock(fresh, timeout=5):
        with pytest.raises(LockBusy, match="holds the lock"):
            lifecycle.step(store, reg, lock_timeout=0)
        with pytest.raises(LockBusy):
            list(lifecycle.steps(store, reg, lock_timeout=0))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    down = Registry(f"http://127.0.0.1:{closed_port()}", NAME)
    with pytest.raises(Unreachable) as caught:
        lifecycle.step(store, down)
    assert caught.value.exit_code == 75
    assert snapshot(fresh) == before
    results = list(lifecycle.steps(store, reg))            # step --all, as a library call
    assert [r.batch for r in results[:-1]] == [6, 7, 8]
    assert results[-1].status == "nothing"


def test_no_function_in_the_package_is_over_60_lines():
    """Small functions: the body of every function (its docstring aside) fits on a screen."""
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                documented = (len(body) > 1 and isinstance(body[0], ast.Expr)
                              and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str))
                first = body[1] if documented else body[0]
                if node.end_lineno - first.lineno + 1 > 60:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert long == []


@pytest.mark.parametrize("command", [["status"], ["history"], ["init", "--batch", "3"], ["step"],
                                     ["skip", "--batch", "3", "--reason", "x"], ["rollback", "--reason", "x"],
                                     ["tune", "--offline", "0:3", "--kappa", "1"]])
def test_a_mistyped_store_is_refused_and_nothing_is_left_behind(tmp_path, command):
    missing = tmp_path / "no-such-store"
    line = one_line_error(run_cli(missing, *command))
    assert line == (f"cara-mlflow: error: store: {missing} is not a batch store (no batches/ directory); "
                    "check --store (env CARA_STORE)")
    assert not missing.exists()


def test_a_batch_store_without_a_database_is_refused_by_status(tmp_path):
    store = tmp_path / "store"
    (store / "batches").mkdir(parents=True)
    line = one_line_error(run_cli(store, "status"))
    assert f"no cara-mlflow store at {store}" in line and "--store" in line
    assert sorted(p.name for p in store.iterdir()) == ["batches"]


def test_history_of_a_model_that_is_not_managed_says_so(fresh):
    result = run_cli(fresh, "history", CARA_NAME="not-this-one")
    assert "model 'not-this-one' is not managed" in one_line_error(result)
