"""The loss estimator behind provisional Ψ̄ (cara_mlflow/estimate.py), against slow references and
against the realized Ψ̄ of real streams: close under covariate shift, blind (and not pretending
otherwise) under a label flip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from cara_mlflow.errors import InputError
from cara_mlflow.estimate import TREES, LossEstimator, estimated_psi_now, model_outputs, reference_rows
from cara_mlflow.losses import squared_loss, zero_one_loss
from cara_mlflow.simulate import make_model
from cara_mlflow.staleness import psi_from_losses
from cara_mlflow.streams import make_stream


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("with_outputs", [False, True])
def test_trees_as_json_predict_as_scikit_learn(seed, with_outputs):
    """The JSON trees walked here give scikit-learn's own predictions, before clipping."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(600, 3))
    confidence = rng.uniform(0.5, 1.0, 600) if with_outputs else None
    predictions = rng.normal(size=600) if with_outputs else None
    losses = (X[:, 0] + rng.normal(scale=0.5, size=600)) ** 2
    est = LossEstimator.fit(points=X, confidence=confidence, predictions=predictions, losses=losses)
    inputs = np.column_stack([X] + ([confidence, predictions] if with_outputs else []))
    reference = HistGradientBoostingRegressor(**TREES).fit(inputs, losses)
    Z = rng.normal(size=(200, 3))
    extra = (rng.uniform(0.5, 1.0, 200), rng.normal(size=200)) if with_outputs else (None, None)
    new_inputs = np.column_stack([Z] + ([extra[0], extra[1]] if with_outputs else []))
    np.testing.assert_allclose(est.expected_losses(Z, *extra), np.clip(reference.predict(new_inputs), 0, None),
                               rtol=1e-12, atol=1e-12)


def test_json_round_trip_and_bounds():
    rng = np.random.default_rng(1)
    X = rng.uniform(size=(500, 2))
    losses = (rng.uniform(size=500) < X[:, 0]).astype(float)
    est = LossEstimator.fit(points=X, confidence=None, predictions=None, losses=losses,
                            provenance={"version": 2, "reference": [{"batch": 7, "rows": 500}]})
    again = LossEstimator.from_dict(json.loads(json.dumps(est.to_dict())))
    assert again == est
    far = np.array([[-50.0, -50.0], [50.0, 50.0]])
    out = again.expected_losses(far, None, None)
    assert ((out >= 0) & (out <= 1)).all()              # a 0-1 loss: an expectation in [0, 1]
    assert est.provenance["rows"] == 500 and est.provenance["version"] == 2
    assert 0 <= est.provenance["fit_error"] < 0.1


def test_bad_input_is_one_line():
    with pytest.raises(InputError, match="at least 2"):
        LossEstimator.fit(points=np.zeros((1, 1)), confidence=None, predictions=None, losses=np.zeros(1))
    with pytest.raises(InputError, match="expected kind"):
        LossEstimator.from_dict({"kind": "pickle"})
    est = LossEstimator.fit(points=np.zeros((4, 1)), confidence=np.ones(4), predictions=None, losses=np.zeros(4))
    with pytest.raises(InputError, match="confidence"):
        est.expected_losses(np.zeros((2, 1)), None, None)


def test_estimated_first_term_against_pair_loops():
    rng = np.random.default_rng(2)
    Q, expected = rng.normal(size=(7, 2)), rng.uniform(size=7)
    gamma = 0.7
    K = [[math.exp(-gamma * float(((q - x) ** 2).sum())) for x in Q] for q in Q]
    paper = sum(sum(K[i][j] * expected[j] for j in range(7)) / 7 for i in range(7))
    expected_loss = sum(sum(K[i][j] * expected[j] for j in range(7)) / sum(K[i]) for i in range(7))
    assert estimated_psi_now(Q, Q, expected, gamma, scale="paper") == pytest.approx(paper, rel=1e-12)
    assert estimated_psi_now(Q, Q, expected, gamma, scale="expected-loss") == pytest.approx(expected_loss, rel=1e-12)


def test_model_outputs_and_reference_rows():
    from sklearn.linear_model import Ridge

    reg = Ridge().fit(np.arange(4.0).reshape(-1, 1), np.arange(4.0))
    predictions, confidence = model_outputs(reg, np.array([[1.0]]))
    assert confidence is None and predictions.dtype.kind == "f"
    rows = reference_rows(30_000, seed=(3, 4))
    assert len(rows) == 20_000 and (np.diff(rows) > 0).all()
    assert (rows == reference_rows(30_000, seed=(3, 4))).all()


