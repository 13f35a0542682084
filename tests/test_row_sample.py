"""Ψ's first term from a row sample (:mod:`cara_mlflow.row_sample`) against the exact term and a
per-point brute force: seeds, dense and sparse features, rare and common errors; the bound, the
fall-back to every row, reproducibility; and a step on a large batch that predicts a sample.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import sparse

from cara_mlflow import row_sample
from cara_mlflow.row_sample import _group_estimate, sampled_first_term


def _brute_first_term(Q, X, losses, gamma) -> float:
    """(1/n) Σ_x ℓ(x) Σ_q exp(-γ ||q − x||²), one pair at a time."""
    Q, X = (np.asarray(A.todense()) if sparse.issparse(A) else A for A in (Q, X))
    total = 0.0
    for x, loss in zip(X, losses):
        if loss:
            total += loss * sum(np.exp(-gamma * np.sum((q - x) ** 2)) for q in Q)
    return total / X.shape[0]


def _stream(seed: int, n: int, rate: float, *, sparse_x: bool = False, n_queries: int = 300, d: int = 6):
    """Rows, queries and 0-1 losses; errors twice as likely where x0 > 0 (the drifted region)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if sparse_x:                               # one-hot-like: most entries 0
        X = sparse.csr_matrix(np.where(rng.random((n, d)) < 0.7, 0.0, X))
    Q = rng.normal(size=(n_queries, d)) * 0.9 + 0.2
    dense0 = np.asarray(X[:, 0].todense()).ravel() if sparse_x else X[:, 0]
    p = np.where(dense0 > 0, 4 * rate / 3, 2 * rate / 3)
    losses = (rng.random(n) < p).astype(np.float64)
    return Q, X, losses


def _exact(Q, X, losses, gamma) -> float:
    wrong = np.flatnonzero(losses)
    return float(losses[wrong] @ row_sample._weighted_kernel_sums(X[wrong], Q, None, gamma, 2**26)) / X.shape[0]


def test_a_group_estimate_with_every_query_is_the_brute_force_sum_over_its_rows():
    Q, X, losses = _stream(0, 400, 0.2, n_queries=30)
    rows = np.sort(np.random.default_rng(1).choice(400, 64, replace=False))
    got = _group_estimate(Q, X, rows, losses[rows].reshape(-1, 1), 0.3, np.random.default_rng(2), 10**6, 2**26)[0]
    want = _brute_first_term(Q, X[rows], losses[rows], 0.3)
    assert got == pytest.approx(want, rel=1e-12)
    assert _exact(Q, X, losses, 0.3) == pytest.approx(_brute_first_term(Q, X, losses, 0.3), rel=1e-12)


def _sampled(seed, rate, kappa_over_term, sparse_x, rel_error):
    """One estimate on a 120 000-row batch: (estimate, exact, κ, rows predicted in call order)."""
    Q, X, losses = _stream(seed, 120_000, rate, sparse_x=sparse_x)
    exact = _exact(Q, X, losses, 0.2)
    predicted = []

    def losses_of(rows):
        predicted.append(rows)
        return losses[rows]

    est = sampled_first_term(Q, X, losses_of, 0.2, kappa=kappa_over_term * exact, seed=(seed, 4), group_rows=512,
                             group_queries=64, rel_error=rel_error)
    seen = np.concatenate(predicted)
    assert np.unique(seen).size == seen.size                 # no row predicted twice
    if est.sampled:
        assert est.half_width <= rel_error * max(kappa_over_term * exact, est.value) + 1e-12
        assert est.n_predicted == seen.size < 0.5 * X.shape[0]
        np.testing.assert_array_equal(est.losses, losses[est.rows])
    else:                                                     # every row, each once, for the exact term
        assert seen.size == X.shape[0] and np.array_equal(est.losses, losses)
    return est, exact


def test_the_sampled_term_is_within_its_interval_of_the_exact_one_dense_and_sparse_rare_and_common():
    """3 seeds × dense/sparse × errors at 20% and 1% × κ below and above Ψ (bound 3% here, so that
    120 000 rows are enough to sample; 1% with κ = 20 Ψ): where a sample was taken, the exact term
    is within 1.5 half-widths always and within one in ≥ 90% of the cases; each kind samples."""
    ratios, kinds = [], set()
    for sparse_x in (False, True):
        for rate, kappa_over_term, rel_error in ((0.2, 0.5, 0.03), (0.2, 5.0, 0.03), (0.01, 5.0, 0.03),
                                                 (0.01, 20.0, 0.01)):
            for seed in (0, 1, 2):
                est, exact = _sampled(seed, rate, kappa_over_term, sparse_x, rel_error)
                if est.sampled:
                    ratios.append(abs(est.value - exact) / est.half_width)
                    kinds.add((sparse_x, rate))
    assert kinds == {(s, r) for s in (False, True) for r in (0.2, 0.01)}
    assert max(ratios) <= 1.5 and np.mean(np.array(ratios) <= 1.0) >= 0.9, ratios
    assert len(ratios) >= 12


