"""Batch ids that are dates (issue 14): offline windows and online steps over ids with gaps,
across a month end."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cara_mlflow.store import BatchStore
from cara_mlflow.streams import make_stream

from .helpers import ok, run_cli

pytestmark = pytest.mark.usefixtures("mlflow_globals_untouched")

# a month end, a missing day in each month
DAYS = [20261027, 20261028, 20261029, 20261031, 20261101, 20261102, 20261103, 20261105, 20261106]


@pytest.fixture
def dated_store(tmp_path):
    store = BatchStore(tmp_path / "store")
    for day, batch in zip(DAYS, make_stream("covcon-d", n_batches=len(DAYS), batch_size=150, seed=1)):
        store.write(day, pd.DataFrame({"x1": batch.X[:, 0], "x2": batch.X[:, 1], "label": batch.y}))
    return store.root


def test_dates_as_ids_offline_and_online_across_a_month_end(dated_store):
    tuned = ok(run_cli(dated_store, "tune", "--offline", "20261027:20261101", "--kappa", "5", "--model", "lr"))
    assert "offline window 20261027:20261101: 4 complete batches (20261027 … 20261031)" in tuned.stdout
    ok(run_cli(dated_store, "init", "--batch", "20261101"))
    stepped = ok(run_cli(dated_store, "step", "--all"))
    assert [line.split(":")[0] for line in stepped.stdout.splitlines()][:4] == [
        "batch 20261102", "batch 20261103", "batch 20261105", "batch 20261106"]
    rows = json.loads(ok(run_cli(dated_store, "history", "--json")).stdout)
    assert [r["batch"] for r in rows] == DAYS[4:]


def test_compare_on_dated_ids(dated_store):
    out = ok(run_cli(dated_store, "compare", "--store", str(dated_store), "--offline", "20261027:20261101",
                     "--kappa", "5", "--model", "lr", "--policies", "cara-t,nr,oracle", "--json"))
    rows = json.loads(out.stdout)
    assert {r["policy"] for r in rows} == {"cara-t", "nr", "oracle"}
    oracle = next(r for r in rows if r["policy"] == "oracle")
    assert all(r["strategy_cost"] >= oracle["strategy_cost"] - 1e-9 for r in rows)      # ORACLE is the least
