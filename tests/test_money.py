"""Money and units (issue 16): Ψ̄ on the expected-loss scale through the whole lifecycle."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cara_mlflow import lifecycle
from cara_mlflow.lifecycle.observe import _then_mass
from cara_mlflow.losses import per_sample_losses, resolve_loss
from cara_mlflow.store import BatchStore
from tests.helpers import load_production, ok, registry, the_batch_run


def nadaraya_watson_total(Q, X, losses, gamma):
    """Σ_q Σ_x K(q, x) ℓ(x) / Σ_x K(q, x), as dense matrices (small batches only)."""
    K = np.exp(-gamma * ((Q[:, None, :] - X[None, :, :]) ** 2).sum(axis=2))
    return float((K @ losses / K.sum(axis=1)).sum())


def test_a_step_on_the_expected_loss_scale_logs_both_terms_as_counted_from_every_row(fresh, cara, tmp_path):
    out = ok(cara(fresh, "tune", "--offline", "0:5", "--kappa", "3", "--policy", "nr", "--model", "lr",
                  "--psi-scale", "expected-loss"))
    assert "units: Ψ̄ and κ in expected query losses" in out.stdout
    reg = registry(fresh)
    doc = lifecycle.active_policy(reg)
    assert doc.psi.scale == "expected-loss" and doc.to_dict()["psi"]["scale"] == "expected-loss"
    ok(cara(fresh, "step"))
    run = the_batch_run(reg, 6)
    model = load_production(fresh, tmp_path / "model")
    store, loss = BatchStore(fresh), resolve_loss(doc.psi.loss)
    now, then = (store.read(b, target=doc.target, space=doc.space) for b in (6, 5))

    def losses(batch):
        return per_sample_losses(loss, batch.y, model.predict(batch.frame), "rows").astype(float)

    # the training batch (250 rows) is under the mass sample's size: its stored table is every row, exact
    assert run.metrics["psi_now"] == pytest.approx(nadaraya_watson_total(now.queries, now.X, losses(now),
                                                                         doc.psi.gamma), rel=1e-9)
    assert run.metrics["psi_then"] == pytest.approx(nadaraya_watson_total(now.queries, then.X, losses(then),
                                                                          doc.psi.gamma), rel=1e-9)
    # in wrong answers: between 0 and the number of queries
    assert 0 < run.metrics["psi_now"] < len(now.queries)
    status = json.loads(ok(cara(fresh, "status", "--json")).stdout)
    assert status["policy"]["kappa"] == 3


def test_a_version_from_before_mass_samples_takes_the_current_batch_for_its_mass():
    points = np.zeros((4, 2))          # the current batch's rows (or its queries, before its labels)
    legacy = pd.DataFrame({"x": [1.0], "loss": [1.0]})
    assert _then_mass("expected-loss", legacy, lambda: points, 8) == {"mass_points": points, "mass_weight": 2.0}
    sampled = legacy.assign(mass_weight=[3.0])
    # the batch's rows are asked for only when they stand in (a large batch is not transformed for nothing)
    never = lambda: pytest.fail("the current batch's rows were asked for")  # noqa: E731
    assert _then_mass("expected-loss", sampled, never, 8)["mass_weight"].tolist() == [3.0]
    assert _then_mass("paper", sampled, never, 8) == {} == _then_mass("paper", legacy, never, 8)


def test_a_bad_psi_scale_in_the_policy_is_refused_in_one_line():
    from cara_mlflow.errors import InputError
    from cara_mlflow.policy_doc import PolicyDocument

    doc = {"format": 1, "name": "m", "policy": "nr", "params": {}, "kappa": 5.0,
           "psi": {"gamma": 1.0, "scale": "dollars"}, "target": "label", "features": ["x"],
           "trainer": {"model": "lr"}}
    with pytest.raises(InputError, match="field 'psi.scale' is 'dollars'; expected 'paper' or 'expected-loss'"):
        PolicyDocument.from_dict(doc)


# -- κ from money -------------------------------------------------------------------------------------

def test_money_gives_kappa_and_refuses_half_a_price_in_one_line():
    from cara_mlflow.errors import InputError
    from cara_mlflow.money import Money

    assert Money.parse(retrain_cost="40", error_cost="2").kappa(()) == 20.0
    assert Money.parse(retrain_cost=None, error_cost=None) is None
    timed = Money.parse(retrain_cost="measured", error_cost="2", price_per_hour="6")
    assert timed.kappa([1200.0]) == pytest.approx(1.0)                 # 20 min at 6/hour = 2 = one error
    assert timed.kappa([10.0, 1e6, 20.0, 30.0, 40.0, 50.0]) == pytest.approx(40 * 6 / 3600 / 2)  # last 5's median
    for kwargs, message in [(dict(retrain_cost="measured", error_cost="2"), "--price-per-hour:"),
                            (dict(retrain_cost="40", error_cost="2", price_per_hour="6"), "only with"),
                            (dict(retrain_cost="-3", error_cost="2"), "--retrain-cost: expected an amount > 0"),
                            (dict(retrain_cost=None, error_cost="2"), "--retrain-cost: κ from money needs")]:
        with pytest.raises(InputError, match=message):
            Money.parse(**kwargs)


class FakeClock:
    """Each timed training takes the next of ``durations`` seconds (calls come in start/end pairs)."""

    def __init__(self, durations):
        self.durations, self.now, self.calls = list(durations), 1000.0, 0

    def __call__(self) -> float:
        self.calls += 1
        if self.calls % 2 == 0:
            self.now += self.durations.pop(0)
        return self.now


def test_a_fixed_retrain_cost_gives_kappa_in_wrong_answers_and_every_batch_logs_the_money(fresh, cara):
    out = ok(cara(fresh, "tune", "--offline", "0:5", "--retrain-cost", "40", "--error-cost", "2", "--policy", "nr",
                  "--model", "lr"))
    assert "κ = 20 wrong answers per retrain (retrain cost 40 ÷ error cost 2)" in out.stdout
    doc = lifecycle.active_policy(registry(fresh))
    assert (doc.kappa, doc.psi.scale, doc.money.retrain_cost) == (20.0, "expected-loss", 40.0)
    ok(cara(fresh, "step", "--all"))
    rows = [r for r in json.loads(ok(cara(fresh, "history", "--json")).stdout) if r["batch"] > 5]
    assert {r["kappa"] for r in rows} == {20.0}
    # money counts from the first batch decided with an error cost (the init was under --kappa)
    assert [r["spend"] for r in rows] == pytest.approx(list(2 * np.cumsum([r["psi_bar"] for r in rows])))
    status = json.loads(ok(cara(fresh, "status", "--json")).stdout)
    assert status["spend"]["total"] == pytest.approx(2 * sum(r["psi_bar"] for r in rows))
    assert status["spend"]["recent"] == pytest.approx(status["spend"]["total"])
    assert status["spend"]["last_batches"] == len(rows) == 8
    assert "spend        " in ok(cara(fresh, "status")).stdout


def test_a_measured_retrain_cost_follows_the_median_of_the_last_five_trainings(fresh, cara, monkeypatch):
    from cara_mlflow.lifecycle import training

    # offline trainings take 10..50 s, the forced retrain at batch 6 1000 s; priced at 1 per second
    monkeypatch.setattr(training, "clock", FakeClock([10, 20, 30, 40, 50, 1000]))
    ok(cara(fresh, "tune", "--offline", "0:5", "--retrain-cost", "measured", "--price-per-hour", "3600",
            "--error-cost", "1", "--policy", "nr", "--model", "lr"))
    doc = lifecycle.active_policy(registry(fresh))
    assert doc.kappa == 30.0 and list(doc.training_seconds) == [10, 20, 30, 40, 50]
    # the init's training ran under the policy tuned before: the re-tuned policy starts from its own
    ok(cara(fresh, "step", "--force-retrain"))                          # κ_6 from 10..50: 30
    ok(cara(fresh, "step"))                                             # κ_7 from 20..50, 1000: 40
    rows = {r["batch"]: r for r in json.loads(ok(cara(fresh, "history", "--json")).stdout)}
    assert (rows[6]["kappa"], rows[7]["kappa"]) == (30.0, 40.0)
    assert rows[6]["cumulative_cost"] == pytest.approx(rows[5]["cumulative_cost"] + 30.0)
    state = json.loads(ok(cara(fresh, "status", "--json")).stdout)
    assert state["kappa_next"] == 40.0


# -- cold start: rent from batch 0 ------------------------------------------------------------------

def test_rent_starts_on_day_one_from_batch_0_with_no_offline_history(tmp_path, cara):
    from click.testing import CliRunner

    from cara_mlflow.cli import cli

    store = tmp_path / "store"
    made = CliRunner().invoke(cli, ["make-stream", "covcon-d", "--out", str(store), "--n-batches", "9",
                                    "--batch-size", "250"])
    assert made.exit_code == 0, made.output
    out = ok(cara(store, "tune", "--policy", "rent", "--kappa", "0.6", "--model", "lr"))
    assert "rent: nothing to tune" in out.stdout and "window 0:1" in out.stdout
    doc = lifecycle.active_policy(registry(store))
    assert doc.offline == (0, 1) and doc.params == {} and doc.tuning["method"] == "none"
    assert not [r for r in registry(store).runs.find("tune-train")]          # no offline model trained
    ok(cara(store, "init", "--batch", "0"))                                 # the same batch
    ok(cara(store, "step", "--all", "--no-gate"))
    rows = [r for r in json.loads(ok(cara(store, "history", "--json")).stdout) if r["batch"] > 0]
    paid, expected, scores = 0.0, [], []
    for r in rows:                       # the rule, by hand: retrain once the staleness paid reaches κ
        paid += r["psi_bar"]
        expected.append("retrain" if paid >= 0.6 else "keep")
        scores.append(paid)
        paid = 0.0 if expected[-1] == "retrain" else paid
    assert [r["decision"] for r in rows] == expected
    assert {"keep", "retrain"} <= set(expected), expected
    # the staleness paid carries over from step to step (each step is a new process reading the state)
    reg = registry(store)
    logged = [the_batch_run(reg, r["batch"]).metrics["score"] for r in rows]
    assert logged == pytest.approx(scores)
    assert any(score > r["psi_bar"] + 1e-9 for score, r in zip(scores, rows)), "no two keeps in a row"


def test_tune_windows_last_n_and_too_few_batches(fresh, cara):
    out = cara(fresh, "tune", "--offline", "last:40", "--kappa", "5", "--model", "lr")
    assert out.returncode == 1 and "offline: last:40 needs 40 complete batches" in out.stderr
    assert lifecycle.active_policy(registry(fresh)).version == 1                  # nothing registered
    ok(cara(fresh, "tune", "--offline", "last:4", "--kappa", "5", "--model", "lr", "--policy", "cara-t"))
    assert lifecycle.active_policy(registry(fresh)).offline == (10, 14)
    bad = cara(fresh, "tune", "--offline", "7:8", "--kappa", "5", "--policy", "cara-t")
    assert bad.returncode == 1 and "expected at least 2" in bad.stderr
    measured = cara(fresh, "tune", "--policy", "rent", "--retrain-cost", "measured", "--price-per-hour", "6",
                    "--error-cost", "2")
    assert measured.returncode == 1 and "trains no offline model" in measured.stderr


def test_with_money_from_day_one_the_first_model_is_money_spent(tmp_path, cara):
    from click.testing import CliRunner

    from cara_mlflow.cli import cli

    store = tmp_path / "store"
    assert CliRunner().invoke(cli, ["make-stream", "covcon-d", "--out", str(store), "--n-batches", "3",
                                    "--batch-size", "200"]).exit_code == 0
    ok(cara(store, "tune", "--policy", "rent", "--retrain-cost", "4", "--error-cost", "2", "--model", "lr"))
    ok(cara(store, "init", "--batch", "0"))
    ok(cara(store, "step", "--all", "--no-gate"))
    rows = json.loads(ok(cara(store, "history", "--json")).stdout)
    assert rows[0]["spend"] == 4.0 and rows[0]["kappa"] == 2.0            # κ = 4 / 2 wrong answers
    paid = [2 * r["psi_bar"] if r["decision"] == "keep" else 4.0 for r in rows[1:]]
    assert [r["spend"] for r in rows[1:]] == pytest.approx(list(4.0 + np.cumsum(paid)))
    text = ok(cara(store, "status")).stdout
    assert "κ=2 (wrong answers per retrain)" in text
