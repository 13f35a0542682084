"""Policies under a changing κ (issue 16 item 3): κ-relative thresholds, Decision.threshold, κ schedules.

* With a constant κ, CARA-T and CARA-CT tuned relative to κ̄ are the κ-blind policies bit for bit:
  decisions, offline costs, candidate thresholds and θ*, on the paper's streams and on random matrices.
* Under a varying κ, a slow per-batch reference of the rule τ_t = τ·κ_t/κ̄ (τ > 0) against the policy's
  decide() and its vectorised offline evaluation; the tuner against a dense grid of the same rule.
* ``--kappa-schedule``: the patterns, CSV files and their one-line errors; simulate and compare build
  both cost matrices with κ_t on the diagonal and the ORACLE solves with it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from click.testing import CliRunner

from cara_mlflow.cli import cli
from cara_mlflow.costs import strategy_cost
from cara_mlflow.errors import InputError
from cara_mlflow.explain import kappa_to_flip
from cara_mlflow.kappa_schedule import kappa_per_batch, parse_kappa_schedule
from cara_mlflow.oracle import solve
from cara_mlflow.policies import POLICIES, CaraCT, CaraT, Decision, Observation, make_policy, mean_kappa
from cara_mlflow.simulate import evaluate, prepare, run_policy
from cara_mlflow.tuning import PolicyTuner
from tests.reference import random_cost_matrix, strategy_cost_slow

THRESHOLDS = {"cara-t": "tau", "cara-ct": "tau_cum"}
SYNTHETIC = ["covcon-d", "covcon-s", "circle-d", "circle-s", "gauss-d", "gauss-s"]


def varying(C: np.ndarray, rng, spread: float = 3.0) -> np.ndarray:
    """C with a random κ_t per batch, between κ/spread and κ·spread."""
    C = C.copy()
    np.fill_diagonal(C, C[0, 0] * np.exp(rng.uniform(-np.log(spread), np.log(spread), C.shape[0])))
    return C


def relative_run_slow(C: np.ndarray, tau: float, kbar: float | None, cumulative: bool) -> list[int]:
    """Algorithm 1 batch by batch, the rule written out: Retrain iff score ≥ τ·κ_t/κ̄ (τ > 0), else ≥ τ."""
    strategy, tp, cum = [0], 0, 0.0
    for t in range(1, C.shape[0]):
        threshold = tau * (C[t, t] / kbar) if kbar is not None and tau > 0 else tau
        cum = cum + C[tp, t]
        score = cum if cumulative else C[tp, t]
        if score >= threshold:
            tp, cum = t, 0.0
        strategy.append(tp)
    return strategy


def taus_for(C: np.ndarray, name: str, rng, kbar: float | None) -> np.ndarray:
    """Thresholds at, and an ulp either side of, every candidate value, plus random ones and extremes."""
    v = POLICIES[name].offline_thresholds(C, **({} if kbar is None else {"kappa": kbar}))
    lo, hi = (v.min() - 1, v.max() + 1) if v.size else (-1.0, 4.0)
    return np.concatenate([v, np.nextafter(v, -np.inf), np.nextafter(v, np.inf), rng.uniform(lo, hi, 7),
                           [-1e3, 1e3, 0.0, C[0, 0]]])


# ------------------------------------------------------------------ constant κ: relative == blind


def _decisions(policy, C):
    strategy, decisions = run_policy(policy, C)
    return strategy, [(d.retrain, d.reason, d.score, d.threshold) for d in decisions]


def assert_relative_is_blind(C: np.ndarray, name: str, method: str = "exact") -> None:
    cls, key = POLICIES[name], THRESHOLDS[name]
    kappa = float(C[0, 0])
    assert mean_kappa(C) == kappa
    # the candidate thresholds and the offline evaluation, bit for bit
    assert np.array_equal(cls.offline_thresholds(C, kappa=kappa), cls.offline_thresholds(C))
    taus = taus_for(C, name, np.random.default_rng(C.shape[0]), None)
    relative, blind = cls.offline_costs(C, **{key: taus}, kappa=kappa), cls.offline_costs(C, **{key: taus})
    assert np.array_equal(relative[0], blind[0]) and np.array_equal(relative[1], blind[1])
    # θ*: the same search, the same figures; only kappa is added
    got = PolicyTuner(name, method=method).fit(C).result_
    want = PolicyTuner(name, method=method, kappa_relative=False).fit(C).result_
    assert got.params == {**want.params, "kappa": kappa}
    assert (got.cost, got.strategy, got.interval, got.details) == (want.cost, want.strategy, want.interval,
                                                                   want.details)
    # the decisions batch by batch: the same answers, reasons, scores and thresholds
    assert _decisions(make_policy(name, **got.params), C) == _decisions(make_policy(name, **want.params), C)


@pytest.mark.parametrize("name", THRESHOLDS)
@pytest.mark.parametrize("seed", range(12))
def test_relative_equals_blind_at_constant_kappa_on_random_matrices(name, seed):
    rng = np.random.default_rng(seed)
    T = 2 + seed % 11
    # κ values whose mean over T copies is not exactly κ in floating point (0.1·3 / 3 ≠ 0.1)
    kappa = [0.1, 1 / 3, 2.0, 7.7][seed % 4]
    assert_relative_is_blind(random_cost_matrix(rng, T, kappa=kappa, negative=seed % 2 == 0), name,
                             "dual_annealing" if seed == 5 else "exact")


@pytest.fixture(scope="module")
def paper_streams():
    """The paper's six synthetic streams, seeded, small: a linear model per batch, both windows' Ψ̄."""
    return {s: prepare(s, model="lr", n_batches=16, batch_size=150, n_offline=8, seed=3) for s in SYNTHETIC}


@pytest.mark.parametrize("stream", SYNTHETIC)
def test_relative_equals_blind_at_constant_kappa_on_the_paper_streams(paper_streams, stream):
    prepared = paper_streams[stream]
    upper = prepared.offline_terms.psi_bar[np.triu_indices(8, 1)]
    for kappa in (0.5 * np.median(upper), 2.0 * np.median(upper), 0.3):
        for name in THRESHOLDS:
            assert_relative_is_blind(prepared.offline_terms.cost_matrix(kappa), name)
            assert_relative_is_blind(prepared.online_terms.cost_matrix(kappa), name)
        relative = evaluate(prepared, kappa=kappa, policies=list(THRESHOLDS))
        blind = evaluate(prepared, kappa=kappa, policies=list(THRESHOLDS), kappa_relative=False)
        for r, b in zip(relative.results, blind.results):
            assert r.params == {**b.params, "kappa": kappa}
            assert (r.strategy, r.strategy_cost, r.decisions) == (b.strategy, b.strategy_cost, b.decisions)


# ------------------------------------------------------------------ varying κ: the rule, batch by batch


@pytest.mark.parametrize("name", THRESHOLDS)
@pytest.mark.parametrize("seed", range(16))
def test_relative_rule_against_a_per_batch_reference(name, seed):
    rng = np.random.default_rng(100 + seed)
    T = 2 + seed % 10
    C = varying(random_cost_matrix(rng, T, negative=seed % 3 != 0), rng)
    cls, key = POLICIES[name], THRESHOLDS[name]
    kbar = mean_kappa(C) if seed % 4 else float(rng.uniform(0.5, 5.0))   # the tuner's κ̄, or any
    taus = taus_for(C, name, rng, kbar)
    costs, strategies = cls.offline_costs(C, **{key: taus}, kappa=kbar)
    for tau, cost, vectorised in zip(taus.tolist(), costs, strategies):
        slow = relative_run_slow(C, tau, kbar, cumulative=name == "cara-ct")
        online, decisions = run_policy(make_policy(name, **{key: tau, "kappa": kbar}), C)
        assert vectorised.tolist() == slow == online, (tau, kbar)
        assert cost == pytest.approx(strategy_cost_slow(C, slow), rel=1e-12, abs=1e-12)
        for t, d in enumerate(decisions, start=1):
            assert d.threshold == (tau * (C[t, t] / kbar) if tau > 0 else tau)


@pytest.mark.parametrize("name", THRESHOLDS)
@pytest.mark.parametrize("seed", range(8))
def test_relative_candidates_are_where_the_strategy_changes(name, seed):
    """Each value v_k is the largest τ of its interval: τ in (v_{k-1}, v_k] gives v_k's strategy."""
    rng = np.random.default_rng(200 + seed)
    C = varying(random_cost_matrix(rng, 3 + seed, negative=seed % 2 == 0), rng)
    cls, key, kbar = POLICIES[name], THRESHOLDS[name], mean_kappa(C)
    v = cls.offline_thresholds(C, kappa=kbar)
    inside = np.nextafter(np.concatenate([[v[0] - 1.0], v[:-1]]), np.inf)    # just right of v_{k-1}
    middle = 0.5 * (np.concatenate([[v[0] - 1.0], v[:-1]]) + v)
    ends = cls.offline_costs(C, **{key: v}, kappa=kbar)[1]
    for other in (inside, middle):
        assert np.array_equal(cls.offline_costs(C, **{key: other}, kappa=kbar)[1], ends)
    # each score's own value: the largest τ whose threshold at the score's batch it reaches
    def threshold(tau, ratio):
        return tau * ratio if tau > 0 else tau

    for tp in range(C.shape[0] - 1):
        acc = 0.0
        for t in range(tp + 1, C.shape[0]):
            acc = acc + C[tp, t]
            score, ratio = (acc if name == "cara-ct" else C[tp, t]), C[t, t] / kbar
            x = max(x for x in v.tolist() if threshold(x, ratio) <= score)
            assert threshold(float(np.nextafter(x, np.inf)), ratio) > score


