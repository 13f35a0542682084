"""The cost matrix C of Eq. 4, strategy costs (Eq. 6) and SCPE (§7.5).

Contract (DESIGN.md "Cost matrix"): ``C`` is a ``(T, T)`` float array with
``C[t', t] = Ψ̄_{t,t'}`` for ``t' < t``, ``C[t, t] = κ_t`` and ``+inf`` below the
diagonal. A strategy ``s_0..s_{T-1}`` names the batch whose model is used at each
batch; ``s_0 = 0`` and each ``s_t`` is either ``s_{t-1}`` (Keep) or ``t`` (Retrain).

The matrix is built without redundant work, exactly:

* every model predicts all of its later batches in one call (:func:`predict_later`);
* the first term Ψ(Q_t, D_t, M_t') = (1/|D_t|) Σ_x ℓ_t'(x) w_t(x) uses the kernel
  weights ``w_t(x) = Σ_q K(q, x)`` of (Q_t, X_t), computed once per ``t`` and
  shared by every ``t' < t``;
* the second term Ψ(Q_t, D_t', M_t') needs kernels only at the training points
  that M_t' gets wrong (non-zero loss), against the later queries.

With ``method="sample"`` or ``"rff"`` (or ``"auto"`` above the switch size) each batch's first terms are
estimated together (one column per older model) and each second term on its own, by
:func:`cara_mlflow.staleness.pair_sums`: every Ψ term within ``rel_error`` of the exact one
with probability about 0.99.

With ``scale="expected-loss"`` (:mod:`cara_mlflow.staleness`, "Scales") each ψ(q) is divided by
the kernel mass of the term's own batch:

* first term: the weights become ``w_t(x) = Σ_q K(q, x) / m_t(q)`` with the exact mass
  ``m_t(q) = Σ_{x ∈ X_t} K(q, x)``, still computed once per ``t`` (in the same kernel pass) and
  shared by every older model; the lifecycle's "now" term uses the whole batch too;
* second term: the mass ``m_t'(q)`` of the training batch at the later queries comes from
  :func:`~cara_mlflow.staleness.mass_sample` of X_t' stratified by M_t''s own losses (every row
  it gets wrong, plus ``MASS_SAMPLE_ROWS`` of its zero-loss rows standing for the rest), the
  rows the lifecycle keeps with a version, so the offline matrix and the step estimate the same
  quantity the same way. A batch with no more zero-loss rows than that is kept whole: the mass
  is then exact (and the term equals :func:`~cara_mlflow.staleness.relative_staleness`'s). Cost:
  (later queries) × (wrong rows + ``MASS_SAMPLE_ROWS``) kernels per model, against
  (later queries) × (wrong rows) on the paper's scale.

The sampled methods draw queries and compute each drawn query's ratio exactly (``"rff"`` as
``"sample"``), each term within ``rel_error`` with probability about 0.99.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import InputError
from .losses import per_sample_losses
from .staleness import (
    DEFAULT_CONFIDENCE,
    DEFAULT_GAMMA,
    DEFAULT_PSI_SCALE,
    DEFAULT_REL_ERROR,
    MAX_BLOCK_BYTES,
    Gamma,
    LossFn,
    _check_data,
    _check_points,
    _check_rel_error,
    _child_seed,
    _computes_exactly,
    _expected_loss_sums,
    _nw_point_weights,
    _nw_ratios,
    _pair_sums,
    _weighted_kernel_sums,
    check_psi_method,
    check_psi_scale,
    mass_sample,
    resolve_gamma,
    resolve_loss,
    stack_rows,
)

__all__ = [
    "StalenessTerms",
    "predict_later",
    "staleness_terms",
    "cost_matrix",
    "with_kappa",
    "check_kappa",
    "check_cost_matrix",
    "check_strategy",
    "strategy_from_retrains",
    "retrains_from_strategy",
    "strategy_cost",
    "cumulative_strategy_cost",
    "scpe",
]


@dataclass(frozen=True)
class StalenessTerms:
    """The two Ψ terms of every (t', t) pair of a window, and the γ and scale that gave them.

    ``psi_now[t', t] = Ψ(Q_t, D_t, M_t')`` and ``psi_then[t', t] = Ψ(Q_t, D_t', M_t')``
    for ``t' < t``; entries on and below the diagonal are NaN.
    """

    psi_now: np.ndarray
    psi_then: np.ndarray
    gamma: float
    scale: str = DEFAULT_PSI_SCALE

    @property
    def psi_bar(self) -> np.ndarray:
        """Ψ̄_{t,t'} = psi_now − psi_then (Eq. 3), NaN on and below the diagonal."""
        return self.psi_now - self.psi_then

    def cost_matrix(self, kappa) -> np.ndarray:
        """The cost matrix for retraining cost ``kappa`` (scalar or one per batch)."""
        return with_kappa(self.psi_bar, kappa)


def check_kappa(kappa, T: int) -> np.ndarray:
    """Validate κ (a scalar or one value per batch, all finite and > 0); return a length-T array.

    >>> check_kappa(2, 3)
    array([2., 2., 2.])
    """
    try:
        k = np.asarray(kappa, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"kappa: expected a positive number or one per batch, got {kappa!r}") from None
    if k.ndim == 0:
        k = np.full(T, float(k))
    elif k.shape != (T,):
        raise InputError(f"kappa: expected a scalar or {T} values (one per batch), got shape {k.shape}")
    if not np.isfinite(k).all() or (k <= 0).any():
        raise InputError(f"kappa: expected finite values > 0 (the cost of one retrain), got {kappa!r}")
    return k


def with_kappa(psi_bar: np.ndarray, kappa) -> np.ndarray:
    """Assemble C from a Ψ̄ matrix (upper triangle used) and κ: changing κ is only the diagonal.

    >>> with_kappa(np.array([[np.nan, 0.5], [np.nan, np.nan]]), 2.0)
    array([[2. , 0.5],
           [inf, 2. ]])
    """
    psi_bar = np.asarray(psi_bar, dtype=np.float64)
    T = psi_bar.shape[0]
    C = np.full((T, T), np.inf)
    upper = np.triu_indices(T, 1)
    C[upper] = psi_bar[upper]
    C[np.diag_indices(T)] = check_kappa(kappa, T)
    return C


def predict_later(models: Sequence, Xs: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    """``out[t'][k] = models[t'].predict(Xs[t' + k])`` for every later-or-same batch, one call per model.

    >>> class Echo:
    ...     def predict(self, X): return X[:, 0]
    >>> out = predict_later([Echo(), Echo()], [np.array([[1.0]]), np.array([[2.0], [3.0]])])
    >>> [[p.tolist() for p in row] for row in out]
    [[[1.0], [2.0, 3.0]], [[2.0, 3.0]]]
    """
    sizes = np.array([X.shape[0] for X in Xs])
    out = []
    for tp, model in enumerate(models):
        later = Xs[tp:]
        if hasattr(later[0], "iloc"):   # DataFrames of features (a store's batches)
            import pandas as pd

            stacked = pd.concat(later, ignore_index=True)
        else:
            stacked = stack_rows(later)
        pred = np.asarray(model.predict(stacked))
        out.append(np.split(pred, np.cumsum(sizes[tp:])[:-1]))
    return out


def _split_batches(batches, queries):
    if len(batches) == 0:
        raise InputError("batches: is empty; expected at least one (X, y) batch")
    data = [_check_data(f"batches[{t}]", b) for t, b in enumerate(batches)]
    d = data[0][0].shape[1]
    data = [_check_data(f"batches[{t}]", b, d) for t, b in enumerate(data)]
    if queries is None:
        Qs = [X for X, _ in data]
    else:
        if len(queries) != len(data):
            raise InputError(f"queries: has {len(queries)} batches, expected {len(data)} (one per data batch)")
        Qs = [_check_points(f"queries[{t}]", q, d) for t, q in enumerate(queries)]
    return data, Qs


def staleness_terms(batches: Sequence, models: Sequence | None = None, *, queries=None,
                    predictions: list[list[np.ndarray]] | None = None,
                    gamma: Gamma = DEFAULT_GAMMA, loss: str | LossFn = "zero_one",
                    method: str = "exact", rel_error: float = DEFAULT_REL_ERROR, seed=0,
                    max_block_bytes: int = MAX_BLOCK_BYTES, scale: str = DEFAULT_PSI_SCALE) -> StalenessTerms:
    """Both Ψ terms for every pair ``t' < t`` of a window of batches.

    ``batches[t]`` is an ``(X_t, y_t)`` pair and ``models[t]`` the model trained on
    it; ``queries[t]`` is Q_t (default: the batch's own points). Pass
    ``predictions`` (as returned by :func:`predict_later` on the batches' X) to
    reuse predictions already made; then ``models`` is not needed.
    ``gamma="scale"`` is resolved once on all batches' X stacked. ``method``,
    ``rel_error`` and ``seed``: see :func:`cara_mlflow.staleness.pair_sums`. ``scale``: one of
    :data:`~cara_mlflow.staleness.PSI_SCALES` (module docstring: where the masses come from).

    >>> from sklearn.tree import DecisionTreeClassifier
    >>> rng = np.random.default_rng(0)
    >>> batches = [(X, (X[:, 0] > s).astype(int)) for s, X in
    ...            zip([0.3, 0.5, 0.7], rng.random((3, 50, 2)))]
    >>> models = [DecisionTreeClassifier(random_state=0).fit(X, y) for X, y in batches]
    >>> terms = staleness_terms(batches, models, gamma=1.0)
    >>> bool(terms.psi_bar[0, 2] > terms.psi_bar[1, 2] > 0)   # older models are staler
    True
    >>> terms = staleness_terms(batches, models, gamma=1.0, scale="expected-loss")
    >>> wrong = int((models[0].predict(batches[2][0]) != batches[2][1]).sum())   # Q_2 is X_2 here
    >>> wrong, round(float(terms.psi_now[0, 2]), 1)   # M_0's wrong answers to Q_2, and their expected number
    (20, 20.9)
    """
    check_psi_scale(scale)
    check_psi_method(method)
    _check_rel_error(rel_error, DEFAULT_CONFIDENCE)
    data, Qs = _split_batches(batches, queries)
    T = len(data)
    if predictions is None:
        if models is None or len(models) != T:
            raise InputError(f"models: expected {T} fitted models (one per batch), "
                             f"got {None if models is None else len(models)}")
        predictions = predict_later(models, [X for X, _ in data])
    elif len(predictions) != T:
        raise InputError(f"predictions: expected {T} rows (one per model), got {len(predictions)}")
    g = resolve_gamma(gamma, stack_rows([X for X, _ in data])) if isinstance(gamma, str) \
        else resolve_gamma(gamma, data[0][0])
    losses = _loss_table(data, predictions, resolve_loss(loss))
    approx = ("sample" if method == "auto" else method, rel_error, seed, max_block_bytes)
    if scale == "paper":
        psi_now = _first_terms(data, Qs, losses, g, method, approx)
        psi_then = _second_terms(data, Qs, losses, g, method, approx)
    else:
        psi_now = _first_terms_expected(data, Qs, losses, g, method, approx)
        psi_then = _second_terms_expected(data, Qs, losses, g, method, approx)
    return StalenessTerms(psi_now=psi_now, psi_then=psi_then, gamma=g, scale=scale)


def _loss_table(data, predictions, loss_fn) -> list[list[np.ndarray | None]]:
    """``losses[t'][t]`` = ℓ(M_t' on D_t) per sample, for t >= t' (None below)."""
    losses: list[list[np.ndarray | None]] = []
    for tp, preds in enumerate(predictions):
        y_later = np.concatenate([y for _, y in data[tp:]])
        values = per_sample_losses(loss_fn, y_later, np.concatenate(preds), f"the batches from {tp} on")
        losses.append([None] * tp + np.split(values, np.cumsum([p.shape[0] for p in preds])[:-1]))
    return losses


def _first_terms(data, Qs, losses, g, method, approx) -> np.ndarray:
    """Ψ(Q_t, D_t, M_t') for every older t' at once: Σ_x ℓ_t'(x) w_t(x) with the kernel weights
    w_t(x) = Σ_{q ∈ Q_t} K(q, x), computed once per batch."""
    T = len(data)
    psi_now = np.full((T, T), np.nan)
    for t in range(1, T):
        L = np.column_stack([losses[tp][t] for tp in range(t)])
        psi_now[:t, t] = first_terms_of(data[t][0], Qs[t], L, g, method, approx, t)
    return psi_now


def first_terms_of(X, Q, L: np.ndarray, g: float, method: str, approx: tuple, t: int) -> np.ndarray:
    """Ψ(Q_t, D_t, M) of batch ``t`` for each loss column of ``L`` (one per older model), from every row."""
    approximate, rel_error, seed, max_block_bytes = approx
    if _computes_exactly(method, Q.shape[0], X.shape[0]):
        sums = _weighted_kernel_sums(X, Q, None, g, max_block_bytes) @ L
    else:
        keep = np.flatnonzero(L.any(axis=1))
        sums = _pair_sums(Q, X[keep], L[keep], g, approximate, rel_error, DEFAULT_CONFIDENCE,
                          _child_seed(seed, 0, t), None, max_block_bytes).value
    return sums / X.shape[0]


def _second_terms(data, Qs, losses, g, method, approx) -> np.ndarray:
    """Ψ(Q_t, D_t', M_t'): kernels only at the training points the model gets wrong."""
    approximate, rel_error, seed, max_block_bytes = approx
    T = len(data)
    psi_then = np.full((T, T), np.nan)
    for tp in range(T - 1):
        X, own = data[tp][0], losses[tp][tp]
        wrong = np.flatnonzero(own)
        later = range(tp + 1, T)
        if wrong.size == 0:
            psi_then[tp, tp + 1:] = 0.0
        elif all(_computes_exactly(method, Qs[t].shape[0], wrong.size) for t in later):   # all later queries at once
            per_query = _weighted_kernel_sums(stack_rows(Qs[tp + 1:]), X[wrong], own[wrong], g, max_block_bytes)
            starts = np.concatenate([[0], np.cumsum([Qs[t].shape[0] for t in later])[:-1]])
            psi_then[tp, tp + 1:] = np.add.reduceat(per_query, starts) / X.shape[0]
        else:
            for t in later:
                how = "exact" if _computes_exactly(method, Qs[t].shape[0], wrong.size) else approximate
                psi_then[tp, t] = _pair_sums(Qs[t], X[wrong], own[wrong].reshape(-1, 1), g, how, rel_error,
                                             DEFAULT_CONFIDENCE, _child_seed(seed, 1, tp, t), None,
                                             max_block_bytes).value[0] / X.shape[0]
    return psi_then


def _first_terms_expected(data, Qs, losses, g, method, approx) -> np.ndarray:
    """Expected-loss Ψ(Q_t, D_t, M_t') for every older t' at once: Σ_x ℓ_t'(x) w_t(x) with the weights
    w_t(x) = Σ_{q ∈ Q_t} K(q, x) / m_t(q), m_t(q) = Σ_{x ∈ X_t} K(q, x), computed once per batch."""
    approximate, rel_error, seed, max_block_bytes = approx
    T = len(data)
    psi_now = np.full((T, T), np.nan)
    for t in range(1, T):
        (X, _), Q = data[t], Qs[t]
        L = np.column_stack([losses[tp][t] for tp in range(t)])
        if _computes_exactly(method, Q.shape[0], X.shape[0]):
            psi_now[:t, t] = _nw_point_weights(Q, X, g, max_block_bytes) @ L
        else:
            psi_now[:t, t] = _expected_loss_sums(Q, X, L, None, np.ones(X.shape[0]), g, approximate, rel_error,
                                                 DEFAULT_CONFIDENCE, _child_seed(seed, 0, t), max_block_bytes).value
    return psi_now


def _second_terms_expected(data, Qs, losses, g, method, approx) -> np.ndarray:
    """Expected-loss Ψ(Q_t, D_t', M_t'): kernels at the rows M_t' gets wrong and at a stratified
    :func:`mass_sample` of its batch (every row when the batch is small), as the lifecycle keeps them."""
    approximate, rel_error, seed, max_block_bytes = approx
    T = len(data)
    psi_then = np.full((T, T), np.nan)
    for tp in range(T - 1):
        X, own = data[tp][0], losses[tp][tp]
        later = range(tp + 1, T)
        if not own.any():
            psi_then[tp, tp + 1:] = 0.0
            continue
        index, weight = mass_sample(X, losses=own, seed=_child_seed(seed, 2, tp))
        P, L = X[index], own[index].reshape(-1, 1)
        if all(_computes_exactly(method, Qs[t].shape[0], index.size) for t in later):   # all later queries at once
            per_query = _nw_ratios(stack_rows(Qs[tp + 1:]), P, L, None, weight, g, max_block_bytes)[:, 0]
            starts = np.concatenate([[0], np.cumsum([Qs[t].shape[0] for t in later])[:-1]])
            psi_then[tp, tp + 1:] = np.add.reduceat(per_query, starts)
        else:
            for t in later:
                how = "exact" if _computes_exactly(method, Qs[t].shape[0], index.size) else approximate
                psi_then[tp, t] = _expected_loss_sums(Qs[t], P, L, None, weight, g, how, rel_error,
                                                      DEFAULT_CONFIDENCE, _child_seed(seed, 1, tp, t),
                                                      max_block_bytes).value[0]
    return psi_then


def cost_matrix(batches: Sequence, models: Sequence | None, kappa, *, queries=None,
                predictions: list[list[np.ndarray]] | None = None,
                gamma: Gamma = DEFAULT_GAMMA, loss: str | LossFn = "zero_one",
                method: str = "exact", rel_error: float = DEFAULT_REL_ERROR, seed=0,
                max_block_bytes: int = MAX_BLOCK_BYTES, scale: str = DEFAULT_PSI_SCALE) -> np.ndarray:
    """The cost matrix C of Eq. 4 for a window of batches (see :func:`staleness_terms`).

    ``kappa`` is the cost of one retrain, a scalar or one per batch, in Ψ units (of ``scale``:
    with ``"expected-loss"``, in query losses).

    >>> class Constant:
    ...     def predict(self, X): return np.zeros(len(X), dtype=int)
    >>> X = np.zeros((2, 1))
    >>> C = cost_matrix([(X, [0, 0]), (X, [1, 1])], [Constant(), Constant()], kappa=5, gamma=1.0)
    >>> C   # the old model now errs on every point, each query sees 2 points: Ψ̄ = 2·2·1/2
    array([[ 5.,  2.],
           [inf,  5.]])
    >>> cost_matrix([(X, [0, 0]), (X, [1, 1])], [Constant(), Constant()], kappa=5, gamma=1.0,
    ...             scale="expected-loss")   # both of its 2 answers now wrong: 2 expected query errors
    array([[ 5.,  2.],
           [inf,  5.]])
    """
    T = len(batches)
    check_kappa(kappa, T)
    terms = staleness_terms(batches, models, queries=queries, predictions=predictions,
                            gamma=gamma, loss=loss, method=method, rel_error=rel_error, seed=seed,
                            max_block_bytes=max_block_bytes, scale=scale)
    return terms.cost_matrix(kappa)


def check_cost_matrix(C) -> np.ndarray:
    """Validate the cost-matrix contract; return C as a float64 array.

    >>> check_cost_matrix([[1.0, 0.2], [1.0, 1.0]])
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: C: has finite entries below the diagonal; expected +inf there
    (C[t', t] is used only for t' <= t)
    """
    try:
        C = np.asarray(C, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("C: expected a square 2-D float array") from None
    if C.ndim != 2 or C.shape[0] != C.shape[1] or C.shape[0] == 0:
        raise InputError(f"C: expected a non-empty square (T, T) array, got shape {C.shape}")
    T = C.shape[0]
    if np.isfinite(C[np.tril_indices(T, -1)]).any():
        raise InputError("C: has finite entries below the diagonal; expected +inf there "
                         "(C[t', t] is used only for t' <= t)")
    upper = C[np.triu_indices(T)]
    if not np.isfinite(upper).all():
        raise InputError("C: has NaN or inf on or above the diagonal; expected finite costs there")
    diag = np.diag(C)
    if (diag <= 0).any():
        raise InputError("C: has a diagonal entry <= 0; expected retraining costs kappa > 0")
    return C


def check_strategy(strategy, T: int) -> np.ndarray:
    """Validate a strategy of length T (s_0 = 0; each s_t is s_{t-1} or t); return it as ints.

    >>> check_strategy([0, 0, 2], 3)
    array([0, 0, 2])
    """
    s = np.asarray(strategy)
    if s.shape != (T,) or not np.issubdtype(s.dtype, np.integer):
        raise InputError(f"strategy: expected {T} integer model indices (one per batch), got {strategy!r}")
    if s[0] != 0:
        raise InputError("strategy: expected s_0 = 0 (the first model is trained on the first batch)")
    t = np.arange(T)
    ok = (s[1:] == s[:-1]) | (s[1:] == t[1:])
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0]) + 1
        raise InputError(f"strategy: s_{bad} = {s[bad]} is neither s_{bad - 1} (Keep) nor {bad} (Retrain)")
    return s.astype(np.int64)


def strategy_from_retrains(retrain_at, T: int) -> np.ndarray:
    """Strategy from the batches at which a model is trained (0 is implied).

    >>> strategy_from_retrains([2], 4)
    array([0, 0, 2, 2])
    """
    mark = np.zeros(T, dtype=bool)
    mark[0] = True
    r = np.asarray(list(retrain_at), dtype=np.int64)
    if r.size and ((r < 0) | (r >= T)).any():
        raise InputError(f"retrain_at: expected batch indices in [0, {T}), got {list(retrain_at)}")
    mark[r] = True
    return np.maximum.accumulate(np.where(mark, np.arange(T), 0))


def retrains_from_strategy(strategy) -> list[int]:
    """Batches with a Retrain decision (s_t = t, t > 0); the initial model is not one.

    >>> retrains_from_strategy([0, 0, 2, 2, 4])
    [2, 4]
    """
    s = np.asarray(strategy)
    return [int(t) for t in np.flatnonzero(s == np.arange(s.size)) if t > 0]


def cumulative_strategy_cost(C, strategy) -> np.ndarray:
    """Running total of Eq. 6 after each batch.

    >>> cumulative_strategy_cost(np.array([[2.0, 0.5, 3.0], [np.inf, 2.0, 0.1],
    ...                                    [np.inf, np.inf, 2.0]]), [0, 0, 0])
    array([2. , 2.5, 5.5])
    """
    C = check_cost_matrix(C)
    s = check_strategy(strategy, C.shape[0])
    return np.cumsum(C[s, np.arange(C.shape[0])])


def strategy_cost(C, strategy) -> float:
    """cost(S) = Σ_t C[s_t, t] (Eq. 6).

    >>> C = np.array([[2.0, 0.5, 3.0], [np.inf, 2.0, 0.1], [np.inf, np.inf, 2.0]])
    >>> strategy_cost(C, [0, 0, 0]), strategy_cost(C, [0, 1, 1])
    (5.5, 4.1)
    """
    return float(cumulative_strategy_cost(C, strategy)[-1])


def scpe(cost: float, oracle_cost: float) -> float:
    """Strategy cost percentage error 100·|b − a|/|b| with b the ORACLE cost (§7.5).

    >>> scpe(12.0, 10.0)
    20.0
    """
    cost, oracle_cost = float(cost), float(oracle_cost)
    if not np.isfinite(oracle_cost) or oracle_cost == 0:
        raise InputError(f"oracle_cost: expected a finite non-zero cost, got {oracle_cost}")
    return 100.0 * abs(oracle_cost - cost) / abs(oracle_cost)
