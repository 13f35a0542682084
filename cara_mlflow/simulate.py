"""Algorithm 1 over a stream: tune every policy offline, run it online, score it (§4.4, §7.5).

One model is trained per batch and every model predicts its later batches once;
all policies share those models, predictions and cost matrices. Per policy the
report gives the online strategy cost, its SCPE against the ORACLE, the
prequential query accuracy, the number of Retrain decisions and the decisions.

Prequential accuracy (§7.5, "test-then-train"): the queries Q_t are answered by
the model in use *before* the decision at t, i.e. ``M_{s_{t-1}}``. The first
online batch has no earlier online model (its model is trained on it), so the
average runs over the online batches after the first (26–99 by default).

Under a κ schedule (:mod:`cara_mlflow.kappa_schedule`) both cost matrices carry κ_t on their
diagonal: the thresholds are tuned relative to the offline window's mean κ and scaled by κ_t
online, MARKOV and rent compare with κ_t, and the ORACLE solves with κ_t.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from . import jsonout, validate
from .costs import (
    StalenessTerms,
    check_kappa,
    predict_later,
    retrains_from_strategy,
    scpe,
    staleness_terms,
    strategy_cost,
)
from .errors import InputError
from .kappa_schedule import KappaSchedule, kappa_per_batch, parse_kappa_schedule
from .losses import per_sample_losses, resolve_loss
from .matrix_sample import sampled_staleness_terms, samples_matrix
from .names import MODEL_NAMES
from .oracle import solve
from .policies import POLICIES, Observation, make_policy, mean_kappa
from .retune import run_retuned
from .staleness import DEFAULT_GAMMA, resolve_gamma, stack_rows
from .tuning import PolicyTuner

__all__ = ["MODELS", "make_model", "ConstantModel", "run_policy", "PolicyResult", "Report", "Prepared",
           "prepare", "evaluate", "simulate"]


def _random_forest(seed: int):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(random_state=seed)


def _sgd_logistic(seed: int):
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(loss="log_loss", random_state=seed)


def _gradient_boosting(seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(random_state=seed)


#: Model names users type (DESIGN.md): a factory ``seed -> unfitted estimator``.
MODELS: dict[str, Callable[[int], object]] = {"rf": _random_forest, "lr": _sgd_logistic,
                                              "hgb": _gradient_boosting}
assert tuple(MODELS) == MODEL_NAMES, "simulate.MODELS must define exactly names.MODEL_NAMES, in order"


class ConstantModel:
    """Predicts one label: stands in for a classifier on a batch with a single class.

    >>> ConstantModel(1).predict(np.zeros((2, 3)))
    array([1, 1])
    """

    def __init__(self, label):
        self.label = label

    def predict(self, X):
        return np.full(np.shape(X)[0], self.label)


def make_model(model: str | Callable[[int], object], X: np.ndarray, y: np.ndarray, seed: int,
               task: str = "classification"):
    """Fit a model by name (``rf``, ``lr``, ``hgb``) or factory ``seed -> estimator`` on one batch;
    a name gives the task's estimator (regression: the default trainer's regressors).

    >>> m = make_model("lr", np.array([[0.0], [1.0], [0.1], [0.9]]), np.array([0, 1, 0, 1]), seed=0)
    >>> m.predict(np.array([[0.0], [1.0]])).tolist()
    [0, 1]
    >>> type(make_model("hgb", np.zeros((4, 1)), np.arange(4.0), seed=0, task="regression")).__name__
    'HistGradientBoostingRegressor'
    """
    if isinstance(model, str):
        if model not in MODELS:
            raise InputError(f"model: unknown model {model!r}: expected one of {', '.join(MODELS)} or a factory")
        factory = MODELS[model]
    else:
        factory = model
    if task == "regression":
        if isinstance(model, str):
            from .train import TrainerSettings, build_estimator

            return build_estimator(TrainerSettings(model=model, seed=seed), "regression").fit(X, y)
        return factory(seed).fit(X, y)
    classes = np.unique(y)
    if classes.size < 2:
        # Classifiers refuse a single class; the model that learnt it predicts it.
        return ConstantModel(classes[0])
    return factory(seed).fit(X, y)


def run_policy(policy, C: np.ndarray, *, start: int = 0,
               errors: Callable[[int, int], np.ndarray] | None = None) -> tuple[list[int], list]:
    """Run a policy through a window (Algorithm 1); return the local strategy and decisions.

    The window's first batch trains the initial model; each later batch ``t``
    gives the policy its Ψ̄ = ``C[s, t]`` for the model in use, κ_t = ``C[t, t]``
    and, if ``errors`` is given, ``errors(s, t)``: the model's per-sample 0/1
    errors on batch t (local indices). ``reset`` follows every Retrain, as a
    retrain always lands here.

    >>> from cara_mlflow.policies import make_policy
    >>> C = np.array([[1.0, 0.5, 2.0], [np.inf, 1.0, 0.1], [np.inf, np.inf, 1.0]])
    >>> strategy, decisions = run_policy(make_policy("cara-t", tau=1.0), C)
    >>> strategy, [d.action for d in decisions]
    ([0, 0, 2], ['keep', 'retrain'])
    """
    T = C.shape[0]
    tp = 0
    strategy = [0]
    decisions = []
    for t in range(1, T):
        obs = Observation(t=start + t, trained_on=start + tp, psi_bar=float(C[tp, t]),
                          errors=None if errors is None else errors(tp, t), kappa=float(C[t, t]))
        decision = policy.decide(obs)
        decisions.append(decision)
        if decision.retrain:
            tp = t
            policy.reset(start + t)
        strategy.append(tp)
    return strategy, decisions


@dataclass
class PolicyResult:
    """One policy's online run."""

    policy: str
    params: dict
    offline_cost: float | None
    strategy_cost: float
    oracle_cost: float
    scpe: float
    query_accuracy: float
    n_retrains: int
    retrain_at: list[int]
    decisions: list[str]
    strategy: list[int] = field(repr=False)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("strategy")
        return out


