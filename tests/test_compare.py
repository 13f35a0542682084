"""`compare`: the MLflow experiment it logs, and κ sweeps that never retrain."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from cara_mlflow import simulate as simulate_module
from cara_mlflow.cli import cli
from cara_mlflow.compare import compare, parse_kappas
from cara_mlflow.tracking.comparison import log_comparison

SMALL = {"n_batches": 12, "batch_size": 150}


def test_kappa_sweep_trains_each_model_once_per_seed(monkeypatch):
    fits = []
    real = simulate_module.make_model

    def counting(model, X, y, seed, task="classification"):
        fits.append(seed)
        return real(model, X, y, seed, task)

    monkeypatch.setattr(simulate_module, "make_model", counting)
    result = compare("gauss-d", kappas=[0.5, 5.0, 50.0, 500.0], policies=["cara-t", "nr", "oracle"], seeds=[0, 1],
                     model="lr", n_offline=4, prepare_kwargs=SMALL)
    assert len(fits) == 2 * SMALL["n_batches"]           # one model per batch and seed, whatever the κs
    assert sorted(result.reports) == [(s, k) for s in (0, 1) for k in (0.5, 5.0, 50.0, 500.0)]
    # a larger κ never buys more retrains from the ORACLE
    oracle = [result.reports[(0, k)]["oracle"].n_retrains for k in (0.5, 5.0, 50.0, 500.0)]
    assert oracle == sorted(oracle, reverse=True)


def test_compare_logs_parent_and_nested_runs(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    client.create_experiment("cara-compare/covcon-d", artifact_location=str(tmp_path / "artifacts"))
    result = compare("covcon-d", kappas=[2.0, 20.0], policies=["cara-t", "nr", "oracle"], seeds=[0],
                     model="lr", n_offline=4, prepare_kwargs=SMALL)
    parent_id = log_comparison(result, uri)
    exp = client.get_experiment_by_name("cara-compare/covcon-d")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert len(children) == 3 * 2                          # (policy, κ, seed)
    for run in children:
        assert {"policy", "kappa", "seed", "model"} <= set(run.data.params)
        assert {"strategy_cost", "oracle_cost", "scpe", "query_accuracy", "n_retrains"} <= set(run.data.metrics)
        history = client.get_metric_history(run.info.run_id, "cumulative_cost")
        assert [m.step for m in history] == list(range(5, 12))    # online batches after the first
        assert len(client.get_metric_history(run.info.run_id, "decision")) == 7
    cara_t = [r for r in children if r.data.params["policy"] == "cara-t"]
    assert all("theta.tau" in r.data.params for r in cara_t)
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"summary.csv", "summary.md", "summary_by_kappa.csv", "metrics_vs_kappa.png",
            "cumulative_cost.png", "offline_cost_matrix.png"} <= artifacts
    assert client.get_run(parent_id).info.status == "FINISHED"


def test_parse_kappas_rejects_bad_lists():
    assert parse_kappas("log:1:1000:4") == pytest.approx([1, 10, 100, 1000])
    for bad in ("", "0,1", "-1", "log:1:10", "abc", "1,nan"):
        with pytest.raises(ValueError, match="kappa"):
            parse_kappas(bad)


def test_compare_cli_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = CliRunner().invoke(cli, ["compare", "--stream", "circle-s", "--kappa", "1,10", "--policies",
                                      "cara-t,nr", "--model", "lr", "--n-batches", "12", "--batch-size", "150",
                                      "--offline", "4", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output[result.output.index("["):])
    assert {(r["policy"], r["kappa"]) for r in rows} == {("cara-t", 1.0), ("cara-t", 10.0), ("nr", 1.0), ("nr", 10.0)}
    assert (tmp_path / "mlflow.db").exists() and (tmp_path / "mlartifacts").is_dir()
    assert np.isfinite([r["scpe"] for r in rows]).all()


def test_compare_cli_paper_kappa_is_the_streams_paper_implied_sweep(tmp_path, monkeypatch):
    from cara_mlflow.streams.kappa_ranges import kappa_sweep

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = CliRunner().invoke(cli, ["compare", "--stream", "gauss-d", "--kappa", "paper", "--policies", "nr",
                                      "--model", "lr", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output[result.output.index("["):])
    assert sorted(r["kappa"] for r in rows) == pytest.approx(sorted(kappa_sweep("gauss-d")))
    # the sweep's units are those of the paper's batches: another size is refused in one line
    result = CliRunner().invoke(cli, ["compare", "--stream", "gauss-d", "--kappa", "paper", "--batch-size", "100"])
    assert result.exit_code == 2 and "'paper' is the sweep for the paper's batches" in result.output
    # a store has no paper-implied range: one line, nothing logged
    store = tmp_path / "store"
    store.mkdir()
    result = CliRunner().invoke(cli, ["compare", "--store", str(store), "--kappa", "paper"])
    assert result.exit_code == 2
    assert "'paper' is the κ sweep of one of the paper's datasets" in result.output and "--store" in result.output
    assert not (store / "mlflow.db").exists()


def test_compare_cli_rejects_bad_kappa():
    result = CliRunner().invoke(cli, ["compare", "--kappa", "0,5"])
    assert result.exit_code != 0 and "kappa" in result.output


def _store_with_stream(root, n_batches=10, *, queries_file=False, query_target=True):
    """A batch store holding a small covcon-d stream (ids 0..n-1), optionally with queries files."""
    import pandas as pd

    from cara_mlflow.store import BatchStore
    from cara_mlflow.streams import make_stream

    store = BatchStore(root)
    for t, b in enumerate(make_stream("covcon-d", n_batches=n_batches, batch_size=120, seed=3)):
        data = pd.DataFrame({"x1": b.X[:, 0], "x2": b.X[:, 1], "label": b.y})
        queries = None
        if queries_file:
            queries = pd.DataFrame({"x2": b.X[:15, 1], "x1": b.X[:15, 0]})
            if query_target:
                queries["label"] = b.y[:15]
        store.write(t, data, queries=queries)
    return store


def test_store_stream_matches_the_store(tmp_path):
    from cara_mlflow.compare import store_stream

    store = _store_with_stream(tmp_path, queries_file=True)
    (store.batches_dir / "12").mkdir()                       # a batch after a gap: not online
    stream, ids = store_stream(store, offline=(2, 5))
    assert ids == list(range(2, 10)) and len(stream) == 8
    raw = store.read(4, target="label")
    # in the kernel space tune would fit on the offline window: standardised over batches 2-4
    offline = np.concatenate([store.read(i, target="label").X for i in (2, 3, 4)])
    mean, std = offline.mean(axis=0), offline.std(axis=0)
    np.testing.assert_allclose(stream[2].X, (raw.X - mean) / std, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stream[2].queries, (raw.queries - mean) / std, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stream[6].X, (store.read(8, target="label").X - mean) / std, atol=1e-12)
    np.testing.assert_array_equal(stream[2].query_labels, raw.y[:15])
    assert stream[2].query_index is None and stream.name == tmp_path.name
    assert [b.id for b in stream] == ids and stream[2].features == raw.features  # the store's batches
    _, until = store_stream(store, offline=(0, 4), until=7)
    assert until == list(range(7))
    with pytest.raises(ValueError, match="offline: 1 complete batch has an id in 9:12 "):
        store_stream(store, offline=(9, 12))
    shutil.rmtree(store.batches_dir / "3")                  # ids with a gap: the window holds 2, 4
    stream, ids = store_stream(store, offline=(2, 5))
    assert ids == [2, 4, 5, 6, 7, 8, 9] and [b.id for b in stream] == ids


def test_compare_on_a_store_logs_store_batch_ids(tmp_path):
    from mlflow import MlflowClient

    _store_with_stream(tmp_path / "shop")
    result = CliRunner().invoke(cli, ["compare", "--store", str(tmp_path / "shop"), "--offline", "2:6",
                                      "--kappa", "1,20", "--policies", "cara-t,nr,oracle", "--model", "lr",
                                      "--json"], env={"MLFLOW_TRACKING_URI": ""})
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output[result.output.index("["):])
    assert len(rows) == 3 * 2 and all(np.isfinite(r["query_accuracy"]) for r in rows)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'shop' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cara-compare/shop")
    children = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 6
    steps = [m.step for m in client.get_metric_history(children[0].info.run_id, "decision")]
    assert steps == [7, 8, 9]                                # store ids: online 6..9, decisions from 7


def test_compare_on_a_store_without_query_labels_has_no_accuracy(tmp_path):
    from cara_mlflow.compare import compare as run_compare, store_stream

    store = _store_with_stream(tmp_path, queries_file=True, query_target=False)
    stream, ids = store_stream(store, offline=(0, 4))
    result = run_compare(lambda seed: stream, kappas=[5.0], policies=["cara-t", "oracle"], model="lr",
                         n_offline=4, batch_ids=ids)
    rows = result.rows()
    assert all(np.isnan(r["query_accuracy"]) for r in rows)
    assert all(np.isfinite(r["scpe"]) for r in rows)


@pytest.mark.parametrize("args, message", [
    (["--stream", "gauss-d", "--store", "x"], "not both"),
    (["--stream", "gauss-d", "--offline", "3:10"], "starts at batch 0"),
    (["--store", "nowhere"], "no batch store"),
    (["--offline", "5:6"], "at least 2 batches"),
])
def test_compare_cli_rejects_bad_store_arguments(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["compare", "--kappa", "5", *args])
    assert result.exit_code != 0 and message in result.output, result.output   # main() maps usage errors to 1
    assert not (tmp_path / "mlflow.db").exists()