def test_the_estimate_is_unbiased_over_seeds():
    Q, X, losses = _stream(5, 60_000, 0.1)
    exact = _exact(Q, X, losses, 0.2)
    values = [sampled_first_term(Q, X, lambda r: losses[r], 0.2, kappa=20 * exact, seed=s, group_rows=256,
                                 group_queries=32).value for s in range(60)]
    assert abs(np.mean(values) - exact) <= 3 * np.std(values, ddof=1) / np.sqrt(len(values))


def test_the_same_seed_draws_the_same_rows_and_gives_the_same_value():
    Q, X, losses = _stream(3, 50_000, 0.1)
    runs = [sampled_first_term(Q, X, lambda r: losses[r], 0.2, kappa=1e4, seed=(7, 4), group_rows=256,
                               group_queries=32) for _ in range(2)]
    assert runs[0].sampled and runs[0].value == runs[1].value and np.array_equal(runs[0].rows, runs[1].rows)


def test_rows_are_drawn_without_replacement_uniformly_and_reproducibly():
    """The draws a round at a time: no row twice, the rest is every other row, the same seed the
    same rows, and each row equally likely in each place (chi-square over 4 000 seeds)."""
    draws = row_sample._Draws(1000, np.random.default_rng(1))
    first, second = draws.next(300), draws.next(400)
    taken = np.concatenate([first, second])
    assert np.unique(taken).size == 700 and np.array_equal(np.sort(np.concatenate([taken, draws.rest()])),
                                                           np.arange(1000))
    assert draws.next(500).size == 300 and draws.next(1).size == 0        # no more than there are
    again = row_sample._Draws(1000, np.random.default_rng(1))
    assert np.array_equal(np.concatenate([again.next(300), again.next(400)]), taken)
    counts = np.zeros((3, 20))
    for seed in range(4000):
        d = row_sample._Draws(20, np.random.default_rng(seed))
        rows = np.concatenate([d.next(1), d.next(1), d.next(5)])        # places 0, 1 and 6
        counts[np.arange(3), rows[[0, 1, 6]]] += 1
    from scipy.stats import chisquare
    assert (chisquare(counts, axis=1).pvalue > 1e-3).all(), counts


def test_a_round_at_most_doubles_the_rows_predicted():
    """A tight bound on common errors: several rounds, each predicting no more rows than were
    predicted before it (a spread guessed high early does not overshoot far)."""
    Q, X, losses = _stream(6, 400_000, 0.2)
    calls = []
    kappa = 3 * _exact(Q, X, losses, 0.2)          # 1% of it needs ~15% of the rows
    est = sampled_first_term(Q, X, lambda r: calls.append(r.size) or losses[r], 0.2, kappa=kappa, seed=2,
                             group_rows=256, group_queries=64)
    assert est.sampled and len(calls) >= 4, calls
    assert all(size <= sum(calls[:i]) for i, size in enumerate(calls) if i), calls


def test_a_batch_too_small_for_a_sample_is_predicted_whole_in_one_call():
    Q, X, losses = _stream(4, 5000, 0.1)
    calls = []
    est = sampled_first_term(Q, X, lambda r: calls.append(r) or losses[r], 0.2, kappa=1.0)
    assert not est.sampled and len(calls) == 1 and np.array_equal(calls[0], np.arange(5000))


# ------------------------------------------------------------------------------ a step on a large batch


@pytest.fixture(scope="module")
def large_store(tmp_path_factory):
    """CovCon-D, 8 batches of 20 000 rows (2 000 queries), tuned on 0:5 with κ = 10⁵ (every
    decision Keep, and 1% of κ is a bound a sample meets), initialised on 5."""
    from .helpers import ok, run_cli

    root = tmp_path_factory.mktemp("large") / "store"
    ok(run_cli(root, "make-stream", "covcon-d", "--out", str(root), "--n-batches", "8", "--batch-size", "20000"))
    ok(run_cli(root, "tune", "--offline", "0:5", "--kappa", "100000", "--model", "lr"))
    ok(run_cli(root, "init", "--batch", "5"))
    return root