@pytest.mark.parametrize("name", THRESHOLDS)
@pytest.mark.parametrize("seed", range(5))
def test_relative_tuner_beats_a_dense_grid_and_replays(name, seed):
    rng = np.random.default_rng(300 + seed)
    C = varying(random_cost_matrix(rng, 9), rng)
    tuner = PolicyTuner(name).fit(C)
    kbar = tuner.best_params_["kappa"]
    assert kbar == pytest.approx(np.mean(np.diag(C)), rel=1e-15)
    grid = np.linspace(-2.0, 2.0 * kbar + 30.0, 3001)
    grid_best = min(strategy_cost_slow(C, relative_run_slow(C, tau, kbar, name == "cara-ct")) for tau in grid)
    assert tuner.best_cost_ <= grid_best + 1e-12
    strategy, _ = run_policy(make_policy(name, **tuner.best_params_), C)
    assert strategy == tuner.best_strategy_
    assert strategy_cost(C, strategy) == pytest.approx(tuner.best_cost_)
    lo, hi = tuner.result_.interval
    assert lo < tuner.best_params_[THRESHOLDS[name]] < hi
    assert tuner.result_.details["bounds"][1] >= kbar            # "never retrain" reaches τ_t = κ_t


# ------------------------------------------------------------------ the policies' side


