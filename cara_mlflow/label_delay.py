"""The cost of label delay: policies that see the realized Ψ̄ only ``L`` batches late.

The paper's convention (``L = 0``) labels batch ``t`` as it arrives: Ψ̄ of the model in use is
known when the policy decides, and a Retrain at ``t`` trains ``M_t``, which serves batch ``t`` at
cost κ_t and no staleness. With a label delay ``L``, at batch ``t`` the labels of the batches
``<= t − L`` are known and the queries ``Q_t`` are; three ways to run a policy are compared on the
online cost matrix ``C`` (local indices, :mod:`cara_mlflow.costs`):

* **wait** (:func:`run_waiting`): at batch ``t`` the policy processes the latest labelled batch
  ``b = t − L`` with its realized Ψ̄ = ``C[s, b]`` (``s``: the model in use); a Retrain trains
  ``M_b``, which serves from batch ``t`` on at cost κ_t + Ψ̄_{t,b}. Before a batch after the first
  is labelled (``t <= L``) the model is kept.
* **provisional** (:func:`run_provisional`): at batch ``t`` the policy decides on the *estimated*
  Ψ̂ of the model in use (:class:`PsiEstimates`, from :mod:`cara_mlflow.estimate`); a Retrain
  trains on the latest labelled batch ``t − L`` if it is newer than the model in use, else it is
  deferred ("no new labels"). When the realized Ψ̄ of batch ``t − L`` lands, the policy's state is
  corrected by replaying it from its state at its last reset over the observations since (realized
  where known, estimated otherwise); if that replay retrains at the reconciled batch where the
  estimate kept, a *catch-up* Retrain is taken at ``t``. Reconcile first, then decide.
* **ORACLE**: the standard one (:func:`cara_mlflow.oracle.solve`, labels at once: the yardstick of
  SCPE) and the delay-constrained one (:func:`delayed_oracle`: a retrain at ``t`` gives ``M_{t−L}``),
  so that the gap due to the delay itself shows.

The cost of a run (:func:`delayed_strategy_cost`) is κ_0 for the initial model (trained on the
window's first batch and serving from it, as at ``L = 0``, in every mode and both ORACLEs), Ψ̄ of
the model in use at every later batch, and κ_t at each batch where a retrain lands. At ``L = 0``
both runs are :func:`cara_mlflow.simulate.run_policy` bit for bit. Policies are tuned offline as
:func:`cara_mlflow.simulate.evaluate` tunes them (no delay offline). The drift detectors need the
per-sample errors of the batch they decide on, which a provisional decision does not have: they run
in the wait mode only.

>>> C = with_kappa(np.array([[0, 1.0, 1.0, 1.0, 1.0],
...                          [0, 0, 0.1, 0.1, 0.1],
...                          [0, 0, 0, 0.1, 0.1],
...                          [0, 0, 0, 0, 0.1],
...                          [0, 0, 0, 0, 0]]), 1.5)
>>> run = run_waiting(make_policy("cara-t", tau=0.5), C, label_delay=1)
>>> run.strategy, run.decisions, round(run.cost, 6)   # κ_0 + Ψ̄_{1,0} + (κ_2 + Ψ̄_{2,1}) + Ψ̄_{3,1} + Ψ̄_{4,1}
([0, 0, 1, 1, 1], ['wait', 'retrain', 'keep', 'keep'], 4.3)
>>> round(delayed_oracle(C, 1).cost, 6), round(solve(C).cost, 6)   # the best with L = 1, and with labels at once
(4.3, 3.3)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from . import jsonout
from .costs import check_cost_matrix, scpe, with_kappa  # noqa: F401 (with_kappa: the module's example)
from .errors import InputError
from .estimate import LossEstimator, estimated_psi_now, model_outputs, reference_rows
from .losses import per_sample_losses, resolve_loss
from .oracle import OracleResult, solve
from .policies import POLICIES, Observation, Policy, make_policy

__all__ = ["check_label_delay", "delayed_strategy_cost", "delayed_oracle", "DelayedRun", "run_waiting",
           "run_provisional", "PsiEstimates", "DelayedPolicy", "DelayReport", "evaluate_delayed",
           "simulate_delayed"]

MODES = ("wait", "provisional")


def check_label_delay(label_delay, n_online: int) -> int:
    """The delay ``L`` as an int, checked against an online window of ``n_online`` batches: at least
    one online batch after the first must be labelled inside it (``L <= n_online − 2``).

    >>> check_label_delay(3, 75)
    3
    >>> check_label_delay(74, 75)
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: label delay (--label-delay): 74 batches leaves no labelled online batch in ...
    """
    if isinstance(label_delay, bool) or not isinstance(label_delay, (int, np.integer)) or label_delay < 0:
        raise InputError(f"label delay (--label-delay): expected an integer >= 0 (batches), got {label_delay!r}")
    if label_delay > n_online - 2:
        raise InputError(f"label delay (--label-delay): {label_delay} batches leaves no labelled online batch in "
                         f"the online window of {n_online}; give at most {max(n_online - 2, 0)}, or a longer "
                         "stream (--n-batches)")
    return int(label_delay)


def _staleness(C: np.ndarray) -> np.ndarray:
    """Ψ̄ of model t' at batch t for t' <= t: C with zeros on the diagonal (a model is not stale on its batch)."""
    S = np.array(C, dtype=np.float64)
    S[np.diag_indices_from(S)] = 0.0
    return S


def _batch_costs(C: np.ndarray, strategy, retrained) -> np.ndarray:
    """What each batch costs: Ψ̄ of the model in use, plus κ_t where a retrain lands (κ_0 at 0)."""
    s, mark = np.asarray(strategy, dtype=np.int64), np.asarray(retrained, dtype=bool).copy()
    T = C.shape[0]
    t = np.arange(T)
    if s.shape != (T,) or mark.shape != (T,) or s[0] != 0 or (s > t).any() or (s[1:] < s[:-1]).any():
        raise InputError(f"strategy: expected {T} non-decreasing model indices with s_0 = 0 and s_t <= t, "
                         f"got {s.tolist()!r:.80}")
    mark[0] = True
    if ((s[1:] != s[:-1]) & ~mark[1:]).any():
        raise InputError("strategy: the model in use changes at a batch without a retrain")
    return np.where(mark, np.diag(C), 0.0) + _staleness(C)[s, t]


def delayed_strategy_cost(C, strategy, retrained) -> float:
    """Σ_t Ψ̄ of the model in use ``strategy[t]`` at batch t, plus κ_t at each batch where a retrain
    lands (``retrained[t]``; the initial model's κ_0 is always counted). At ``L = 0`` (a retrain at t
    gives M_t) this is :func:`cara_mlflow.costs.strategy_cost`, bit for bit.

    >>> C = np.array([[2.0, 0.5, 3.0], [np.inf, 2.0, 0.1], [np.inf, np.inf, 2.0]])
    >>> delayed_strategy_cost(C, [0, 0, 0], [True, False, False]), delayed_strategy_cost(C, [0, 1, 1], [0, 1, 0])
    (5.5, 4.1)
    >>> delayed_strategy_cost(C, [0, 0, 1], [0, 0, 1])        # M_1 lands at batch 2: κ_2 + Ψ̄_{2,1}
    4.6
    """
    C = check_cost_matrix(C)
    return float(np.cumsum(_batch_costs(C, strategy, retrained))[-1])


def delayed_oracle(C, label_delay: int) -> OracleResult:
    """The cheapest strategy in hindsight when a retrain at batch t can only train on batch t − L.

    ``v(q) = min(κ_0 + Σ_{j<=q} Ψ̄_{j,0}, min_{L < p <= q} κ_p + Σ_{j=p}^{q} Ψ̄_{j,p−L} + v(p − 1))``,
    O(T²). ``retrain_at`` lists the batches where a model lands (0 first); ``strategy`` the model in
    use at each batch. At ``L = 0`` it is :func:`cara_mlflow.oracle.solve`. Ties: fewer retrains.

    >>> t = np.arange(5)
    >>> C = with_kappa(np.subtract.outer(t, t).T * 1.0, 2.0)      # Ψ̄ = the model's age, κ = 2
    >>> [(o.cost, o.retrain_at, o.strategy) for o in (delayed_oracle(C, 0), delayed_oracle(C, 1))]
    [(8.0, [0, 2], [0, 0, 2, 2, 2]), (10.0, [0, 3], [0, 0, 0, 2, 2])]
    >>> delayed_oracle(C, 2).retrain_at, solve(C).cost                  # a model 2 batches old: not worth κ
    ([0], 8.0)
    """
    C = check_cost_matrix(C)
    T, L = C.shape[0], check_label_delay(label_delay, C.shape[0] + 1)
    S, kappa = _staleness(C), np.diag(C)
    first = np.cumsum(np.concatenate([[kappa[0]], S[0, 1:]]))      # the initial model through q
    p = np.arange(L + 1, T)                                        # batches where a retrain may land
    seg = np.where(np.arange(T)[None, :] >= p[:, None], S[p - L], 0.0)
    seg[np.arange(p.size), p] += kappa[p]
    R = np.cumsum(seg, axis=1)                                     # R[i, q]: land at p_i, keep through q
    v, last = np.empty(T), np.full(T, -1)
    for q in range(T):
        k = int(np.searchsorted(p, q, side="right"))
        totals = np.concatenate([[first[q]], R[:k, q] + v[p[:k] - 1]])
        i = int(np.argmin(totals))
        v[q], last[q] = totals[i], -1 if i == 0 else p[i - 1]
    landed, q = [], T - 1
    while q >= 0 and last[q] >= 0:
        landed.append(int(last[q]))
        q = int(last[q]) - 1
    landed.sort()
    strategy, retrained = _strategy_of(T, {t: t - L for t in landed})
    return OracleResult(cost=delayed_strategy_cost(C, strategy, retrained), retrain_at=[0, *landed],
                        strategy=strategy.tolist())


def _strategy_of(T: int, landings: dict) -> tuple[np.ndarray, np.ndarray]:
    """(model in use per batch, retrain mask) from ``{batch where a model lands: batch it trained on}``."""
    strategy, retrained = np.zeros(T, dtype=np.int64), np.zeros(T, dtype=bool)
    for t in sorted(landings):
        strategy[t:], retrained[t] = landings[t], True
    return strategy, retrained


@dataclass
class DelayedRun:
    """One policy run under a label delay, in one mode (``wait`` or ``provisional``).

    ``strategy``: the local model in use at each batch; ``retrain_at``: the absolute batches where a
    retrain landed, ``trained_on`` the batches those models trained on; ``decisions``: per online
    batch after the first, ``keep``, ``retrain``, ``wait`` (nothing labelled yet), ``catch-up`` or
    ``deferred`` (Retrain with no new labels). For the provisional mode, the estimates against the
    realized Ψ̄ of the batches it decided on: ``psi_bias`` (mean Ψ̂ − Ψ̄), ``psi_mae`` and
    ``n_in_sample`` (estimates from the model's own training rows, no later labelled batch yet).
    """

    mode: str
    label_delay: int
    cost: float
    scpe: float
    n_retrains: int
    retrain_at: list[int]
    trained_on: list[int]
    decisions: list[str]
    n_catch_ups: int = 0
    n_deferred: int = 0
    psi_bias: float | None = None
    psi_mae: float | None = None
    n_in_sample: int = 0
    strategy: list[int] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("strategy")
        return out


def _finish(mode: str, C: np.ndarray, L: int, landings: dict, decisions: list, start: int, **extra) -> DelayedRun:
    strategy, retrained = _strategy_of(C.shape[0], landings)
    cost = delayed_strategy_cost(C, strategy, retrained)
    landed = sorted(landings)
    return DelayedRun(mode=mode, label_delay=L, cost=cost, scpe=scpe(cost, solve(C).cost), n_retrains=len(landed),
                      retrain_at=[start + t for t in landed], trained_on=[start + landings[t] for t in landed],
                      decisions=decisions, strategy=strategy.tolist(), **extra)


def run_waiting(policy: Policy, C, *, label_delay: int, start: int = 0,
                errors: Callable[[int, int], np.ndarray] | None = None) -> DelayedRun:
    """Mode (a): at batch t the policy processes batch ``b = t − L`` with its realized Ψ̄ = ``C[s, b]``;
    a Retrain trains ``M_b``, which lands at t (cost κ_t + Ψ̄_{t,b}). ``errors(s, b)``: the model's
    per-sample errors on batch b (local), for the drift detectors. ``start``: the window's first
    absolute batch. At ``L = 0``, :func:`cara_mlflow.simulate.run_policy`.

    >>> C = with_kappa(np.triu(np.full((4, 4), 2.0), 1), 1.0)
    >>> run = run_waiting(make_policy("cara-t", tau=1.0), C, label_delay=1, start=10)
    >>> run.decisions, run.retrain_at, run.trained_on, run.cost
    (['wait', 'retrain', 'retrain'], [12, 13], [11, 12], 9.0)
    """
    C = check_cost_matrix(C)
    T, L = C.shape[0], check_label_delay(label_delay, C.shape[0])
    s, landings, decisions = 0, {}, []
    for t in range(1, T):
        b = t - L
        if b < 1:
            decisions.append("wait")
            continue
        obs = Observation(t=start + b, trained_on=start + s, psi_bar=float(C[s, b]), kappa=float(C[t, t]),
                          errors=None if errors is None else errors(s, b))
        decision = policy.decide(obs)
        decisions.append(decision.action)
        if decision.retrain:
            s, landings[t] = b, b
            policy.reset(start + b)
    return _finish("wait", C, L, landings, decisions, start)


@dataclass
class _Seen:
    """One observation of the model in production since its landing: the value the policy used then,
    the decision taken, and whether the value is the realized Ψ̄."""

    t: int
    value: float
    action: str
    realized: bool


def _replay(policy: Policy, state: dict, seen: list[_Seen], s: int, start: int, C: np.ndarray) -> list:
    """Replay the policy from ``state`` (its state at the last reset) over ``seen``; return its decisions."""
    policy.set_state(state)
    return [policy.decide(Observation(t=start + o.t, trained_on=start + s, psi_bar=o.value,
                                      kappa=float(C[o.t, o.t]))).retrain for o in seen]


def _reconcile(policy, state, seen: list[_Seen], j: int, s: int, start: int, C) -> bool:
    """Batch j's realized Ψ̄ lands: correct the policy's state; True for a catch-up Retrain."""
    at = next((k for k, o in enumerate(seen) if o.t == j), None)
    if at is None:
        return False
    seen[at].value, seen[at].realized = float(C[s, j]), True
    replayed = _replay(policy, state, seen, s, start, C)
    return replayed[at] and seen[at].action == "keep"


def run_provisional(policy: Policy, C, *, label_delay: int, estimate: Callable[[int, int], float],
                    start: int = 0) -> DelayedRun:
    """Mode (b): decide at batch t on the estimate ``estimate(s, t)`` of Ψ̄ of the model in use ``s``
    (local indices); a Retrain trains on batch ``t − L`` if newer than ``s`` (else it is deferred);
    each batch first reconciles batch ``t − L`` (module docstring), which may take a catch-up Retrain.

    A provisional Retrain reacts to a change before any labelled batch shows it, so the model it
    lands is trained on batch ``t − L``, from before the change: under a concept change that model
    has learnt the old concept, and it is the catch-up, once the labels of the change land, that
    trains on it. A policy that reads no Ψ̄ (CARA-P, NR) only has its schedule moved from the
    batches it trains on (wait) to the batches where its models land.

    >>> C = with_kappa(np.triu(np.full((4, 4), 2.0), 1), 1.0)
    >>> run = run_provisional(make_policy("cara-t", tau=1.0), C, label_delay=1, estimate=lambda s, t: 0.0)
    >>> run.decisions, run.n_catch_ups, run.cost                 # it never sees Ψ̄ >= τ before the labels
    (['keep', 'catch-up', 'keep'], 1, 8.0)
    """
    C = check_cost_matrix(C)
    T, L = C.shape[0], check_label_delay(label_delay, C.shape[0])
    s, landings, decisions, state, seen, errs = 0, {}, [], policy.get_state(), [], []
    catch_ups = deferred = 0
    for t in range(1, T):
        if L and _reconcile(policy, state, seen, t - L, s, start, C):
            s, landings[t] = t - L, t - L
            policy.reset(start + t)
            state, seen, catch_ups = policy.get_state(), [], catch_ups + 1
            decisions.append("catch-up")
            continue
        value = float(C[s, t]) if L == 0 else float(estimate(s, t))
        if L:
            errs.append(value - float(C[s, t]))
        decision = policy.decide(Observation(t=start + t, trained_on=start + s, psi_bar=value, kappa=float(C[t, t])))
        action = decision.action
        if decision.retrain and t - L > s:
            s, landings[t] = t - L, t - L
            policy.reset(start + t)
            state, seen = policy.get_state(), []
        else:
            action, deferred = ("deferred", deferred + 1) if decision.retrain else (action, deferred)
            seen.append(_Seen(t, value, action, L == 0))
        decisions.append(action)
    errs = np.asarray(errs)
    return _finish("provisional", C, L, landings, decisions, start, n_catch_ups=catch_ups, n_deferred=deferred,
                   psi_bias=float(errs.mean()) if errs.size else None,
                   psi_mae=float(np.abs(errs).mean()) if errs.size else None,
                   n_in_sample=sum(1 for t in range(1, T) if t - L <= 0) if L else 0)


class PsiEstimates:
    """Ψ̂ of online model s at online batch t before the labels of t (:mod:`cara_mlflow.estimate`).

    The first term of Ψ with the losses a :class:`~cara_mlflow.estimate.LossEstimator` expects at the
    queries (the batch's points are its queries: only they are known before the labels), minus the
    realized second term Ψ(Q_t, D_s, M_s), which needs no label of t. The estimator of model s is
    fitted on the latest labelled batch it did not train on, ``r = t − L`` when ``r > s``, else on
    batch s's own rows (in-sample: optimistic for a model that fits its training rows, as a forest
    does). Fits are cached by (s, r), shared by every policy and delay of one prepared stream.

    ``prepared``: a :class:`~cara_mlflow.simulate.Prepared` made with ``keep_models=True``.
    ``points``: the batch's points in Ψ̂'s first term, ``"queries"`` (only the queries are known before
    the labels, as in the lifecycle) or ``"data"`` (the batch's data rows come before their labels:
    Ψ̂ then sums over the same points as the realized Ψ̄). On the paper's scale the first term is
    normalised by the number of points, so with queries that are not spread as the data (static
    queries, ``-S``) Ψ̂ and Ψ̄ differ in scale, not only by the estimator's error.
    """

    def __init__(self, prepared, points: str = "queries"):
        if prepared.models is None or prepared.batches is None:
            raise InputError("label delay: the prepared stream keeps no models; prepare it with keep_models=True")
        if points not in ("queries", "data"):
            raise InputError(f"points: expected 'queries' or 'data', got {points!r}")
        self.prepared, self.points = prepared, points
        self.loss_fn = resolve_loss(prepared.loss)
        self._fits, self._outputs, self._values = {}, {}, {}
        self.fit_seconds = 0.0

    def with_points(self, points: str) -> "PsiEstimates":
        """The same estimators (fits and model outputs shared) with the other ``points``."""
        other = PsiEstimates(self.prepared, points)
        other._fits, other._outputs = self._fits, self._outputs
        return other

    def _outputs_of(self, s: int, t: int, queries: bool):
        key = (s, t, queries)
        if key not in self._outputs:
            b = self.prepared.batches[t]
            self._outputs[key] = model_outputs(self.prepared.models[s], b.queries if queries else b.X)
        return self._outputs[key]

    def _fit(self, s: int, r: int) -> LossEstimator:
        if (s, r) not in self._fits:
            clock = time.perf_counter()
            b = self.prepared.batches[r]
            predictions, confidence = self._outputs_of(s, r, queries=False)
            losses = per_sample_losses(self.loss_fn, b.y, predictions, f"online batch {r}")
            rows = reference_rows(b.X.shape[0], seed=[self.prepared.seed, s, r])
            self._fits[(s, r)] = LossEstimator.fit(
                points=b.X[rows], confidence=None if confidence is None else confidence[rows],
                predictions=predictions[rows], losses=losses[rows], provenance={"model": s, "reference": r})
            self.fit_seconds += time.perf_counter() - clock
        return self._fits[(s, r)]

    def reference(self, s: int, t: int, label_delay: int) -> int:
        """The batch the estimator of model s at batch t is fitted on (local)."""
        return t - label_delay if t - label_delay > s else s

    def __call__(self, s: int, t: int, label_delay: int) -> float:
        """Ψ̂ of model s at batch t (local indices) with labels ``label_delay`` batches late."""
        r = self.reference(s, t, label_delay)
        if (s, t, r) not in self._values:
            p, queries = self.prepared, self.points == "queries"
            Q = p.batches[t].queries
            P = Q if queries else p.batches[t].X
            predictions, confidence = self._outputs_of(s, t, queries=queries)
            expected = self._fit(s, r).expected_losses(P, confidence, predictions)
            first = estimated_psi_now(Q, P, expected, p.gamma, scale=p.online_terms.scale,
                                      method=p.psi_method, seed=[p.seed, s, t])
            self._values[(s, t, r)] = first - float(p.online_terms.psi_then[s, t])
        return self._values[(s, t, r)]


@dataclass
class DelayedPolicy:
    """One policy under a label delay: its tuned parameters (as at ``L = 0``) and a run per mode
    (``provisional`` is None for the drift detectors, which need the labels of the batch)."""

    policy: str
    params: dict
    wait: DelayedRun
    provisional: DelayedRun | None

    def to_dict(self) -> dict:
        return {"policy": self.policy, "params": self.params, "wait": self.wait.to_dict(),
                "provisional": None if self.provisional is None else self.provisional.to_dict()}


@dataclass
class DelayReport:
    """Every policy of a simulation under the label delay ``label_delay``, and both ORACLEs:
    ``oracle_cost`` (labels at once, the SCPE yardstick) and ``delayed_oracle_cost``."""

    label_delay: int
    stream: str
    kappa: float
    seed: int
    model: str
    n_offline: int
    n_batches: int
    oracle_cost: float
    delayed_oracle_cost: float
    delayed_oracle_retrain_at: list[int]
    results: list[DelayedPolicy]
    timings: dict = field(default_factory=dict)

    def __getitem__(self, policy: str) -> DelayedPolicy:
        for r in self.results:
            if r.policy == policy:
                return r
        raise KeyError(policy)

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ("results", "timings")}
        return {**out, "delayed_oracle_scpe": scpe(self.delayed_oracle_cost, self.oracle_cost),
                "policies": [r.to_dict() for r in self.results]}

    def to_json(self) -> str:
        return jsonout.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """Per policy: both modes' cost, SCPE and retrains, with catch-ups and deferrals, as text."""
        lines = [f"{self.stream}  κ={self.kappa:g}  seed={self.seed}  model={self.model}  "
                 f"label delay L={self.label_delay}  online {self.n_offline}–{self.n_batches - 1}",
                 f"ORACLE (labels at once) {self.oracle_cost:.3f}   delayed ORACLE {self.delayed_oracle_cost:.3f} "
                 f"(SCPE {scpe(self.delayed_oracle_cost, self.oracle_cost):.2f} %: the delay itself)",
                 f"{'policy':<8} {'wait cost':>10} {'SCPE %':>8} {'retr':>5}   {'prov cost':>10} {'SCPE %':>8} "
                 f"{'retr':>5} {'catch-up':>8} {'deferred':>8}"]
        for r in self.results:
            w, p = r.wait, r.provisional
            right = ("(needs the labels of the batch: wait mode only)" if p is None else
                     f"{p.cost:>10.3f} {p.scpe:>8.2f} {p.n_retrains:>5d} {p.n_catch_ups:>8d} {p.n_deferred:>8d}")
            lines.append(f"{r.policy:<8} {w.cost:>10.3f} {w.scpe:>8.2f} {w.n_retrains:>5d}   {right}")
        return "\n".join(lines)


def evaluate_delayed(prepared, report, label_delay: int, *, estimates: PsiEstimates | None = None) -> DelayReport:
    """Run every policy of ``report`` (:func:`cara_mlflow.simulate.evaluate` on ``prepared``: its tuned
    parameters and online cost matrix) with labels ``label_delay`` batches late, in both modes.
    The ORACLE follower is not a policy here: the ORACLEs are the report's own lines.
    ``estimates``: a :class:`PsiEstimates` of ``prepared`` to share between delays (made if None).
    """
    C, start = report.online_matrix, report.n_offline
    L = check_label_delay(label_delay, C.shape[0])
    clock = time.perf_counter()
    if estimates is None and L:
        estimates = PsiEstimates(prepared)
    results = []
    for r in report.results:
        cls = POLICIES[r.policy]
        if cls.follows_oracle:
            continue
        errors = (lambda tp, t: prepared.errors[tp][t - tp]) if cls.needs_errors else None
        wait = run_waiting(make_policy(r.policy, **r.params), C, label_delay=L, start=start, errors=errors)
        provisional = None if cls.needs_errors else run_provisional(
            make_policy(r.policy, **r.params), C, label_delay=L, start=start,
            estimate=lambda s, t: estimates(s, t, L))
        results.append(DelayedPolicy(r.policy, r.params, wait, provisional))
    oracle = delayed_oracle(C, L)
    return DelayReport(label_delay=L, stream=report.stream, kappa=report.kappa, seed=report.seed, model=report.model,
                       n_offline=report.n_offline, n_batches=report.n_batches, oracle_cost=solve(C).cost,
                       delayed_oracle_cost=oracle.cost,
                       delayed_oracle_retrain_at=[start + t for t in oracle.retrain_at],
                       results=results, timings={**report.timings, "label_delay": time.perf_counter() - clock})


def simulate_delayed(stream, *, kappa: float, label_delay: int, policies: Sequence[str] | None = None,
                     progress: Callable[[str], None] | None = None, **options) -> DelayReport:
    """:func:`cara_mlflow.simulate.simulate` with labels ``label_delay`` batches late: tune offline as
    it does, then run each policy online in the wait and provisional modes (:func:`evaluate_delayed`).
    ``options``: :func:`cara_mlflow.simulate.prepare`'s (``n_offline``, ``model``, ``seed``, …) and
    ``tuning_method``, ``kappa_schedule``.

    >>> r = simulate_delayed("gauss-d", kappa=5, label_delay=2, policies=["cara-t", "nr"], model="lr",
    ...                      n_batches=12, batch_size=200, n_offline=4)
    >>> r.label_delay, r["nr"].wait.cost == r["nr"].provisional.cost        # NR reads no Ψ̄
    (2, True)
    >>> all(getattr(p, mode).cost >= r.delayed_oracle_cost for p in r.results for mode in MODES)
    True
    """
    from . import validate
    from .simulate import evaluate, prepare

    policies = validate.policy_names(policies)
    evaluate_options = {k: options.pop(k) for k in ("tuning_method", "kappa_schedule") if k in options}
    n_online = options.get("n_batches", 100) - options.get("n_offline", 25)
    if isinstance(stream, str):             # said before any training
        check_label_delay(label_delay, n_online)
        if evaluate_options.get("kappa_schedule") is not None:
            from .kappa_schedule import parse_kappa_schedule

            evaluate_options["kappa_schedule"] = parse_kappa_schedule(evaluate_options["kappa_schedule"])
            evaluate_options["kappa_schedule"].values(options.get("n_batches", 100))
    prepared = prepare(stream, keep_models=True, progress=progress, **options)
    report = evaluate(prepared, kappa=kappa, policies=policies, progress=progress, **evaluate_options)
    if progress:
        progress(f"running the policies with labels {label_delay} batches late")
    return evaluate_delayed(prepared, report, label_delay)