@dataclass
class Report:
    """Everything :func:`simulate` measured; ``results`` has one :class:`PolicyResult` per policy.

    ``kappa`` is the retraining cost given; under a ``kappa_schedule`` (its name) κ_t is ``kappa``
    times the schedule's value, on the diagonals of ``offline_matrix`` and ``online_matrix``.
    """

    stream: str
    kappa: float
    seed: int
    model: str
    gamma: float
    n_offline: int
    n_batches: int
    results: list[PolicyResult]
    offline_matrix: np.ndarray = field(repr=False)
    online_matrix: np.ndarray = field(repr=False)
    timings: dict = field(default_factory=dict)
    kappa_schedule: str | None = None

    def __getitem__(self, policy: str) -> PolicyResult:
        for r in self.results:
            if r.policy == policy:
                return r
        raise KeyError(policy)

    def to_json(self) -> str:
        """A JSON list with one object per policy."""
        return jsonout.dumps([r.to_dict() for r in self.results], indent=2)

    def table(self) -> str:
        """The policy table as fixed-width text."""
        w = max([8, *(len(r.policy) for r in self.results)])
        head = f"{'policy':<{w}} {'cost':>10} {'oracle':>10} {'SCPE %':>9} {'query acc':>9} {'retrains':>8}  params"
        kappa = f"κ={self.kappa:g}"
        if self.kappa_schedule is not None:
            k = np.concatenate([np.diag(self.offline_matrix), np.diag(self.online_matrix)])
            kappa += f" × {self.kappa_schedule} (κ_t {k.min():.4g}…{k.max():.4g})"
        lines = [f"{self.stream}  {kappa}  seed={self.seed}  model={self.model}  γ={self.gamma:.4g}  "
                 f"offline 0–{self.n_offline - 1}, online {self.n_offline}–{self.n_batches - 1}", head]
        for r in self.results:
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in r.params.items())
            lines.append(f"{r.policy:<{w}} {r.strategy_cost:>10.3f} {r.oracle_cost:>10.3f} {r.scpe:>9.2f} "
                         f"{r.query_accuracy:>9.3f} {r.n_retrains:>8d}  {params}")
        return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and len(v) > 6:
        return f"[{', '.join(map(str, v[:6]))}, … ({len(v)})]"
    return str(v)