def test_decision_threshold_is_what_the_score_was_compared_with():
    obs = Observation(t=4, trained_on=1, psi_bar=2.0, kappa=6.0, errors=np.zeros(50, dtype=int))
    expected = {"cara-t": 3.0, "cara-ct": 1.5, "markov": 6.0, "rent": 6.0, "cara-p": None, "nr": None,
                "oracle": None, "adwin": None, "ddm": None}
    params = {"cara-t": {"tau": 1.5, "kappa": 3.0}, "cara-ct": {"tau_cum": 1.5}, "cara-p": {"phi": 2},
              "oracle": {"retrain_at": [4]}}
    assert set(expected) == set(POLICIES)
    for name, threshold in expected.items():
        assert make_policy(name, **params.get(name, {})).decide(obs).threshold == threshold, name
    assert repr(Decision(True, "r", 1.0, 2.0)) == "Decision(retrain=True, reason='r', score=1.0)"
    assert [f.name for f in dataclasses.fields(Decision)] == ["retrain", "reason", "score", "threshold"]


def test_kappa_blind_documents_and_reprs_are_unchanged():
    p = make_policy("cara-t", tau=2.0)
    assert repr(p) == "cara-t(tau=2.0)" and p.to_dict()["params"] == {"tau": 2.0}
    q = make_policy("cara-ct", tau_cum=2.0, kappa=4.0)
    assert repr(q) == "cara-ct(tau_cum=2.0, kappa=4.0)"
    assert make_policy("cara-ct", **q.to_dict()["params"]).get_params() == {"tau_cum": 2.0, "kappa": 4.0}
    blind = make_policy("cara-t", tau=2.0).decide(Observation(t=1, trained_on=0, psi_bar=3.0, kappa=100.0))
    assert blind.retrain and blind.threshold == 2.0                       # no κ̄: κ_t is not looked at
    relative = make_policy("cara-t", tau=2.0, kappa=4.0)
    assert relative.decide(Observation(t=1, trained_on=0, psi_bar=3.0)).threshold == 2.0   # no κ_t: τ
    with pytest.raises(InputError, match="kappa: expected a finite number > 0"):
        make_policy("cara-t", tau=2.0, kappa=0.0)


