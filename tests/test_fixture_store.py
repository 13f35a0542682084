"""A store written by the previous release (tests/fixtures/store-0.1.0) keeps stepping with today's code.

The copy's sqlite file is brought to the installed MLflow's schema with ``mlflow db upgrade`` (as a
user does after upgrading MLflow), and the absolute paths the fixture was made at are rewritten to
the copy's (as a user does who moves a store).
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cara_mlflow import lifecycle
from cara_mlflow.tracking import Registry, default_tracking_uri

from .helpers import ok, run_cli

pytestmark = pytest.mark.usefixtures("mlflow_globals_untouched")

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "store-0.1.0"
MADE_AT = "/tmp/fixstore"
NAME = "legacy"
#: The columns of MLflow's schema that hold the store's absolute path.
PATH_COLUMNS = {"experiments": "artifact_location", "runs": "artifact_uri", "logged_models": "artifact_location",
                "model_versions": "storage_location", "datasets": "dataset_source"}


def _relocate(db: Path, old: str, new: str) -> None:
    with sqlite3.connect(db) as connection:
        for table, column in PATH_COLUMNS.items():
            connection.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)", (old, new))


@pytest.fixture
def legacy_store(tmp_path) -> Path:
    store = tmp_path / "store"
    shutil.copytree(FIXTURE, store)
    _relocate(store / "mlflow.db", MADE_AT, str(store))
    upgrade = subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", default_tracking_uri(store)],
                             capture_output=True, text=True, timeout=300)
    assert upgrade.returncode == 0, upgrade.stderr
    return store


def test_a_store_written_by_the_previous_release_steps_on(legacy_store):
    registry = Registry(default_tracking_uri(legacy_store), NAME)
    assert registry.last_batch() == 7
    before = lifecycle.status(_store(legacy_store), registry)
    assert before["production"]["version"] == 2 and before["last_retrain"] == {"batch": 6, "version": 2,
                                                                               "gate": "passed"}
    doc = lifecycle.active_policy(registry)
    assert (doc.policy, doc.kappa, doc.psi.method, doc.features) == ("cara-ct", 3.0, "auto", ("x1", "x2"))

    result = ok(run_cli(legacy_store, "step", "--all", CARA_NAME=NAME))
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["batch 8", "batch 9"] and lines[2].startswith("nothing")
    assert registry.last_batch() == 9
    after = lifecycle.status(_store(legacy_store), registry)
    rows = {r["batch"]: r for r in lifecycle.history(registry)}
    assert sorted(rows) == list(range(4, 10))
    paid = sum(rows[b]["psi_bar"] if rows[b]["decision"] == "keep" else 3.0 for b in (8, 9))
    assert after["cumulative_cost"] == pytest.approx(before["cumulative_cost"] + paid)
    old, new = (registry.runs.load_json(rows[b]["run_id"], "policy_state.json") for b in (7, 8))
    assert old["policy"] == {"policy": "cara-ct", "params": doc.params, "state": old["policy"]["state"]}
    if rows[8]["decision"] == "keep":                     # the policy's accumulated staleness carried on
        assert new["policy"]["state"]["cum"] == pytest.approx(old["policy"]["state"]["cum"] + rows[8]["psi_bar"])
        assert new["policy"]["state"]["n"] == old["policy"]["state"]["n"] + 1
    ok(run_cli(legacy_store, "step", "--force-retrain", CARA_NAME=NAME))   # nothing pending: says so
    assert registry.last_batch() == 9


def _store(root: Path):
    from cara_mlflow.store import BatchStore

    return BatchStore(root)