@dataclass
class Prepared:
    """The expensive, κ-independent part of a simulation, shared by every policy and every κ.

    One model per batch, their predictions, both windows' Ψ terms (κ only sets the diagonal of
    the cost matrices), the detectors' per-sample errors and the predicted query labels.
    """

    stream: str
    seed: int
    model: str
    gamma: float
    n_offline: int
    n_batches: int
    offline_terms: StalenessTerms = field(repr=False)
    online_terms: StalenessTerms = field(repr=False)
    errors: list = field(repr=False)          # errors[t'][t - t']: model t' on batch t (online, local)
    query_hits: list = field(repr=False)      # query_hits[t'][t - t']: its answers to Q_t were right
    timings: dict = field(default_factory=dict)
    # keep_models=True (the label-delay runs, cara_mlflow.label_delay): the online window's models and
    # batches, the loss and the Ψ method, for estimating Ψ̄ before the labels; None otherwise.
    models: list | None = field(default=None, repr=False)
    batches: list | None = field(default=None, repr=False)
    loss: object = "zero_one"
    psi_method: str = "auto"


def prepare(stream, *, n_offline: int = 25, model: str | Callable[[int], object] = "rf", seed: int = 0,
            gamma=DEFAULT_GAMMA, loss="zero_one", n_batches: int = 100, batch_size: int = 1000,
            psi_method: str = "auto", progress: Callable[[str], None] | None = None,
            task: str = "classification", keep_models: bool = False, offline_kappa: float | None = None) -> Prepared:
    """Train one model per batch and compute everything a policy evaluation needs, once.

    Arguments as :func:`simulate`; ``task="regression"`` trains regressors (give a regression
    ``loss``) and leaves the query accuracy undefined (NaN). ``keep_models=True`` keeps the online
    window's models and batches (``models``, ``batches``), which :mod:`cara_mlflow.label_delay`
    needs to estimate Ψ̄ before the labels; nothing else changes. ``offline_kappa`` (the smallest κ
    the matrices will be used with): the offline window's first terms come from row samples when its
    batches are large (:func:`cara_mlflow.matrix_sample.samples_matrix`), each entry within 1% of
    max(``offline_kappa``, mean |Ψ̄|); ``timings["offline_predicted_share"]`` (a fraction, not
    seconds) then holds the share of the exact path's row predictions made.

    >>> p = prepare("gauss-d", model="lr", n_batches=8, batch_size=100, n_offline=3)
    >>> p.offline_terms.psi_bar.shape, p.online_terms.psi_bar.shape
    ((3, 3), (5, 5))
    """
    from .streams import make_stream

    name = stream if isinstance(stream, str) else getattr(stream, "name", "custom")
    batches = (list(make_stream(stream, n_batches=n_batches, batch_size=batch_size, seed=seed))
               if isinstance(stream, str) else list(stream))
    T = len(batches)
    if not 2 <= n_offline <= T - 2:
        raise InputError(f"n_offline: expected between 2 and {T - 2} (the stream has {T} batches), got {n_offline}")
    note = progress or (lambda message: None)
    timings: dict[str, float] = {}

    clock = time.perf_counter()
    note(f"training {T} models")
    models = [make_model(model, b.X, b.y, seed, task) for b in batches]
    timings["training"] = time.perf_counter() - clock

    g = resolve_gamma(gamma, stack_rows([b.X for b in batches[:n_offline]]))
    windows = {"offline": (batches[:n_offline], models[:n_offline]),
               "online": (batches[n_offline:], models[n_offline:])}
    terms, errors, query_hits = {}, [], []
    timings["predictions"] = timings["kernels"] = 0.0
    for key, (window, window_models) in windows.items():
        note(f"predicting and building the {key} cost matrix")
        clock = time.perf_counter()
        online = key == "online"
        if not online and offline_kappa is not None and samples_matrix(psi_method, "paper",
                                                                       [b.X.shape[0] for b in window]):
            terms[key], share = _sampled_offline(window, window_models, g, loss, offline_kappa, psi_method, seed)
            timings["offline_predicted_share"] = share
            timings["kernels"] += time.perf_counter() - clock
            continue
        # Online models also answer the queries: stack them under the data (-S) or
        # reuse the data predictions (-D, queries are rows of X).
        extra = [b.queries if (online and b.query_index is None) else b.X[:0] for b in window]
        preds = predict_later(window_models, [stack_rows([b.X, q]) for b, q in zip(window, extra)])
        n = [b.X.shape[0] for b in window]
        data_preds = [[p[:n[tp + k]] for k, p in enumerate(row)] for tp, row in enumerate(preds)]
        timings["predictions"] += time.perf_counter() - clock
        clock = time.perf_counter()
        terms[key] = staleness_terms([(b.X, b.y) for b in window], queries=[b.queries for b in window],
                                     predictions=data_preds, gamma=g, loss=loss, method=psi_method,
                                     seed=(seed, key == "online"))
        timings["kernels"] += time.perf_counter() - clock
        if online:
            query_hits = [[None if b.query_labels is None or task == "regression" else
                           (p[n[tp + k]:] if b.query_index is None else p[b.query_index]) == b.query_labels
                           for k, (p, b) in enumerate(zip(row, window[tp:]))]
                          for tp, row in enumerate(preds)]
            errors = [[(p != b.y).astype(np.int8) for p, b in zip(row, window[tp:])]
                      for tp, row in enumerate(data_preds)]
    model_name = model if isinstance(model, str) else getattr(model, "__name__", "custom")
    return Prepared(stream=name, seed=seed, model=model_name, gamma=g, n_offline=n_offline, n_batches=T,
                    offline_terms=terms["offline"], online_terms=terms["online"], errors=errors,
                    query_hits=query_hits, timings=timings, loss=loss, psi_method=psi_method,
                    models=models[n_offline:] if keep_models else None,
                    batches=batches[n_offline:] if keep_models else None)


