"""Pooled tuning and re-tuning on the growing history (issue 21), against slow per-batch references."""

import numpy as np
import pytest

from cara_mlflow.errors import InputError
from cara_mlflow.policies import make_policy, mean_kappa
from cara_mlflow.retune import run_retuned
from cara_mlflow.simulate import run_policy
from cara_mlflow.tuning import PolicyTuner


def random_window(rng, T, kappa):
    """A cost matrix with κ on the diagonal and Ψ̄ that grows with the model's age, plus noise."""
    C = np.full((T, T), np.inf)
    for s in range(T):
        C[s, s] = kappa
        for t in range(s + 1, T):
            C[s, t] = round(rng.uniform(0.2, 0.6) * (t - s) + rng.normal(0, 0.5), 3)
    return C


def slow_cost(C, tau, kbar, cumulative=False):
    """Algorithm 1 on one window, batch by batch: Retrain iff the score ≥ τ·κ_t/κ̄ (τ > 0)."""
    tp, cost, paid = 0, C[0, 0], 0.0
    for t in range(1, C.shape[0]):
        psi = C[tp, t]
        score = paid + psi if cumulative else psi
        if score >= (tau * C[t, t] / kbar if tau > 0 else tau):
            cost, tp, paid = cost + C[t, t], t, 0.0
        else:
            cost, paid = cost + psi, paid + psi
    return cost


def brute_best(windows, kbar, cumulative=False):
    """The least summed cost over τ: every window's scores (scaled to κ̄) and the midpoints between."""
    scores = []
    for W in windows:
        T = W.shape[0]
        for s in range(T):
            run = np.cumsum(W[s, s + 1:]) if cumulative else W[s, s + 1:]
            scores += list(run * kbar / np.diag(W)[s + 1:])
    v = np.unique(scores)
    taus = np.concatenate([[v[0] - 1], (v[:-1] + v[1:]) / 2, [v[-1] + 1]])
    return min(sum(slow_cost(W, tau, kbar, cumulative) for W in windows) for tau in taus)


@pytest.mark.parametrize("policy", ["cara-t", "cara-ct"])
@pytest.mark.parametrize("seed", range(6))
def test_pooled_tuner_matches_brute_force(policy, seed):
    rng = np.random.default_rng(seed)
    own = random_window(rng, 7, kappa=2.0)
    pool = [random_window(rng, int(rng.integers(3, 9)), kappa=float(rng.choice([1.0, 2.0, 4.0]))) for _ in range(3)]
    tuner = PolicyTuner(policy).fit(own, pool=pool)
    kbar = mean_kappa(own)
    cumulative = policy == "cara-ct"
    tau = tuner.best_params_["tau_cum" if cumulative else "tau"]
    assert tuner.best_params_["kappa"] == kbar
    assert tuner.best_cost_ == pytest.approx(brute_best([own, *pool], kbar, cumulative))
    # The threshold found gives that cost, window by window, and the own window's share is reported.
    assert sum(slow_cost(W, tau, kbar, cumulative) for W in [own, *pool]) == pytest.approx(tuner.best_cost_)
    assert tuner.result_.details["own_cost"] == pytest.approx(slow_cost(own, tau, kbar, cumulative))
    assert tuner.result_.details["n_windows"] == 4


def test_pool_of_nothing_is_the_plain_tuning():
    C = random_window(np.random.default_rng(1), 8, kappa=3.0)
    plain, pooled = PolicyTuner("cara-t").fit(C), PolicyTuner("cara-t").fit(C, pool=[])
    assert (plain.best_params_, plain.best_cost_, plain.best_strategy_) == (
        pooled.best_params_, pooled.best_cost_, pooled.best_strategy_)


def test_pool_refuses_what_it_cannot_tune():
    C = random_window(np.random.default_rng(2), 5, kappa=1.0)
    with pytest.raises(InputError, match="pool: pooled history tunes a threshold"):
        PolicyTuner("cara-p").fit(C, pool=[C])
    with pytest.raises(InputError):
        PolicyTuner("cara-t").fit(C, pool=[np.ones((2, 3))])