def test_a_threshold_at_or_below_zero_is_not_scaled_and_decisions_stay_monotone_in_kappa():
    p = CaraT(tau=-0.5, kappa=2.0)
    for kappa in (0.1, 2.0, 50.0):
        assert p.decide(Observation(t=1, trained_on=0, psi_bar=-0.4, kappa=kappa)).threshold == -0.5
    # kappa_to_flip (explain) re-decides at other κ: the relative rule flips where τ·κ/κ̄ = Ψ̄
    obs = Observation(t=3, trained_on=2, psi_bar=3.0, kappa=5.0)
    assert kappa_to_flip(CaraT(tau=2.0, kappa=5.0).to_dict(), obs) == pytest.approx(7.5, rel=1e-9)
    assert kappa_to_flip(CaraCT(tau_cum=2.0, kappa=5.0).to_dict(), obs) == pytest.approx(7.5, rel=1e-9)
    assert kappa_to_flip(CaraT(tau=2.0).to_dict(), obs) is None            # κ-blind: no κ flips it


def test_offline_costs_take_kappa_as_a_fixed_parameter():
    C = varying(random_cost_matrix(np.random.default_rng(1), 6), np.random.default_rng(2))
    both = CaraT.offline_costs(C, tau=[0.5, 0.5], kappa=[1.0, 4.0])[1]
    one = [CaraT.offline_costs(C, tau=0.5, kappa=k)[1][0] for k in (1.0, 4.0)]
    assert np.array_equal(both, np.array(one))
    with pytest.raises(InputError, match=r"tau_cum: not a tuned parameter of the cara-t policy: expected tau \(or "
                                         r"kappa, not searched\)"):
        CaraT.offline_costs(C, tau_cum=1.0)
    with pytest.raises(InputError, match="kappa: expected a finite number > 0"):
        CaraT.offline_costs(C, tau=1.0, kappa=-1.0)


# ------------------------------------------------------------------ schedules


def test_named_patterns():
    assert parse_kappa_schedule("day-night:3:1:2").values(7).tolist() == [3, 3, 1, 1, 3, 3, 1]
    assert parse_kappa_schedule("day-night:1.5:0.5:1").values([10, 20, 30]).tolist() == [1.5, 0.5, 1.5]
    assert parse_kappa_schedule("ramp:1:3").values(5).tolist() == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert parse_kappa_schedule("ramp:2:4").values(1).tolist() == [2.0]
    assert kappa_per_batch(4.0, "ramp:1:2", 3).tolist() == [4.0, 6.0, 8.0]


@pytest.mark.parametrize("text, match", [
    ("day-night:3:1", r"expected day-night:HIGH:LOW:PERIOD \(3 values after 'day-night:'\), got 'day-night:3:1'"),
    ("day-night:3:1:0", "PERIOD in day-night:HIGH:LOW:PERIOD: expected a whole number of batches >= 1, got '0'"),
    ("day-night:3:1:2.5", "PERIOD .*: expected a whole number of batches >= 1, got '2.5'"),
    ("day-night:x:1:2", "HIGH in day-night:HIGH:LOW:PERIOD: expected a finite number > 0, got 'x'"),
    ("ramp:1:-2", "END in ramp:START:END: expected a finite number > 0, got '-2'"),
    ("ramp:inf:2", "START in ramp:START:END: expected a finite number > 0, got 'inf'"),
    ("ramp", r"expected ramp:START:END \(2 values after 'ramp:'\)"),
    ("sine:1:2", "no CSV file 'sine:1:2' and not a pattern: expected a CSV file"),
    ("", "kappa-schedule: expected a CSV file"),
])
def test_bad_patterns_are_one_line_errors(text, match):
    with pytest.raises(InputError, match=match) as err:
        parse_kappa_schedule(text)
    assert "\n" not in str(err.value) and str(err.value).startswith("kappa-schedule: ")


@pytest.mark.parametrize("content, match", [
    ("", "expected a header row with columns batch,kappa, got 'an empty file'"),
    ("id,cost\n0,1\n", "expected a header row with columns batch,kappa, got 'id,cost'"),
    ("batch,kappa\n", "no rows after the header batch,kappa"),
    ("batch,kappa\n0,1\n-1,2\n", "line 3: batch: expected a batch id"),
    ("batch,kappa\n0,1\n1,0\n", "line 3: kappa: expected a finite number > 0, got '0'"),
    ("batch,kappa\n0,1\n1,nan\n", "line 3: kappa: expected a finite number > 0, got 'nan'"),
    ("batch,kappa\n0,1\n0,2\n", "line 3: batch 0 has a second row"),
    ("batch,kappa\n0\n", "line 2: expected values for batch and kappa"),
])
def test_bad_csv_files_are_one_line_errors(tmp_path, content, match):
    path = tmp_path / "k.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=match) as err:
        parse_kappa_schedule(str(path))
    assert "\n" not in str(err.value)