def test_a_step_on_a_large_batch_predicts_a_sample_and_logs_the_interval(large_store, tmp_path, cara, monkeypatch):
    """The size threshold and the groups scaled down (20 000 rows stand for millions): the
    step predicts a sample, logs ``psi_now_half_width`` and ``n_predicted``, and its Ψ_now is
    within that interval of the exact step's on a copy of the same store. Only the sampled rows
    are put into the kernel space, not the batch's 20 000."""
    from cara_mlflow.features import FeatureSpace
    from cara_mlflow.lifecycle import observe

    from .helpers import copy_store, ok, registry, runs_of

    sampled, exact = (copy_store(large_store, tmp_path / name) for name in ("sampled", "exact"))
    ok(cara(exact, "step", "--psi-method", "exact"))
    monkeypatch.setattr(observe, "ROW_SAMPLE_MIN_ROWS", 10_000)
    monkeypatch.setattr(row_sample, "GROUP_ROWS", 256)
    monkeypatch.setattr(row_sample, "GROUP_QUERIES", 128)
    transformed, transform = [], FeatureSpace.transform
    monkeypatch.setattr(FeatureSpace, "transform", lambda space, frame: transformed.append(len(frame))
                        or transform(space, frame))
    ok(cara(sampled, "step"))
    [run] = runs_of(registry(sampled), "batch", 6, "FINISHED")
    [reference] = runs_of(registry(exact), "batch", 6, "FINISHED")
    m, ref = run.metrics, reference.metrics
    assert m["n_predicted"] < m["n_data"] == 20_000 and "n_predicted" not in ref
    assert 0 < m["psi_now_half_width"] <= 0.01 * m["kappa"]
    assert abs(m["psi_now"] - ref["psi_now"]) <= 1.5 * m["psi_now_half_width"]
    assert m["psi_then"] == ref["psi_then"] and run.tags["cara.decision"] == reference.tags["cara.decision"] == "keep"
    # the queries (2 000), the model's stored rows and the sample's wrong rows: never the batch whole
    assert m["n_queries"] in transformed and 20_000 not in transformed, transformed
    assert sum(transformed) < m["n_predicted"] + 2 * m["n_queries"], transformed


def test_tune_on_large_batches_builds_the_offline_matrix_from_row_samples(large_store, tmp_path, cara, monkeypatch):
    """``tune`` with the size threshold and the groups scaled down: a note says how many first
    terms were sampled, the share of predictions and the widest interval, and every entry of the
    registered cost matrix is within 1.5 of that of the exact re-tune's (a copy of the same store,
    ``--psi-method exact``). κ is large (10⁵) so that 20 000-row batches can be sampled at 1%; the
    estimator's accuracy at tight bounds is tested in ``test_matrix_sample.py``."""
    from cara_mlflow import matrix_sample

    from .helpers import copy_store, ok, registry

    sampled, exact = (copy_store(large_store, tmp_path / name) for name in ("sampled", "exact"))
    args = ("tune", "--offline", "0:5", "--kappa", "100000", "--model", "lr")
    ok(cara(exact, *args, "--psi-method", "exact"))
    monkeypatch.setattr(matrix_sample, "ROW_SAMPLE_MIN_ROWS", 10_000)
    monkeypatch.setattr(row_sample, "GROUP_ROWS", 256)
    monkeypatch.setattr(row_sample, "GROUP_QUERIES", 128)
    out = ok(cara(sampled, *args)).stdout
    found = re.search(r"offline matrix: (\d+) of 10 first terms from row samples \((\d+)% .*widest 99% half-width "
                      r"([0-9.e+-]+)", out)
    assert found and int(found.group(1)) == 10 and int(found.group(2)) < 100, out
    widest = float(found.group(3))
    matrices = []
    for root in (sampled, exact):
        reg = registry(root)
        run = max(reg.runs.find("tune"), key=lambda r: r.start_time)
        matrices.append(np.load(reg.runs.download(run.run_id, "tuning/cost_matrix.npy", str(tmp_path / root.name))))
    upper = np.triu_indices(5, 1)
    error = np.abs(matrices[0][upper] - matrices[1][upper])
    assert 0 < error.max() <= 1.5 * widest