def _sampled_offline(window, models, g: float, loss, kappa: float, method: str, seed) -> tuple[StalenessTerms, float]:
    """The offline window's terms from row samples (:mod:`cara_mlflow.matrix_sample`), and the
    fraction of the exact path's row predictions they took."""
    loss_fn = resolve_loss(loss)

    def losses(model, b, rows=slice(None)) -> np.ndarray:
        return per_sample_losses(loss_fn, b.y[rows], np.asarray(model.predict(b.X[rows])))

    result = sampled_staleness_terms([b.X for b in window],
                                     lambda t, rows: np.column_stack([losses(m, window[t], rows) for m in models[:t]]),
                                     lambda t: losses(models[t], window[t]), queries=[b.queries for b in window],
                                     gamma=g, kappa=kappa, method=method, seed=(seed, False))
    return result.terms, result.n_predicted / result.n_exact


def evaluate(prepared: Prepared, *, kappa: float, policies: Sequence[str] | None = None,
             tuning_method: str = "exact", progress: Callable[[str], None] | None = None,
             kappa_schedule: str | KappaSchedule | None = None, batch_ids: Sequence[int] | None = None,
             kappa_relative: bool = True, retune_every: int = 0) -> Report:
    """Tune and run each policy at one κ on prepared models and matrices; nothing is retrained.

    ``kappa_schedule`` (:mod:`cara_mlflow.kappa_schedule`): κ_t = ``kappa`` × its value at each
    batch, named by ``batch_ids`` (default: the positions 0…T−1). ``kappa_relative=False`` tunes
    CARA-T's and CARA-CT's thresholds κ-blind (:class:`~cara_mlflow.tuning.PolicyTuner`).
    ``retune_every`` N > 0 also runs each threshold policy re-tuned every N batches on the history
    seen so far (:func:`cara_mlflow.retune.run_retuned`, exact and κ-relative), as
    ``<policy>-retune<N>``.

    >>> p = prepare("covcon-d", model="lr", n_batches=12, batch_size=200, n_offline=4)
    >>> [round(evaluate(p, kappa=k, policies=["nr"])["nr"].strategy_cost, 3) > 0 for k in (1, 50)]
    [True, True]
    >>> r = evaluate(p, kappa=10, policies=["cara-t", "oracle"], kappa_schedule="ramp:1:2")
    >>> np.diag(r.online_matrix)[[0, -1]].tolist(), r["cara-t"].params["kappa"]
    ([13.636363636363637, 20.0], 11.363636363636363)
    >>> [r.policy for r in evaluate(p, kappa=10, policies=["cara-t", "nr"], retune_every=3).results]
    ['cara-t', 'nr', 'cara-t-retune3']
    """
    policies = validate.policy_names(policies)
    kappa_value = float(check_kappa(kappa, 1)[0])
    note = progress or (lambda message: None)
    p = prepared
    schedule = None if kappa_schedule is None else parse_kappa_schedule(kappa_schedule)
    ids = p.n_batches if batch_ids is None else batch_ids
    if not isinstance(ids, int) and len(ids) != p.n_batches:
        raise InputError(f"batch_ids: expected {p.n_batches} ids (one per batch of the stream), got {len(ids)}")
    kappas = kappa_per_batch(kappa_value, schedule, ids)
    C_off = p.offline_terms.cost_matrix(kappas[:p.n_offline])
    C_on = p.online_terms.cost_matrix(kappas[p.n_offline:])
    oracle = solve(C_on)
    results = []
    clock = time.perf_counter()
    for policy_name in policies:
        note(f"tuning and running {policy_name}")
        if POLICIES[policy_name].follows_oracle:  # the ORACLE of the online window, not tuned offline
            params = {"retrain_at": [p.n_offline + t for t in oracle.retrain_at[1:]]}
            offline_cost = None
        else:
            tuned = PolicyTuner(policy_name, method=tuning_method, seed=p.seed,
                                kappa_relative=kappa_relative).fit(C_off)
            # A drift detector has no offline cost: a cost matrix has no per-sample errors.
            params = tuned.best_params_
            offline_cost = tuned.best_cost_ if POLICIES[policy_name].from_costs() else None
        strategy, _ = run_policy(make_policy(policy_name, **params), C_on, start=p.n_offline,
                                 errors=lambda tp, t: p.errors[tp][t - tp])
        results.append(_result(p, policy_name, params, offline_cost, C_on, oracle, strategy))
    results += _retuned_results(p, policies, C_off, C_on, oracle, check_retune(policies, retune_every))
    timings = {**p.timings, "policies": time.perf_counter() - clock}
    return Report(stream=p.stream, kappa=kappa_value, seed=p.seed, model=p.model, gamma=p.gamma,
                  n_offline=p.n_offline, n_batches=p.n_batches, results=results, offline_matrix=C_off,
                  online_matrix=C_on, timings=timings, kappa_schedule=None if schedule is None else schedule.describe())