def test_a_csv_names_batches_by_id_and_must_cover_the_stream(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text("note,kappa,batch\nmorning,2.5,10\n,1,11\n\nevening,4,13\n")
    schedule = parse_kappa_schedule(str(path))
    assert schedule.values([10, 11, 13]).tolist() == [2.5, 1.0, 4.0]
    assert schedule.describe() == "prices.csv"
    with pytest.raises(InputError, match=r"^kappa-schedule: batch 12 is missing from .*prices.csv: every batch of "
                                         r"the stream \(10 … 13\) needs a row batch,kappa$"):
        schedule.values([10, 11, 12, 13])
    with pytest.raises(InputError, match=r"batch 0 \(and 9 more\) is missing"):
        schedule.values(10)


def test_simulate_builds_both_matrices_with_kappa_t_and_the_oracle_solves_with_it(paper_streams):
    prepared = paper_streams["gauss-d"]
    report = evaluate(prepared, kappa=2.0, kappa_schedule="day-night:3:1:3",
                      policies=["cara-t", "cara-ct", "markov", "rent", "oracle"])
    kappa_t = 2.0 * np.where((np.arange(16) // 3) % 2 == 0, 3.0, 1.0)
    assert np.array_equal(np.diag(report.offline_matrix), kappa_t[:8])
    assert np.array_equal(np.diag(report.online_matrix), kappa_t[8:])
    oracle = solve(report.online_matrix)
    assert report["oracle"].strategy_cost == oracle.cost and report["oracle"].scpe == 0.0
    assert all(r.oracle_cost == oracle.cost and r.strategy_cost >= oracle.cost - 1e-9 for r in report.results)
    assert report["cara-t"].params["kappa"] == pytest.approx(np.mean(kappa_t[:8]))
    assert report.kappa_schedule == "day-night:3:1:3" and "κ=2 × day-night:3:1:3 (κ_t 2…6)" in report.table()
    for name in ("cara-t", "cara-ct"):   # the online run is the relative rule, batch by batch
        r = report[name]
        local = relative_run_slow(report.online_matrix, r.params[THRESHOLDS[name]], r.params["kappa"],
                                  name == "cara-ct")
        assert [8 + s for s in local] == r.strategy


def test_compare_takes_a_schedule(tmp_path):
    from cara_mlflow.compare import compare

    path = tmp_path / "k.csv"
    path.write_text("batch,kappa\n" + "".join(f"{t},{1 + t % 2}\n" for t in range(12)))
    result = compare("covcon-d", kappas=[1.0, 3.0], policies=["cara-t", "oracle"], model="lr", n_offline=4,
                     prepare_kwargs={"n_batches": 12, "batch_size": 120}, kappa_schedule=str(path))
    assert result.kappa_schedule == "k.csv"
    for (_seed, kappa), report in result.reports.items():
        assert np.diag(report.online_matrix).tolist() == [kappa * (1 + t % 2) for t in range(4, 12)]
    path.write_text("batch,kappa\n0,1\n")
    with pytest.raises(InputError, match="batch 1 .* is missing"):    # before any model is trained
        compare("covcon-d", kappas=[1.0], model="lr", prepare_kwargs={"n_batches": 12}, kappa_schedule=str(path))


def test_the_cli_options(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(cli, ["simulate", "--kappa", "5", "--kappa-schedule", "ramp:1"])
    assert bad.exit_code != 0 and "Invalid value for '--kappa-schedule': expected ramp:START:END" in bad.output
    path = tmp_path / "k.csv"
    path.write_text("batch,kappa\n0,1\n1,2\n")
    short = runner.invoke(cli, ["simulate", "--kappa", "5", "--kappa-schedule", str(path), "--n-batches", "8"])
    assert short.exit_code == 1 and "batch 2 (and 5 more) is missing" in short.output
    ok = runner.invoke(cli, ["simulate", "--kappa", "5", "--kappa-schedule", "ramp:1:2", "--n-batches", "10",
                             "--offline", "4", "--batch-size", "100", "--model", "lr", "--policies", "cara-t,oracle"])
    assert ok.exit_code == 0, ok.output
    assert "κ=5 × ramp:1:2 (κ_t 5…10)" in ok.output and "kappa=" in ok.output
    for command in ("simulate", "compare"):
        text = runner.invoke(cli, [command, "--help"]).output
        assert "--kappa-schedule" in text and "ramp:START:END" in text and "batch,kappa" in text
    assert math.isclose(mean_kappa(np.diag([1.0, 2.0])), 1.5)