def test_two_loss_columns_share_rows_and_queries_and_each_meets_the_bound():
    """Two models' losses on the same rows (the gate's challenger and production): each term
    within its interval of the exact one, and their difference far closer than either."""
    Q, X, losses = _stream(8, 120_000, 0.15)
    rng = np.random.default_rng(9)
    other = np.where(rng.random(losses.size) < 0.1, 1.0 - losses, losses)       # 10% of the rows differ
    both = np.column_stack([losses, other])
    exact = np.array([_exact(Q, X, column, 0.2) for column in both.T])
    est = sampled_first_term(Q, X, lambda r: both[r], 0.2, kappa=5 * exact.max(), seed=3, group_rows=512,
                             group_queries=64)
    assert est.sampled and est.value.shape == est.half_width.shape == (2,)
    assert (np.abs(est.value - exact) <= est.half_width).all()
    assert (est.half_width <= 0.01 * 5 * exact.max()).all()
    assert abs((est.value[0] - est.value[1]) - (exact[0] - exact[1])) < 0.5 * est.half_width.min()


def test_the_gate_judges_a_large_held_out_set_on_a_sample(large_store, tmp_path, cara, monkeypatch):
    """A forced retrain, then the gate called on its held-out rows (4 000 of 20 000) both ways:
    on a sample (the size threshold and groups scaled down) each model's term is within its
    interval of the exact one, and the verdict is the exact gate's when they are apart."""
    from cara_mlflow.lifecycle import models, observe
    from cara_mlflow.lifecycle.frame import active_policy
    from cara_mlflow.store import BatchStore

    from .helpers import copy_store, ok, registry

    store = copy_store(large_store, tmp_path / "store")
    ok(cara(store, "step", "--force-retrain", "--psi-method", "exact"))
    reg = registry(store)
    doc = active_policy(reg)
    batch = BatchStore(store).read(6, target=doc.target, space=doc.space)
    challenger, production = reg.versions(trained_on=6)[0], reg.version(1)
    exact_verdict = models.gate(reg, challenger, production, batch, doc, enabled=True, method="exact")
    seen = []
    monkeypatch.setattr(observe, "ROW_SAMPLE_MIN_ROWS", 1000)
    monkeypatch.setattr(row_sample, "GROUP_ROWS", 64)
    monkeypatch.setattr(row_sample, "GROUP_QUERIES", 128)
    monkeypatch.setattr(models, "sampled_first_term", lambda *a, **k: seen.append(sampled_first_term(*a, **k))
                        or seen[-1])
    verdict = models.gate(reg, challenger, production, batch, doc, enabled=True, method="auto", kappa=doc.kappa)
    [sample] = seen
    assert sample.sampled and sample.n_predicted < 4000 == _held(reg, challenger).size
    assert np.unique(sample.rows).size == sample.rows.size          # each held-out row predicted once
    exact = np.array([_exact(batch.queries, batch.X[_held(reg, challenger)], column, doc.psi.gamma)
                      for column in _held_losses(reg, challenger, production, batch, doc).T])
    assert (np.abs(sample.value - exact) <= sample.half_width).all()
    if abs(exact[0] - exact[1]) > sample.half_width.sum():
        assert verdict == exact_verdict


def _held(reg, version):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        info, _ = reg.training_info(version, tmp)
    return np.asarray(info["holdout_index"], dtype=np.int64)


def _held_losses(reg, challenger, production, batch, doc):
    """Both models' 0-1 losses on the challenger's held-out rows, every row predicted."""
    import tempfile

    held = _held(reg, challenger)
    with tempfile.TemporaryDirectory() as tmp:
        models_ = [reg.load_model(v, tmp) for v in (challenger, production)]
        return np.column_stack([(m.predict(batch.frame.iloc[held]) != batch.y[held]).astype(float) for m in models_])


def test_a_sample_with_too_few_errors_is_not_trusted():
    """5 wrong rows in 600 000: the groups are mostly empty (a zero-width interval around 0 when
    none is seen), so no sample is accepted and every row is predicted; 0.1% errors with κ = 50 Ψ
    are sampled only once MIN_ERRORS wrong rows are in."""
    rng = np.random.default_rng(0)
    n = 600_000
    X, Q = rng.normal(size=(n, 3)), rng.normal(size=(300, 3))
    losses = np.zeros(n)
    losses[rng.choice(n, 5, replace=False)] = 1.0
    exact = _exact(Q, X, losses, 0.5)
    for seed in range(3):
        assert not sampled_first_term(Q, X, lambda r: losses[r], 0.5, kappa=2 * exact, seed=seed).sampled
    losses = (rng.random(n) < 0.001).astype(float)
    exact = _exact(Q, X, losses, 0.5)
    est = sampled_first_term(Q, X, lambda r: losses[r], 0.5, kappa=50 * exact, seed=1)
    assert est.sampled and np.count_nonzero(est.losses) >= row_sample.MIN_ERRORS
    assert abs(est.value - exact) <= est.half_width