# --------------------------------------------------------------------------- re-tuning online


def online_window(rng, T, kappa):
    """Staleness that starts growing halfway: what a 25-batch offline window may not show."""
    C = np.full((T, T), np.inf)
    for s in range(T):
        C[s, s] = kappa
        for t in range(s + 1, T):
            drifted = max(0, t - max(s, T // 2))
            C[s, t] = 0.1 * (t - s) + 0.8 * drifted + rng.normal(0, 0.05)
    return C


def test_never_retuned_is_cara_t_as_tuned():
    rng = np.random.default_rng(3)
    C_off, C_on = random_window(rng, 6, kappa=2.0), online_window(rng, 20, kappa=2.0)
    run = run_retuned("cara-t", C_off, C_on, every=0, start=6)
    policy = make_policy("cara-t", **PolicyTuner("cara-t").fit(C_off).best_params_)
    assert run.strategy == run_policy(policy, C_on, start=6)[0]
    assert len(run.thresholds) == 1


@pytest.mark.parametrize("policy", ["cara-t", "cara-ct"])
def test_retuned_run_matches_a_slow_reference(policy):
    rng = np.random.default_rng(4)
    C_off, C_on = random_window(rng, 6, kappa=3.0), online_window(rng, 16, kappa=3.0)
    pool = [random_window(rng, 5, kappa=3.0)]
    run = run_retuned(policy, C_off, C_on, every=4, pool=pool)
    kbar, cumulative = mean_kappa(C_off), policy == "cara-ct"
    assert [t for t, _ in run.thresholds] == [0, 4, 8, 12]
    # Each threshold is a least-cost one on the windows it could see: offline, pool, batches before t.
    for t, tau in run.thresholds:
        seen = [C_off, *pool] + ([C_on[:t, :t]] if t else [])
        assert sum(slow_cost(W, tau, kbar, cumulative) for W in seen) == pytest.approx(
            brute_best(seen, kbar, cumulative))
    # The run itself, batch by batch, with the threshold in force at each batch and the sum kept.
    taus = dict(run.thresholds)
    tau, tp, paid, strategy = taus[0], 0, 0.0, [0]
    for t in range(1, C_on.shape[0]):
        if t in taus and taus[t] != tau:           # a re-tune that changes τ starts afresh, as step does
            tau, paid = taus[t], 0.0
        psi = C_on[tp, t]
        score = paid + psi if cumulative else psi
        if score >= (tau * C_on[t, t] / kbar if tau > 0 else tau):
            tp, paid = t, 0.0
        else:
            paid += psi
        strategy.append(tp)
    assert run.strategy == strategy
    assert run.cost == pytest.approx(C_on[strategy, np.arange(16)].sum())


def test_retuning_never_reads_a_later_batch():
    rng = np.random.default_rng(5)
    C_off, C_on = random_window(rng, 6, kappa=2.0), online_window(rng, 24, kappa=2.0)
    base = run_retuned("cara-t", C_off, C_on, every=3)
    for cut in (4, 9, 15, 20):
        changed = C_on.copy()
        later = np.triu(np.ones_like(C_on, bool), 0)
        later[:, :cut] = False
        np.fill_diagonal(later, False)              # κ stays; every Ψ̄ of a batch >= cut is new
        changed[later] = rng.uniform(-5, 50, size=later.sum())
        other = run_retuned("cara-t", C_off, changed, every=3)
        assert other.strategy[:cut] == base.strategy[:cut]
        assert [x for x in other.thresholds if x[0] <= cut] == [x for x in base.thresholds if x[0] <= cut]


def test_retune_refuses_bad_input():
    C = random_window(np.random.default_rng(6), 5, kappa=1.0)
    with pytest.raises(InputError, match="re-tuning on the growing history tunes a threshold"):
        run_retuned("cara-p", C, C)
    with pytest.raises(InputError, match="every: expected a number of batches >= 0"):
        run_retuned("cara-t", C, C, every=-1)


# --------------------------------------------------------------------------- simulate and compare


def test_evaluate_adds_each_threshold_policy_retuned():
    from cara_mlflow.simulate import evaluate, prepare

    p = prepare("covcon-d", model="lr", n_batches=16, batch_size=150, n_offline=5)
    report = evaluate(p, kappa=4.0, policies=["cara-t", "cara-ct", "nr"], retune_every=3)
    assert [r.policy for r in report.results] == ["cara-t", "cara-ct", "nr", "cara-t-retune3", "cara-ct-retune3"]
    for name in ("cara-t", "cara-ct"):
        run = run_retuned(name, report.offline_matrix, report.online_matrix, every=3, start=5)
        r = report[f"{name}-retune3"]
        assert r.strategy == [5 + s for s in run.strategy]
        assert r.strategy_cost == pytest.approx(run.cost)
        assert r.params["retune_every"] == 3 and r.params["n_tunings"] == len(run.thresholds) == 4
        assert r.n_retrains == sum(a == "retrain" for a in r.decisions) == len(r.retrain_at)
    # Re-tuning off: the report is the one from before.
    assert [r.policy for r in evaluate(p, kappa=4.0, policies=["cara-t"]).results] == ["cara-t"]


def test_compare_logs_the_retuned_runs_in_mlflow(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from mlflow import MlflowClient

    from cara_mlflow.cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = CliRunner().invoke(cli, ["compare", "--stream", "circle-d", "--kappa", "2,20", "--policies", "cara-t,nr",
                                      "--model", "lr", "--n-batches", "14", "--batch-size", "150", "--offline", "5",
                                      "--retune-every", "4"])
    assert result.exit_code == 0, result.output
    assert "cara-t-retune4" in result.output
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("cara-compare/circle-d")
    runs = client.search_runs([exp.experiment_id])
    retuned = [r for r in runs if r.data.params.get("policy") == "cara-t-retune4"]
    assert len(retuned) == 2 and all(r.data.params["theta.retune_every"] == "4" for r in retuned)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert "mean_scpe.cara-t-retune4" in parent.data.metrics and parent.data.params["retune_every"] == "4"


def test_simulate_cli_retunes_and_refuses_it_under_a_label_delay():
    from click.testing import CliRunner

    from cara_mlflow.cli import cli

    args = ["simulate", "--stream", "gauss-s", "--kappa", "30", "--policies", "cara-t,oracle", "--model", "lr",
            "--n-batches", "14", "--batch-size", "150", "--offline", "5", "--retune-every", "3"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.output.splitlines()[2:]] == ["cara-t", "oracle", "cara-t-retune3"]
    refused = CliRunner().invoke(cli, [*args, "--label-delay", "2"])
    assert refused.exit_code == 1 and "retune-every: re-tuned runs under a label delay are not simulated" in \
        refused.output


def test_compare_refuses_retuning_under_a_label_delay_before_training():
    from cara_mlflow.compare import compare

    with pytest.raises(InputError, match="retune-every: re-tuned runs under a label delay are not simulated"):
        compare("covcon-d", kappas=[5.0], policies=["cara-t"], model="lr", n_offline=4, label_delay=2,
                retune_every=3, prepare_kwargs={"n_batches": 12, "batch_size": 150}, seeds=[0],
                progress=lambda message: pytest.fail(f"trained before refusing: {message}"))
    with pytest.raises(InputError, match="retune-every: re-tunes cara-t and cara-ct"):
        compare("covcon-d", kappas=[5.0], policies=["nr"], model="lr", n_offline=4, retune_every=3,
                prepare_kwargs={"n_batches": 12, "batch_size": 150}, seeds=[0])
