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
    # a line may start with the check of the promotion before it ("auto-revert v2 -> v1; batch …")
    assert [line.split(":")[0].rpartition("; ")[2] for line in stepped.stdout.splitlines()][:4] == [
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


def _late(store, day):
    """Batch ``day`` as a producer would bring it late: written whole, _SUCCESS last."""
    batch = make_stream("covcon-d", n_batches=1, batch_size=150, seed=day % 97)[0]
    BatchStore(store).write(day, pd.DataFrame({"x1": batch.X[:, 0], "x2": batch.X[:, 1], "label": batch.y}))


def test_a_late_batch_is_processed_once_tagged_drawn_and_listed(dated_store):
    from .helpers import registry, runs_of, timeline_points

    ok(run_cli(dated_store, "tune", "--offline", "20261027:20261101", "--kappa", "5", "--model", "lr"))
    ok(run_cli(dated_store, "init", "--batch", "20261101"))
    ok(run_cli(dated_store, "step", "--all"))
    _late(dated_store, 20261110)                                   # leaves 20261107–20261109 missing
    ok(run_cli(dated_store, "step"))
    status = json.loads(ok(run_cli(dated_store, "status", "--json")).stdout)
    assert status["missing"] == ["20261104", "20261107–20261109"] and status["late_batches"] == []
    assert status["position"] == 4 + 5                             # 4 batches from the window's first, then 5 steps
    assert status["next_state"] == "none pending"

    _late(dated_store, 20261104)                                   # the only pending work: a late batch
    status = json.loads(ok(run_cli(dated_store, "status", "--json")).stdout)
    assert (status["next_batch"], status["next_state"]) == (20261104, "ready (late)")
    stepped = ok(run_cli(dated_store, "step", "--all"))
    assert stepped.stderr == ""
    lines = stepped.stdout.splitlines()
    assert lines[0].startswith("batch 20261104 (late): ") and "keep (late batch" in lines[0]
    assert lines[1].startswith("nothing to do")
    reg = registry(dated_store)
    assert reg.last_batch() == 20261110                           # the commit point never moves back
    (run,) = runs_of(reg, "batch", 20261104)
    assert run.status == "FINISHED" and run.tags["cara.late"] == "true" and run.tags["cara.decision"] == "keep"
    assert 20261104 in [s for s, _ in timeline_points(reg)]
    from cara_mlflow.batch_ids import date_ms

    from .helpers import client

    timeline = reg.runs.find("timeline")[0].run_id          # each point stamped with its batch's date
    assert all(m.timestamp == date_ms(m.step) for m in client(dated_store).get_metric_history(timeline, "decision"))
    status = json.loads(ok(run_cli(dated_store, "status", "--json")).stdout)
    assert status["late_batches"] == [20261104] and status["missing"] == ["20261107–20261109"]
    assert status["position"] == 4 + 5                             # a late batch is not a tick of the clock
    text = ok(run_cli(dated_store, "status")).stdout
    assert "late         20261104" in text and "missing ids  20261107–20261109" in text
    rows = json.loads(ok(run_cli(dated_store, "history", "--json")).stdout)
    assert [r["batch"] for r in rows].count(20261104) == 1
    assert ok(run_cli(dated_store, "step")).stdout.startswith("nothing to do")   # processed once only


def test_a_late_batch_goes_before_the_batches_in_order_and_its_cost_is_kept(dated_store):
    ok(run_cli(dated_store, "tune", "--offline", "20261027:20261101", "--kappa", "5", "--model", "lr"))
    ok(run_cli(dated_store, "init", "--batch", "20261101"))
    ok(run_cli(dated_store, "step", "--all"))
    before = json.loads(ok(run_cli(dated_store, "status", "--json")).stdout)["cumulative_cost"]
    _late(dated_store, 20261104)
    _late(dated_store, 20261107)
    lines = ok(run_cli(dated_store, "step", "--all")).stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["batch 20261104 (late)", "batch 20261107"]
    rows = {r["batch"]: r for r in json.loads(ok(run_cli(dated_store, "history", "--json")).stdout)}
    assert rows[20261104]["cumulative_cost"] == pytest.approx(before + rows[20261104]["psi_bar"])
    paid = rows[20261107]["psi_bar"] if rows[20261107]["decision"] == "keep" else rows[20261107]["kappa"]
    assert rows[20261107]["cumulative_cost"] == pytest.approx(rows[20261104]["cumulative_cost"] + paid)


def test_a_malformed_late_batch_can_be_skipped(dated_store):
    ok(run_cli(dated_store, "tune", "--offline", "20261027:20261101", "--kappa", "5", "--model", "lr"))
    ok(run_cli(dated_store, "init", "--batch", "20261101"))
    ok(run_cli(dated_store, "step", "--all"))
    store = BatchStore(dated_store)
    store.write(20261104, pd.DataFrame({"x1": [0.1], "x2": [0.2], "labels": [1]}))   # no target column
    failed = run_cli(dated_store, "step")
    assert failed.returncode == 1 and "skip --batch 20261104" in failed.stderr
    assert "late batch 20261104 (it landed after a later batch was processed" in failed.stderr
    _late(dated_store, 20261109)                                    # the next in order may be skipped too
    ok(run_cli(dated_store, "skip", "--batch", "20261109", "--reason", "a holiday export"))
    wrong = run_cli(dated_store, "skip", "--batch", "20261110", "--reason", "x")
    assert wrong.returncode == 1 and "pending: 20261104; got 20261110" in wrong.stderr
    ok(run_cli(dated_store, "skip", "--batch", "20261104", "--reason", "producer wrote the wrong column"))
    status = json.loads(ok(run_cli(dated_store, "status", "--json")).stdout)
    assert status["late_batches"] == [20261104] and status["last_batch"] == 20261109
    assert status["missing"] == ["20261107–20261108"]


def test_cara_p_counts_processed_batches_on_dated_ids(dated_store):
    """CARA-P's t is the batch's count in the stream from the offline window's first batch (0):
    20261031 → 20261101 is one batch, and so is 20261103 → 20261105."""
    ok(run_cli(dated_store, "tune", "--offline", "20261027:20261101", "--kappa", "5", "--model", "lr",
               "--policy", "cara-p"))
    ok(run_cli(dated_store, "init", "--batch", "20261101"))
    params = json.loads(ok(run_cli(dated_store, "status", "--json")).stdout)["policy"]["params"]
    phi, offset = params["phi"], params["offset"]
    start = 4                                                 # 4 offline batches before the init batch
    ok(run_cli(dated_store, "step", "--all"))
    rows = [r for r in json.loads(ok(run_cli(dated_store, "history", "--json")).stdout) if r["decision"] != "init"]
    for k, row in enumerate(rows, start=1):
        t = start + k
        assert f"({t}−{offset}) mod {phi} = {(t - offset) % phi}" in row["reason"], row
        assert row["decision"] == ("retrain" if (t - offset) % phi == 0 else "keep"), row


def test_an_impossible_date_is_not_shown_missing_but_a_batch_written_there_is_not_lost(dated_store):
    ok(run_cli(dated_store, "tune", "--offline", "20261027:20261101", "--kappa", "5", "--model", "lr"))
    ok(run_cli(dated_store, "init", "--batch", "20261029"))
    ok(run_cli(dated_store, "step", "--all"))                     # 20261031 → 20261101: no real date between
    status = json.loads(ok(run_cli(dated_store, "status", "--json")).stdout)
    assert status["missing"] == ["20261030", "20261104"]
    _late(dated_store, 20261050)                                   # a producer's typo
    stepped = ok(run_cli(dated_store, "step"))
    assert stepped.stdout.startswith("batch 20261050 (late): ")
    assert "batch 20261050: not a YYYYMMDD date, while every id processed so far is one" in stepped.stderr
    status = json.loads(ok(run_cli(dated_store, "status", "--json")).stdout)
    assert status["late_batches"] == [20261050] and status["missing"] == ["20261030", "20261104"]