def _result(p: Prepared, name: str, params: dict, offline_cost, C_on: np.ndarray, oracle,
            strategy: list[int]) -> PolicyResult:
    """One policy's online run scored: its cost, SCPE, query accuracy and retrains."""
    cost = strategy_cost(C_on, strategy)
    hits = [p.query_hits[strategy[t - 1]][t - strategy[t - 1]] for t in range(1, len(strategy))]
    # Unknown query labels (a store's queries file without the target): no accuracy.
    accuracy = np.nan if any(h is None for h in hits) else np.mean([h.mean() for h in hits])
    retrains = retrains_from_strategy(strategy)
    return PolicyResult(
        policy=name, params=params, offline_cost=offline_cost, strategy_cost=cost,
        oracle_cost=oracle.cost, scpe=scpe(cost, oracle.cost), query_accuracy=float(accuracy),
        n_retrains=len(retrains), retrain_at=[p.n_offline + t for t in retrains],
        decisions=["retrain" if strategy[t] == t else "keep" for t in range(1, len(strategy))],
        strategy=[p.n_offline + s for s in strategy])


def check_retune(policies: Sequence[str], retune_every, label_delay: int = 0) -> int:
    """``retune_every`` checked against the policies it re-tunes, before any training.

    >>> check_retune(["cara-t", "nr"], 5), check_retune(["nr"], 0)
    (5, 0)
    >>> check_retune(["nr", "oracle"], 5)
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: retune-every: re-tunes cara-t and cara-ct; add one of them to the policies
    """
    every = validate.count(retune_every, "retune-every")
    if every and not any(_retunable(name) for name in policies):
        raise InputError("retune-every: re-tunes cara-t and cara-ct; add one of them to the policies")
    if every and label_delay:
        raise InputError("retune-every: re-tuned runs under a label delay are not simulated (a re-tune would read "
                         "labels that have not landed); drop one of --retune-every and --label-delay")
    return every