def _estimate_vs_realized(stream: str, model: str, trained: int, batches: range, *, scale: str, seed: int = 0):
    """(realized Ψ̄, estimated Ψ̄) of the model trained on batch ``trained``, for each of ``batches``;
    the estimator fitted on batch ``trained + 1`` (the latest labelled batch it did not train on)."""
    s = make_stream(stream, n_batches=max(batches) + 1, batch_size=1000, seed=seed)
    m = make_model(model, s[trained].X, s[trained].y, seed=seed)
    ref = s[trained + 1]
    predictions, confidence = model_outputs(m, ref.X)
    est = LossEstimator.fit(points=ref.X, confidence=confidence, predictions=predictions,
                            losses=zero_one_loss(ref.y, predictions))
    then_losses = zero_one_loss(s[trained].y, m.predict(s[trained].X))
    out = []
    for t in batches:
        b = s[t]
        then = psi_from_losses(b.queries, s[trained].X, then_losses, 1.0, scale=scale)
        now = psi_from_losses(b.queries, b.X, zero_one_loss(b.y, m.predict(b.X)), 1.0, scale=scale)
        q_pred, q_conf = model_outputs(m, b.queries)
        guess = estimated_psi_now(b.queries, b.queries, est.expected_losses(b.queries, q_conf, q_pred), 1.0,
                                  scale=scale)
        out.append((now - then, guess - then))
    return np.array(out)


@pytest.mark.parametrize("model", ["lr", "rf"])
def test_close_to_realized_under_covariate_shift(model):
    """GAUSS: the concept is fixed and the inputs move. Over 3 seeds × 5 training batches × 5 later
    batches, the estimate follows the realized Ψ̄ (correlation > 0.7; measured 0.83 for both models)
    and misses it by less than the best constant guess does (the realized values' own mean, which
    no step could know; measured 0.69× for lr, 0.53× for rf)."""
    pairs = np.vstack([_estimate_vs_realized("gauss-d", model, trained, range(trained + 2, trained + 7),
                                             scale="expected-loss", seed=seed)
                       for seed in range(3) for trained in (2, 8, 17, 31, 44)])
    real, guess = pairs[:, 0], pairs[:, 1]
    assert np.corrcoef(real, guess)[0, 1] > 0.7
    assert np.abs(real - guess).mean() < 0.8 * np.abs(real - real.mean()).mean()


def test_blind_to_a_label_flip_and_does_not_pretend():
    """CovCon flips its concept at batch 10 with the inputs' law unchanged: the realized Ψ̄ of the
    model trained on batch 8 jumps; the estimate stays near the pre-flip values."""
    got = _estimate_vs_realized("covcon-d", "lr", 8, range(9, 12), scale="expected-loss")
    before, after = got[0], got[1:]
    assert (after[:, 0] > 20).all() and after[:, 0].min() > 5 * abs(before[0])   # the flip, realized
    assert (after[:, 1] < 0.25 * after[:, 0]).all()                               # not seen by the estimate


def test_regression_direct_loss_from_predictions():
    """A regressor's squared loss grows with x; the estimator (kernel coordinates + prediction)
    sees it on rows the model did not train on."""
    rng = np.random.default_rng(5)
    X = rng.uniform(-1, 1, size=(3000, 1))
    y = np.sin(3 * X[:, 0]) + rng.normal(scale=0.05 + 0.5 * (X[:, 0] > 0), size=3000)
    m = make_model("lr", X[:1000], y[:1000], seed=0, task="regression")
    predictions, confidence = model_outputs(m, X[1000:2000])
    assert confidence is None
    est = LossEstimator.fit(points=X[1000:2000], confidence=None, predictions=predictions,
                            losses=squared_loss(y[1000:2000], predictions))
    assert est.params["columns"] == {"confidence": False, "prediction": True}
    test_pred = m.predict(X[2000:])
    guess = est.expected_losses(X[2000:], None, test_pred)
    real = squared_loss(y[2000:], test_pred)
    left, right = X[2000:, 0] < 0, X[2000:, 0] > 0
    assert guess[right].mean() > 2 * guess[left].mean()
    assert guess.mean() == pytest.approx(real.mean(), rel=0.2)
