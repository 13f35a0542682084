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
    class Batch:
        X, n_rows = np.zeros((4, 2)), 4

    legacy = pd.DataFrame({"x": [1.0], "loss": [1.0]})
    assert _then_mass("expected-loss", legacy, Batch, 8) == {"mass_points": Batch.X, "mass_weight": 2.0}
    sampled = legacy.assign(mass_weight=[3.0])
    assert _then_mass("expected-loss", sampled, Batch, 8)["mass_weight"].tolist() == [3.0]
    assert _then_mass("paper", sampled, Batch, 8) == {}


def test_a_bad_psi_scale_in_the_policy_is_refused_in_one_line():
    from cara_mlflow.errors import InputError
    from cara_mlflow.policy_doc import PolicyDocument

    doc = {"format": 1, "name": "m", "policy": "nr", "params": {}, "kappa": 5.0,
           "psi": {"gamma": 1.0, "scale": "dollars"}, "target": "label", "features": ["x"],
           "trainer": {"model": "lr"}}
    with pytest.raises(InputError, match="field 'psi.scale' is 'dollars'; expected 'paper' or 'expected-loss'"):
        PolicyDocument.from_dict(doc)