def _retunable(name: str) -> bool:
    cls = POLICIES[name]
    return cls.tunes_a_threshold()


def _retuned_results(p: Prepared, policies, C_off: np.ndarray, C_on: np.ndarray, oracle,
                     every: int) -> list[PolicyResult]:
    """The threshold policies re-tuned every ``every`` batches on the history seen so far."""
    out = []
    for name in [n for n in policies if _retunable(n)] if every else ():
        run = run_retuned(name, C_off, C_on, every=every, start=p.n_offline)
        params = {POLICIES[name].tunable[0]: run.thresholds[-1][1], "kappa": mean_kappa(C_off),
                  "retune_every": every, "n_tunings": len(run.thresholds)}
        out.append(_result(p, f"{name}-retune{every}", params, None, C_on, oracle, run.strategy))
    return out


def simulate(stream, *, kappa: float, policies: Sequence[str] | None = None, n_offline: int = 25,
             model: str | Callable[[int], object] = "rf", seed: int = 0, gamma=DEFAULT_GAMMA,
             loss="zero_one", tuning_method: str = "exact", n_batches: int = 100, batch_size: int = 1000,
             psi_method: str = "auto", progress: Callable[[str], None] | None = None,
             kappa_schedule: str | KappaSchedule | None = None, retune_every: int = 0) -> Report:
    """Tune each policy on the offline batches, run it on the online ones, and score it.

    ``stream`` is a stream name (``covcon-d``, …; generated with ``seed``) or a
    sequence of batches with ``X``, ``y``, ``queries``, ``query_labels`` and
    ``query_index`` (as :class:`cara_mlflow.streams.Batch`). ``model`` is ``rf``,
    ``lr`` or a factory ``seed -> estimator``; one is trained per batch.
    ``gamma="scale"`` is resolved once on the offline data and kept online.
    ``n_batches`` and ``batch_size`` apply to a stream given by name. ``psi_method``: how Ψ
    sums are computed (:data:`~cara_mlflow.staleness.PSI_METHODS`; ``auto`` is exact on
    batches of the paper's sizes). ``kappa_schedule``: a retraining cost per batch, κ_t =
    ``kappa`` × the schedule's value (:mod:`cara_mlflow.kappa_schedule`); checked before training.
    ``retune_every``: also each threshold policy re-tuned every N batches (:func:`evaluate`).
    :func:`prepare` + :func:`evaluate`; to sweep κ, prepare once and evaluate per κ.

    >>> report = simulate("covcon-d", kappa=20, policies=["cara-t", "nr", "oracle"], model="lr",
    ...                   n_batches=12, batch_size=200, n_offline=4, seed=0)
    >>> report["nr"].n_retrains, report["oracle"].scpe
    (0, 0.0)
    >>> all(r.strategy_cost >= report["oracle"].strategy_cost for r in report.results)
    True
    """
    validate.policy_names(policies)
    check_kappa(kappa, 1)
    check_retune(validate.policy_names(policies), retune_every)
    if kappa_schedule is not None and isinstance(stream, str):   # a CSV's coverage: before any training
        kappa_schedule = parse_kappa_schedule(kappa_schedule)
        kappa_schedule.values(n_batches)
    prepared = prepare(stream, n_offline=n_offline, model=model, seed=seed, gamma=gamma, loss=loss,
                       n_batches=n_batches, batch_size=batch_size, psi_method=psi_method, progress=progress)
    return evaluate(prepared, kappa=kappa, policies=policies, tuning_method=tuning_method, progress=progress,
                    kappa_schedule=kappa_schedule, retune_every=retune_every)
