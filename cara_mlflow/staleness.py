"""Staleness costs ψ, Ψ and Ψ̄ of the CARA paper (Eq. 1–3, 15, 16).

For a model ``M`` trained on batch ``t'``, the staleness of its answers to the
queries ``Q_t`` given data ``D = (X, y)`` is (Eq. 1–2)::

    Ψ(Q, D, M) = Σ_q (1/|D|) Σ_(x,y)∈D  K(q, x) · ℓ(M, x, y)
               = (1/|D|) Σ_x ℓ(M, x, y) · Σ_q K(q, x)

with the RBF similarity ``K(q, x) = exp(-γ ||q - x||²)`` (Eq. 15) and a per-sample
loss ℓ (0-1 by default, Eq. 16). The relative staleness (Eq. 3) is
``Ψ̄_{t,t'} = Ψ(Q_t, D_t, M_t') − Ψ(Q_t, D_t', M_t')``: how much worse the model
got near today's queries, from the data it was trained on to today's data.

Only points with a non-zero loss contribute to the sums, so kernels are
evaluated only there. Kernel blocks are bounded to ``max_block_bytes`` (64 MB by
default) so that 10⁵ queries × 10⁴ points never hold the whole kernel.

Units: Ψ counts "similarity-weighted errors near the queries"; κ is given in the
same units (DESIGN.md, "Units").

Scales (``scale``, one of :data:`PSI_SCALES`)
---------------------------------------------
``"paper"`` is Eq. 1 above: ψ(q) = (1/|D|) Σ_x K(q, x) ℓ(x), whose size depends on the
kernel's mass around q as much as on the loss there. ``"expected-loss"`` divides by that mass::

    ψ(q) = Σ_x K(q, x) ℓ(x) / m(q),    m(q) = Σ_x K(q, x)   (x over all of D, zero loss too)

a Nadaraya–Watson estimate of the loss near q, so Ψ = Σ_q ψ(q) is the expected total loss
over the queries (0-1 loss: the expected number of wrong answers) and κ is in query losses.
In Ψ̄ each term uses the mass of its own data: "now" m_t(q) over D_t, "then" m_t'(q) over
D_t'. Far from every point the kernel underflows; each query's sums share the factor
exp(γ · its nearest squared distance), so ψ(q) is then the loss of its nearest points,
never 0/0. When only part of a batch is kept (its rows with a non-zero loss), its mass is
estimated from a :func:`mass_sample` of the rest: ``mass_points`` and ``mass_weight`` of
:func:`psi_from_losses`.

Large batches (``method``)
--------------------------
``"exact"`` sums every (query, wrong point) pair: O(B_Q · n_wrong · d). ``"sample"`` and
``"rff"`` estimate each sum S = Σ_q Σ_x w(x) K(q, x), seeded:

1. (``"rff"`` only) random Fourier features z (D of them, γ-matched) give
   K(q, x) ≈ z(q)·z(x), so A = (Σ_q z(q)) · (Σ_x w(x) z(x)) approximates S for all pairs
   in O((B_Q + n_wrong) · d · D); ``"sample"`` takes A = 0;
2. the residual S − A = Σ_q Σ_x w(x) (K(q, x) − z(q)·z(x)) is estimated from independent
   random blocks (``BLOCK_QUERIES`` queries × ``BLOCK_POINTS`` points, each drawn uniformly
   without replacement), each summed *exactly* and scaled to all pairs: every block is an
   unbiased estimate, so Ŝ = A + their mean is unbiased whatever D is; the features only
   make the residual, hence the spread between blocks, smaller;
3. blocks are added (at least ``MIN_BLOCKS``) until the Student-t confidence interval of Ŝ
   (level ``confidence``) is within ``rel_error`` of Ŝ; when that would take more pairs than
   the exact sum, the exact sum is computed instead.

**Error bound** (documented contract): with probability about ``confidence`` (0.99 by
default) each estimated Ψ term is within ``rel_error`` (1% by default) of the exact one;
:func:`pair_sums` returns the interval's half-width with the value. The interval is a CLT
interval over i.i.d. block estimates: reliable when the block estimates are not dominated by
rare blocks (a few queries sitting on a dense cluster of errors that blocks mostly miss).
Measured: 480 of 480 estimates within 1%, interval coverage 98.3–100% over four kinds of
input (``benchmarks/calibrate_psi.py``).
``"auto"`` is exact while B_Q · n_wrong ≤ :data:`AUTO_EXACT_PAIRS` (bit-identical to
``"exact"`` there) and ``"sample"`` above: on COVERTYPE-like batches (B_D = 10⁶, B_Q = 10⁵)
the blocks alone met 1% at a fraction of the features' cost, and plain features (no blocks)
missed 1% (benchmarks/README.md, ``bench_staleness.py``).

With ``scale="expected-loss"`` Ψ = Σ_q r(q) is a sum of per-query ratios, so ``"sample"``
draws queries uniformly without replacement (seeded) and computes each drawn query's ratio
*exactly*, over every point it was given (no ratio of sampled sums, hence no ratio bias);
Ŝ = B_Q · mean r, with the same discipline: at least :data:`MIN_QUERIES` queries, more until
the Student-t interval (finite-population corrected) is within ``rel_error``, the exact sum
when that would take as many queries as there are. ``"rff"`` has no feature form for a ratio
and uses ``"sample"`` there; ``"auto"`` is exact while B_Q · (points given) ≤
:data:`AUTO_EXACT_PAIRS`. A query costs as many kernels as there are points (all of D's rows
for the mass): on very large batches pass a stratified :func:`mass_sample` to bound it.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence, Union

import numpy as np
from scipy import sparse

from .errors import InputError
from .losses import LOSSES, LossFn, per_sample_losses, resolve_loss, squared_loss, zero_one_loss
from .names import PSI_METHODS

__all__ = [
    "stack_rows",
    "LOSSES",
    "DEFAULT_GAMMA",
    "MAX_BLOCK_BYTES",
    "resolve_gamma",
    "resolve_loss",
    "zero_one_loss",
    "squared_loss",
    "kernel_sums",
    "point_weights",
    "PSI_METHODS",
    "AUTO_EXACT_PAIRS",
    "DEFAULT_REL_ERROR",
    "DEFAULT_CONFIDENCE",
    "PairSums",
    "check_psi_method",
    "similarity_spread",
    "rff_feature_count",
    "pair_sums",
    "PSI_SCALES",
    "DEFAULT_PSI_SCALE",
    "check_psi_scale",
    "MASS_SAMPLE_ROWS",
    "mass_sample",
    "psi_from_losses",
    "absolute_staleness",
    "relative_staleness",
]

Gamma = Union[float, str]

#: ``"scale"``: γ = 1 / (d · Var(X)), as scikit-learn's SVC — "the inverse of the
#: variance", chosen "based on the number of features d" (paper §7, §7.6).
DEFAULT_GAMMA = "scale"

#: Upper bound on the kernel block held in memory at once (bytes of float64).
MAX_BLOCK_BYTES = 64 * 2**20

#: Kernel blocks are cut to this size even when ``max_block_bytes`` allows more (faster here).
_WORK_BLOCK_BYTES = 8 * 2**20

#: ``method="auto"`` is exact up to this many (query, weighted point) pairs per sum. About
#: 0.1 s of exact kernels here; above it the features and the sample cost less
#: (benchmarks/bench_staleness.py measures the crossing).
AUTO_EXACT_PAIRS = 2**25

#: Default target relative error and confidence of ``method="sample"`` and ``"rff"``.
DEFAULT_REL_ERROR = 0.01
DEFAULT_CONFIDENCE = 0.99

#: Shape of one sampled block of ``"sample"`` and ``"rff"`` (queries × points, ≈ 1 M pairs:
#: smaller blocks ran at half the exact path's pairs/s here) and the fewest blocks taken before
#: the interval is trusted.
BLOCK_QUERIES = 512
BLOCK_POINTS = 2048
MIN_BLOCKS = 16

#: How ψ(q) is scaled (module docstring, "Scales"; DESIGN.md "Units"): ``paper`` Eq. 1, divided by
#: |D|; ``expected-loss`` divided by the kernel mass at q, so Ψ is the expected loss over the queries.
PSI_SCALES: tuple[str, ...] = ("paper", "expected-loss")
DEFAULT_PSI_SCALE = "paper"

#: ``scale="expected-loss"`` with ``"sample"``: the fewest queries drawn before the interval is trusted
#: (each query's ratio is exact, so the estimate is a plain mean of bounded values).
MIN_QUERIES = 512

#: Rows of zero loss kept by :func:`mass_sample` to stand for the rest of a batch in its kernel mass.
#: Measured by ``benchmarks/bench_staleness.py --mass-study``: a model (LR, HGB) per batch 0, 10, …, 70,
#: its "then" term at the next batch's queries with the stratified sample's mass against every row's,
#: 5 sample seeds; relative error of the then-term, mean (max) over batches and seeds:
#:
#:   rows kept            250           500           1000          2000          4000
#:   COVERTYPE (5811 rows, d = 54, 581 queries)
#:     LR             0.37% (1.2%)  0.28% (0.9%)  0.18% (0.7%)  0.14% (0.4%)  0.04% (0.15%)
#:     HGB            0.41% (1.3%)  0.33% (0.8%)  0.21% (1.3%)  0.17% (0.4%)  0.04% (0.13%)
#:   CovCon-D (20 000 rows, d = 2, 2000 queries)
#:     LR             2.9% (18%)    1.8% (16%)    0.97% (6.1%)  0.83% (5.8%)  0.54% (6.1%)
#:     HGB            3.2% (20%)    2.4% (22%)    1.5% (13%)    0.99% (8.9%)  0.77% (7.7%)
#:
#: 2000 keeps the mean within 1% (the sampled Ψ's own default error) for ~2000 extra kernels per
#: query, on top of the rows with a non-zero loss that the lifecycle keeps anyway. The maxima are the
#: CovCon-D batch whose queries lie 6 sd from the training batch (its mean wraps from 0.6 to 0): there
#: the mass comes from a few edge rows, and the error is < 1 query loss of 2000 (Ψ_now ≈ 1000 there).
MASS_SAMPLE_ROWS = 2000


def stack_rows(arrays: Sequence) -> "np.ndarray | sparse.csr_matrix":
    """Stack 2-D arrays by rows; CSR if any of them is sparse (one-hot features stay sparse).

    >>> stack_rows([np.zeros((1, 2)), np.ones((2, 2))]).shape
    (3, 2)
    >>> stack_rows([sparse.csr_matrix(np.eye(2)), np.ones((1, 2))]).format
    'csr'
    """
    if any(sparse.issparse(a) for a in arrays):
        return sparse.vstack([sparse.csr_matrix(a) for a in arrays], format="csr")
    return np.concatenate(arrays, axis=0)


def _row_sq_norms(X) -> np.ndarray:
    if sparse.issparse(X):
        return np.asarray(X.multiply(X).sum(axis=1), dtype=np.float64).ravel()
    return np.einsum("ij,ij->i", X, X)


def resolve_gamma(gamma: Gamma, X: np.ndarray) -> float:
    """Resolve ``gamma`` to the positive float used by the RBF kernel.

    ``"scale"`` gives ``1 / (d · Var(X))`` with the variance over all entries of
    ``X`` (scikit-learn's convention); a constant X falls back to ``1 / d``.
    A number is checked and returned as a float.

    >>> X = np.array([[0.0, 0.0], [2.0, 2.0]])
    >>> resolve_gamma("scale", X)   # Var = 1, d = 2
    0.5
    >>> resolve_gamma(3, X)
    3.0
    """
    if isinstance(gamma, str):
        if gamma != "scale":
            raise InputError(f"gamma: expected a positive number or 'scale', got {gamma!r}")
        if sparse.issparse(X):
            size = X.shape[0] * X.shape[1]
            if size == 0:
                raise InputError("gamma='scale' needs a non-empty 2-D X to measure its variance")
            mean = X.sum() / size
            var = float(X.multiply(X).sum() / size - mean * mean)
        else:
            X = np.asarray(X, dtype=np.float64)
            if X.ndim != 2 or X.shape[0] == 0:
                raise InputError("gamma='scale' needs a non-empty 2-D X to measure its variance")
            var = float(X.var())
        d = X.shape[1]
        return 1.0 / (d * var) if var > 0 else 1.0 / d
    try:
        value = float(gamma)
    except (TypeError, ValueError):
        raise InputError(f"gamma: expected a positive number or 'scale', got {gamma!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"gamma: expected a positive finite number or 'scale', got {gamma!r}")
    return value


def _check_points(name: str, X, d: int | None = None) -> np.ndarray:
    """Validate a 2-D finite float array, dense or scipy-sparse (public functions call this;
    kernels assume it). Sparse input becomes CSR and is never densified whole."""
    if sparse.issparse(X):
        X = sparse.csr_matrix(X, dtype=np.float64)
        if X.shape[0] == 0:
            raise InputError(f"{name}: is empty; expected at least one row")
        if d is not None and X.shape[1] != d:
            raise InputError(f"{name}: has {X.shape[1]} features, expected {d} (as the other inputs)")
        if not np.isfinite(X.data).all():
            raise InputError(f"{name}: contains NaN or inf; expected finite values")
        return X
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected a 2-D numeric array") from None
    if X.ndim == 1 and d is not None and X.size == d:
        X = X.reshape(1, d)
    if X.ndim != 2:
        raise InputError(f"{name}: expected a 2-D array (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] == 0:
        raise InputError(f"{name}: is empty; expected at least one row")
    if d is not None and X.shape[1] != d:
        raise InputError(f"{name}: has {X.shape[1]} features, expected {d} (as the other inputs)")
    if not np.isfinite(X).all():
        raise InputError(f"{name}: contains NaN or inf; expected finite values")
    return X


def _check_data(name: str, data, d: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    try:
        X, y = data
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected an (X, y) pair") from None
    X = _check_points(f"{name} X", X, d)
    y = np.asarray(y)
    if y.shape[0] != X.shape[0]:
        raise InputError(f"{name}: X has {X.shape[0]} rows but y has {y.shape[0]}; expected equal")
    return X, y


def _block_rows(n_cols: int, max_block_bytes: int) -> int:
    return max(1, int(max_block_bytes // (8 * max(n_cols, 1))))


def _weighted_kernel_sums(A: np.ndarray, B: np.ndarray, weights: np.ndarray | None,
                          gamma: float, max_block_bytes: int) -> np.ndarray:
    """For each row a of A: Σ_b weights_b · exp(-γ ||a - b||²). No validation.

    ``weights`` may be a matrix (one column per weighting); then the result has a column each.

    Rows of A are processed in blocks so that a block of the kernel stays below
    ``max_block_bytes`` (and below :data:`_WORK_BLOCK_BYTES`, which runs faster here: the
    block's passes stay nearer the cache); the exponent −γ||a − b||² comes from one GEMM
    per block (2γ a·b − γ||a||² − γ||b||², clipped at 0 against rounding), exponentiated
    in place: three passes over the block besides the GEMM and the exp.
    """
    out = np.zeros((A.shape[0],) + (() if weights is None else weights.shape[1:]), dtype=np.float64)
    if B.shape[0] == 0 or A.shape[0] == 0:
        return out
    for rows, block in _exponent_blocks(A, B, gamma, max_block_bytes):
        np.exp(block, out=block)
        out[rows] = block.sum(axis=1) if weights is None else block @ weights
    return out


def _exponent_blocks(A, B, gamma: float, max_block_bytes: int):
    """Yield ``(rows, block)`` with ``block[i, j] = −γ||a_i − b_j||²`` over bounded blocks of A's rows
    (see :func:`_weighted_kernel_sums`); each block is the caller's to overwrite. No validation."""
    b_sq = _row_sq_norms(B) * -gamma
    a_sq = _row_sq_norms(A) * -gamma
    B2 = B * (2.0 * gamma)
    rows = _block_rows(B.shape[0], min(max_block_bytes, _WORK_BLOCK_BYTES))
    for start in range(0, A.shape[0], rows):
        a = A[start:start + rows]
        block = a @ B2.T
        # sparse × sparse stays sparse: densify only this bounded block
        block = block.toarray() if sparse.issparse(block) else np.asarray(block, dtype=np.float64)
        block += a_sq[start:start + rows, None]
        block += b_sq[None, :]
        np.minimum(block, 0.0, out=block)
        yield slice(start, start + block.shape[0]), block


def _shifted_kernel_blocks(A, B, gamma: float, max_block_bytes: int):
    """Yield ``(rows, shift, block)`` over blocks of A's rows, bounded as in :func:`_weighted_kernel_sums`:
    ``shift[i] = max_j −γ||a_i − b_j||²`` and ``block[i, j] = exp(−γ||a_i − b_j||² − shift[i])``, so the
    row's nearest b gets 1 however far it is (no underflow to an all-zero row). No validation."""
    for rows, block in _exponent_blocks(A, B, gamma, max_block_bytes):
        shift = block.max(axis=1)
        block -= shift[:, None]
        np.exp(block, out=block)
        yield rows, shift, block


def _shifted_sums(A, B, W: np.ndarray, gamma: float, max_block_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(shift, S)`` with ``S[i, c] = Σ_j W[j, c] exp(−γ||a_i − b_j||² − shift[i])`` (see
    :func:`_shifted_kernel_blocks`). No validation."""
    shift, sums = np.empty(A.shape[0]), np.empty((A.shape[0], W.shape[1]))
    for rows, c, block in _shifted_kernel_blocks(A, B, gamma, max_block_bytes):
        shift[rows] = c
        sums[rows] = block @ W
    return shift, sums


def _nw_ratios(Q, P, L: np.ndarray, M, w: np.ndarray, gamma: float, max_block_bytes: int) -> np.ndarray:
    """``r[q, c] = Σ_x L[x, c] K(q, x) / Σ_j w_j K(q, m_j)`` for every query (row of Q) and column c.

    ``M=None``: the mass runs over P's own rows (``w`` one per row of P), and both sums share the
    query's factor exp(γ · its nearest squared distance to P): the denominator is at least the
    nearest row's weight, never 0. ``M`` given: the sums run over P and M, each shifted by its own
    nearest point and combined in logs (a query much nearer a loss row than any mass point gets a
    large but finite ratio, a column with no loss near the query 0). ``w`` > 0. No validation.
    """
    k = L.shape[1]
    if M is None:
        _, sums = _shifted_sums(Q, P, np.column_stack([L, w]), gamma, max_block_bytes)
        return sums[:, :k] / sums[:, k:]
    c_p, num = _shifted_sums(Q, P, L, gamma, max_block_bytes)
    c_m, mass = _shifted_sums(Q, M, w.reshape(-1, 1), gamma, max_block_bytes)
    with np.errstate(divide="ignore", over="ignore"):
        return np.exp((c_p - c_m)[:, None] + np.log(num) - np.log(mass))


def _nw_point_weights(Q, X, gamma: float, max_block_bytes: int) -> np.ndarray:
    """w(x) = Σ_q K(q, x) / m(q) with m(q) = Σ_x K(q, x) over X's rows, for every row x of X: the
    expected-loss scale's kernel weights (Σ_x w(x) ℓ(x) = Σ_q ψ(q)), stabilised per query. No validation."""
    out = np.zeros(X.shape[0])
    for _, _, block in _shifted_kernel_blocks(Q, X, gamma, max_block_bytes):
        out += (1.0 / block.sum(axis=1)) @ block
    return out


def kernel_sums(queries, points, gamma: Gamma = DEFAULT_GAMMA, *,
                max_block_bytes: int = MAX_BLOCK_BYTES) -> np.ndarray:
    """Σ_q K(q, x) for every point x: the weight each data point gets from the queries.

    ``gamma="scale"`` is resolved on ``points``.

    >>> kernel_sums(np.array([[0.0], [1.0]]), np.array([[0.0]]), gamma=1.0)
    array([1.36787944])
    """
    P = _check_points("points", points)
    Q = _check_points("queries", queries, P.shape[1])
    return _weighted_kernel_sums(P, Q, None, resolve_gamma(gamma, P), max_block_bytes)


def point_weights(queries, points, gamma: float, *, scale: str = DEFAULT_PSI_SCALE,
                  max_block_bytes: int = MAX_BLOCK_BYTES) -> np.ndarray:
    """The weight w(x) of every point in Ψ = Σ_x w(x) ℓ(x) (``points`` = the whole batch, every row):
    ``paper``: Σ_q K(q, x) / |D|; ``expected-loss``: Σ_q K(q, x) / m(q) (stabilised per query).

    Ψ is linear in the losses with these weights, so two models' losses on the same rows are
    compared with one set of kernels.

    >>> Q, X = np.zeros((1, 1)), np.array([[0.0], [5.0]])
    >>> w = point_weights(Q, X, 1.0)
    >>> float(w @ [1.0, 0.0]) == psi_from_losses(Q, X, np.array([1.0, 0.0]), 1.0)
    True
    >>> point_weights(Q, X, 1.0, scale="expected-loss").round(6).tolist()
    [1.0, 0.0]
    """
    check_psi_scale(scale)
    P = _check_points("points", points)
    Q = _check_points("queries", queries, P.shape[1])
    if scale == "paper":
        return _weighted_kernel_sums(P, Q, None, float(gamma), max_block_bytes) / max(P.shape[0], 1)
    return _nw_point_weights(Q, P, float(gamma), max_block_bytes)


def similarity_spread(queries: np.ndarray, points: np.ndarray, gamma: float, *, sample: int = 1000,
                      seed=0) -> tuple[float, float]:
    """Fractions of (query, point) similarities K that are ≈ 0 (< 1e-3) and ≈ 1 (> 0.999), on up to
    ``sample`` queries × ``sample`` points drawn without replacement: a kernel where almost all
    are ≈ 0 sees only exact matches, and one where almost all are ≈ 1 makes Ψ a plain loss count.

    >>> X = np.arange(10.0).reshape(-1, 1)
    >>> similarity_spread(X, X, 1e-6)[1], similarity_spread(X, X, 1e3)[0]
    (1.0, 0.9)
    """
    rng = np.random.default_rng(seed)
    Q = queries[rng.choice(len(queries), min(sample, len(queries)), replace=False)]
    P = points[rng.choice(len(points), min(sample, len(points)), replace=False)]
    sq = _row_sq_norms(Q)[:, None] + _row_sq_norms(P)[None, :] - 2.0 * (Q @ P.T)
    K = np.exp(-gamma * np.maximum(sq, 0.0))
    return float((K < 1e-3).mean()), float((K > 0.999).mean())


def check_psi_method(method: str) -> str:
    """Return ``method`` if it is one of :data:`PSI_METHODS`, else raise a one-line InputError.

    >>> check_psi_method("auto")
    'auto'
    """
    if method not in PSI_METHODS:
        raise InputError(f"psi method: unknown {method!r}; expected one of {', '.join(PSI_METHODS)}")
    return method


def check_psi_scale(scale: str) -> str:
    """Return ``scale`` if it is one of :data:`PSI_SCALES`, else raise a one-line InputError.

    >>> check_psi_scale("expected-loss")
    'expected-loss'
    >>> check_psi_scale("mean")
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: psi scale: unknown 'mean'; expected one of paper, expected-loss
    """
    if scale not in PSI_SCALES:
        raise InputError(f"psi scale: unknown {scale!r}; expected one of {', '.join(PSI_SCALES)}")
    return scale


def mass_sample(X, n: int = MASS_SAMPLE_ROWS, *, losses=None, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a batch that stand for all of it in the kernel mass m(q) = Σ_x K(q, x), and their weights.

    Returns ``(index, weight)``: sorted row indices into ``X`` (anything with ``len``, or a row count)
    and one positive weight per kept row, with Σ weight = the batch's row count, so that
    Σ_i weight_i K(q, X[index_i]) is an unbiased estimate of m(q) (pass them as ``mass_points`` /
    ``mass_weight`` of :func:`psi_from_losses`).

    With ``losses`` (one per row) the sample is *stratified*: every row with a non-zero loss is kept
    with weight 1 (the rows the lifecycle keeps anyway), and ``n`` rows drawn uniformly without
    replacement from the zero-loss rows stand for all of those, each with weight
    (zero-loss rows) / n. The mass is then exact wherever the loss is, ψ(q) never exceeds the
    largest loss (0-1: at most 1), and a query nearest to a wrong row sees that row in both sums.
    Without ``losses``, ``n`` rows drawn uniformly from all rows, each with weight (rows) / n.
    When there are no more than ``n`` rows to draw from, every row is kept with weight 1 (exact).
    Seeded by ``seed`` (anything ``numpy.random.default_rng`` takes).

    >>> index, weight = mass_sample(10, 4, losses=[1, 0, 0, 0, 0, 0, 0, 0, 0, 2], seed=0)
    >>> int(index[0]), int(index[-1]), index.size, weight.tolist()
    (0, 9, 6, [1.0, 2.0, 2.0, 2.0, 2.0, 1.0])
    >>> mass_sample(np.zeros((3, 2)))[1].tolist()   # small batch: every row, exact
    [1.0, 1.0, 1.0]
    """
    n_rows = int(X) if isinstance(X, (int, np.integer)) else len(X)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"mass sample: n must be a positive number of rows, got {n!r}")
    if losses is None:
        pool, keep = np.arange(n_rows), np.zeros(0, dtype=np.int64)
    else:
        losses = np.asarray(losses, dtype=np.float64)
        if losses.shape != (n_rows,):
            raise InputError(f"mass sample: expected one loss per row ({n_rows}), got shape {losses.shape}")
        pool, keep = np.flatnonzero(losses == 0), np.flatnonzero(losses != 0)
    if pool.size <= n:
        return np.arange(n_rows), np.ones(n_rows)
    drawn = np.random.default_rng(seed).choice(pool, n, replace=False)
    index = np.concatenate([keep, drawn])
    weight = np.concatenate([np.ones(keep.size), np.full(n, pool.size / n)])
    order = np.argsort(index, kind="stable")
    return index[order], weight[order]


def _computes_exactly(method: str, n_queries: int, n_points: int) -> bool:
    """Whether ``method`` sums a (queries × points) kernel exactly: ``auto``'s switch, in one place."""
    return method == "exact" or (method == "auto" and n_queries * n_points <= AUTO_EXACT_PAIRS)


def _check_rel_error(rel_error: float, confidence: float) -> None:
    if not (isinstance(rel_error, (int, float)) and 0 < rel_error < 1):
        raise InputError(f"rel_error: expected a number in (0, 1), got {rel_error!r}")
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise InputError(f"confidence: expected a number in (0, 1), got {confidence!r}")


def rff_feature_count(rel_error: float = DEFAULT_REL_ERROR) -> int:
    """Number D of random Fourier features ``method="rff"`` uses for a target relative error.

    The features are a control variate: they shrink the residual that the sampled blocks must
    pin down (its variance falls like 1/D), while each block must also evaluate them at its
    queries and points, (512 + 2048) · D sines and cosines against the block's 10⁶
    exponentials. So D grows with the precision asked for, but stays where the features
    cost less than the block: the power of two ≥ 2.5 / ``rel_error``, within [64, 1024].

    >>> rff_feature_count(0.01), rff_feature_count(0.05), rff_feature_count(1e-4)
    (256, 64, 1024)
    """
    return int(min(1024, max(64, 2 ** int(np.ceil(np.log2(2.5 / rel_error))))))


@dataclass(frozen=True)
class PairSums:
    """Result of :func:`pair_sums`: one value per weight column.

    ``half_width`` is the confidence interval's half-width (0 where the sum is exact);
    ``method`` is the path taken (``"exact"``, ``"sample"`` or ``"rff"``); ``n_features`` the random
    Fourier features and ``n_pairs`` the (query, point) pairs whose kernel was computed.
    """

    value: np.ndarray
    half_width: np.ndarray
    method: str
    n_features: int
    n_pairs: int


def _rff(X, omega: np.ndarray, rows: slice | np.ndarray | None = None) -> np.ndarray:
    """[cos(XΩ), sin(XΩ)] / sqrt(D/2): z(q)·z(x) = mean_j cos(ω_j·(q − x)) ≈ K(q, x)."""
    proj = X @ omega if rows is None else X[rows] @ omega
    proj = np.asarray(proj, dtype=np.float64)
    out = np.empty((proj.shape[0], 2 * proj.shape[1]))
    np.cos(proj, out=out[:, :proj.shape[1]])
    np.sin(proj, out=out[:, proj.shape[1]:])
    out *= np.sqrt(1.0 / proj.shape[1])
    return out


def _rff_weighted_sum(X, weights: np.ndarray | None, omega: np.ndarray, max_block_bytes: int) -> np.ndarray:
    """Σ_x weights(x) z(x) (or Σ_x z(x)), in row blocks so that z is never held whole."""
    D = 2 * omega.shape[1]
    total = np.zeros((D,) + (() if weights is None else weights.shape[1:]))
    rows = _block_rows(D, min(max_block_bytes, _WORK_BLOCK_BYTES))
    for start in range(0, X.shape[0], rows):
        z = _rff(X, omega, slice(start, start + rows))
        total += z.sum(axis=0) if weights is None else z.T @ weights[start:start + rows]
    return total


def _student_t_quantile(p: float, df: int) -> float:
    """Student's t quantile by the Cornish-Fisher expansion in 1/df: within 3e-4 of scipy's for
    df ≥ 15 (``MIN_BLOCKS`` − 1); importing scipy.stats would cost seconds in every cron step.

    >>> round(_student_t_quantile(0.995, 15), 3), round(_student_t_quantile(0.975, 1000), 3)
    (2.947, 1.962)
    """
    z = NormalDist().inv_cdf(p)
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def _child_seed(seed, *path: int) -> np.random.SeedSequence:
    """An independent seed for sub-computation ``path`` of a seeded computation."""
    if isinstance(seed, np.random.SeedSequence):
        entropy = seed.entropy if isinstance(seed.entropy, int) else list(seed.entropy)
        return np.random.SeedSequence(entropy, spawn_key=tuple(seed.spawn_key) + path)
    return np.random.SeedSequence(seed, spawn_key=path)


def pair_sums(queries, points, weights, gamma: Gamma = DEFAULT_GAMMA, *, method: str = "auto",
              rel_error: float = DEFAULT_REL_ERROR, confidence: float = DEFAULT_CONFIDENCE,
              seed=0, n_features: int | None = None,
              max_block_bytes: int = MAX_BLOCK_BYTES) -> PairSums:
    """S_c = Σ_q Σ_x weights[x, c] · K(q, x) for every column c, exactly or estimated.

    ``weights`` is ``(n,)`` or ``(n, k)`` and non-negative; rows whose weights are all zero
    cost nothing. ``method`` is one of :data:`PSI_METHODS` (module docstring, "Large
    batches"); ``"sample"`` and ``"rff"`` are seeded by ``seed`` (anything
    ``numpy.random.default_rng`` takes) and return values within ``rel_error`` of the exact
    ones with probability about ``confidence``. ``gamma="scale"`` is resolved on ``points``. ``n_features`` overrides
    :func:`rff_feature_count` (0: no features, the query sample alone).

    >>> rng = np.random.default_rng(0)
    >>> Q, X = rng.normal(size=(10000, 5)), rng.normal(size=(4000, 5))
    >>> exact = pair_sums(Q, X, np.ones(4000), method="exact")
    >>> est = pair_sums(Q, X, np.ones(4000), method="sample", seed=1)
    >>> est.method, bool(abs(est.value / exact.value - 1) < 0.01), est.n_pairs < exact.n_pairs
    ('sample', True, True)
    >>> bool(est.half_width <= 0.01 * est.value)   # the interval the blocks met
    True
    """
    check_psi_method(method)
    _check_rel_error(rel_error, confidence)
    P = _check_points("points", points)
    Q = _check_points("queries", queries, P.shape[1])
    W = np.asarray(weights, dtype=np.float64)
    column = W.ndim == 1
    W = W.reshape(W.shape[0], -1)
    if W.shape[0] != P.shape[0] or not np.isfinite(W).all() or (W < 0).any():
        raise InputError(f"weights: expected {P.shape[0]} finite non-negative rows (one per point)")
    g = resolve_gamma(gamma, P)
    keep = np.flatnonzero(W.any(axis=1))
    P, W = P[keep], W[keep]
    result = _pair_sums(Q, P, W, g, method, rel_error, confidence, seed, n_features, max_block_bytes)
    if column:
        result = PairSums(result.value[0], result.half_width[0], result.method,
                          result.n_features, result.n_pairs)
    return result


def _pair_sums(Q, P, W: np.ndarray, gamma: float, method: str, rel_error: float, confidence: float,
               seed, n_features: int | None, max_block_bytes: int) -> PairSums:
    """:func:`pair_sums` on validated input: P holds only rows with a non-zero weight."""
    n_q, n_p, k = Q.shape[0], P.shape[0], W.shape[1]

    def exact() -> PairSums:
        value = _weighted_kernel_sums(P, Q, None, gamma, max_block_bytes) @ W if n_p else np.zeros(k)
        return PairSums(value, np.zeros(k), "exact", 0, n_q * n_p)

    if _computes_exactly(method, n_q, n_p) or n_p == 0:
        return exact()
    rng = np.random.default_rng(seed)
    if n_features is not None:
        D = 2 * (int(n_features) // 2)
    else:
        D = rff_feature_count(rel_error) if method == "rff" else 0
    # D = 0: no control variate, the blocks alone
    omega = rng.normal(0.0, np.sqrt(2.0 * gamma), size=(P.shape[1], D // 2))
    zw = _rff_weighted_sum(P, W, omega, max_block_bytes) if D else np.zeros((0, k))  # (D, k)
    approx = _rff_weighted_sum(Q, None, omega, max_block_bytes) @ zw if D else np.zeros(k)
    m_q, m_p = min(n_q, BLOCK_QUERIES), min(n_p, BLOCK_POINTS)
    if MIN_BLOCKS * m_q * m_p >= n_q * n_p:   # the first blocks alone would cost the exact sum
        return exact()
    scale = (n_q / m_q) * (n_p / m_p)
    blocks: list[np.ndarray] = []
    want = MIN_BLOCKS
    while True:
        while len(blocks) < want:
            qi = np.sort(rng.choice(n_q, m_q, replace=False))
            pi = np.sort(rng.choice(n_p, m_p, replace=False))
            Wb = W[pi]
            kernel = _weighted_kernel_sums(Q[qi], P[pi], Wb, gamma, max_block_bytes).sum(axis=0)
            if D:
                kernel -= _rff(Q, omega, qi).sum(axis=0) @ (_rff(P, omega, pi).T @ Wb)
            blocks.append(scale * kernel)
        estimates = np.array(blocks)
        value = approx + estimates.mean(axis=0)
        t = _student_t_quantile(0.5 + confidence / 2, len(blocks) - 1)
        half = t * estimates.std(axis=0, ddof=1) / np.sqrt(len(blocks))
        target = rel_error * np.abs(value)
        if (half <= target).all():
            return PairSums(value, half, "rff" if D else "sample", D, len(blocks) * m_q * m_p)
        # Blocks that would meet the worst column's target; exact if that costs more.
        with np.errstate(divide="ignore", invalid="ignore"):
            need = np.max(np.where(target > 0, len(blocks) * (half / target) ** 2, np.inf))
        if not np.isfinite(need) or 1.1 * need * m_q * m_p >= n_q * n_p:
            return exact()
        want = max(len(blocks) + MIN_BLOCKS // 4, int(np.ceil(1.1 * need)))


def _expected_loss_sums(Q, P, L: np.ndarray, M, w: np.ndarray, gamma: float, method: str, rel_error: float,
                        confidence: float, seed, max_block_bytes: int) -> PairSums:
    """S_c = Σ_q r[q, c] (:func:`_nw_ratios`) for every column c, exactly or from a query sample (module
    docstring, "Large batches"). ``"rff"`` samples as ``"sample"`` does. No validation."""
    n_q, k = Q.shape[0], L.shape[1]
    per_query = P.shape[0] + (0 if M is None else M.shape[0])

    def ratios(rows) -> np.ndarray:
        return _nw_ratios(Q[rows], P, L, M, w, gamma, max_block_bytes)

    if _computes_exactly(method, n_q, per_query) or 1.1 * MIN_QUERIES >= n_q:
        return PairSums(ratios(slice(None)).sum(axis=0), np.zeros(k), "exact", 0, n_q * per_query)
    order = np.random.default_rng(seed).permutation(n_q)
    drawn, want = np.zeros((0, k)), MIN_QUERIES
    while True:
        drawn = np.vstack([drawn, ratios(np.sort(order[drawn.shape[0]:want]))])
        m = drawn.shape[0]
        value = n_q * drawn.mean(axis=0)
        spread = n_q * _student_t_quantile(0.5 + confidence / 2, m - 1) * drawn.std(axis=0, ddof=1) / np.sqrt(m)
        half = spread * np.sqrt(1.0 - m / n_q)   # drawn without replacement
        target = rel_error * np.abs(value)
        if (half <= target).all():
            return PairSums(value, half, "sample", 0, m * per_query)
        # Queries that would meet the worst column's target; every query if that is nearly all of them.
        with np.errstate(divide="ignore", invalid="ignore"):
            need = np.max(np.where(target > 0, m * (spread / target) ** 2, np.inf))
        if not np.isfinite(need) or 1.1 * need >= n_q:
            rest = np.sort(order[m:])
            every = np.empty((n_q, k))
            every[order[:m]] = drawn
            every[rest] = ratios(rest)
            return PairSums(every.sum(axis=0), np.zeros(k), "exact", 0, n_q * per_query)
        want = max(m + MIN_QUERIES // 4, int(np.ceil(1.1 * need)))


def _mass_weights(mass_weight, n: int) -> np.ndarray:
    w = np.broadcast_to(np.asarray(mass_weight, dtype=np.float64), (n,)) if np.ndim(mass_weight) == 0 \
        else np.asarray(mass_weight, dtype=np.float64)
    if w.shape != (n,) or not np.isfinite(w).all() or (w <= 0).any():
        raise InputError(f"mass_weight: expected a positive finite number or {n} of them (one per mass point)")
    return np.ascontiguousarray(w)


def psi_from_losses(queries: np.ndarray, X: np.ndarray, losses: np.ndarray, gamma: float,
                    n_rows: int | None = None, *, method: str = "exact",
                    rel_error: float = DEFAULT_REL_ERROR, seed=0,
                    max_block_bytes: int = MAX_BLOCK_BYTES, scale: str = DEFAULT_PSI_SCALE,
                    mass_points=None, mass_weight=None) -> float:
    """Ψ = (1/n_rows) Σ_x ℓ(x) Σ_q K(q, x) from per-sample losses (inputs assumed valid).

    Kernels are evaluated only at points whose loss is non-zero, so a model's
    training batch can be summarised by its misclassified rows and its row count
    (``n_rows``, default ``len(X)``). ``method``, ``rel_error`` and ``seed``: see
    :func:`pair_sums` (the default computes every pair).

    ``scale="expected-loss"`` (module docstring, "Scales"): Ψ = Σ_q Σ_x K(q, x) ℓ(x) / m(q), with the
    mass m(q) = Σ_j mass_weight_j · K(q, mass_points_j):

    * ``mass_points=None``: the mass runs over X's rows, zero-loss rows too (they cost kernels here),
      each with ``mass_weight`` (a number, default 1, or one per row of X). With the default, X must
      be the whole batch (``n_rows`` = len(X)). A kept part of a batch is the table of
      :func:`mass_sample` with ``losses``: X = the kept rows, ``losses`` theirs (0 on the drawn rows),
      ``mass_weight`` their weights;
    * ``mass_points`` given (rows in X's space): the numerator runs over X's rows with a non-zero loss
      and the mass over ``mass_points``, weighted by ``mass_weight`` (default n_rows / len(mass_points):
      a uniform sample of the batch's n_rows rows).

    ``n_rows`` serves only that default (the ratio needs no |D|); the ``mass_*`` arguments are not used
    with ``scale="paper"``. ``method="rff"`` samples queries as ``"sample"`` does with this scale.

    >>> Q, X = np.zeros((1, 1)), np.array([[0.0], [5.0]])
    >>> psi_from_losses(Q, X, np.array([1.0, 0.0]), 1.0)
    0.5
    >>> psi_from_losses(Q, X, np.array([1.0, 0.0]), 1.0, scale="expected-loss")   # the point at q is wrong
    1.0
    >>> psi_from_losses(np.array([[2.5]]), X, np.array([1.0, 0.0]), 1.0, scale="expected-loss")
    0.5
    >>> float(np.exp(-1.0 * 60.0 ** 2))   # a query at -60: every kernel underflows, m(q) = 0
    0.0
    >>> psi_from_losses(np.array([[-60.0]]), X, np.array([1.0, 0.0]), 1.0, scale="expected-loss")  # its nearest
    1.0
    """
    check_psi_scale(scale)
    n_rows = X.shape[0] if n_rows is None else n_rows
    nonzero = np.flatnonzero(losses)
    if nonzero.size == 0:
        return 0.0
    check_psi_method(method)
    _check_rel_error(rel_error, DEFAULT_CONFIDENCE)
    if scale == "paper":
        est = _pair_sums(queries, X[nonzero], losses[nonzero].reshape(-1, 1), gamma, method, rel_error,
                         DEFAULT_CONFIDENCE, seed, None, max_block_bytes)
        return float(est.value[0]) / n_rows
    L = np.asarray(losses, dtype=np.float64).reshape(-1, 1)
    if mass_points is None:
        if mass_weight is None and n_rows != X.shape[0]:
            raise InputError(f"psi scale 'expected-loss': X has {X.shape[0]} of the batch's {n_rows} rows; pass "
                             "mass_points (a sample of its rows) or mass_weight (see mass_sample) for its mass")
        P, M, w = X, None, _mass_weights(1.0 if mass_weight is None else mass_weight, X.shape[0])
    else:
        M = _check_points("mass_points", mass_points, X.shape[1])
        P, L = X[nonzero], L[nonzero]
        w = _mass_weights(n_rows / M.shape[0] if mass_weight is None else mass_weight, M.shape[0])
    est = _expected_loss_sums(queries, P, L, M, w, gamma, method, rel_error, DEFAULT_CONFIDENCE, seed,
                              max_block_bytes)
    return float(est.value[0])


def _losses(model, X: np.ndarray, y: np.ndarray, loss_fn: LossFn, name: str) -> np.ndarray:
    return per_sample_losses(loss_fn, y, model.predict(X), name)


def absolute_staleness(queries, data, model, *, gamma: Gamma = DEFAULT_GAMMA,
                       loss: str | LossFn = "zero_one", method: str = "exact",
                       rel_error: float = DEFAULT_REL_ERROR, seed=0,
                       max_block_bytes: int = MAX_BLOCK_BYTES, scale: str = DEFAULT_PSI_SCALE) -> float:
    """Absolute staleness Ψ(Q, D, M) of Eq. 2: similarity-weighted loss near the queries.

    ``gamma="scale"`` is resolved on the data's X; ``method``, ``rel_error`` and ``seed``:
    see :func:`pair_sums` (the default computes every pair). ``scale``: one of :data:`PSI_SCALES`
    (``"expected-loss"``: the mass runs over all of the data's rows).

    >>> class Constant:
    ...     def predict(self, X): return np.zeros(len(X), dtype=int)
    >>> X = np.array([[0.0], [3.0]]); y = np.array([1, 0])
    >>> round(absolute_staleness(np.array([[0.0]]), (X, y), Constant(), gamma=1.0), 6)
    0.5
    >>> round(absolute_staleness(np.array([[0.0]]), (X, y), Constant(), gamma=1.0, scale="expected-loss"), 6)
    0.999877
    """
    check_psi_scale(scale)
    X, y = _check_data("data", data)
    Q = _check_points("queries", queries, X.shape[1])
    g = resolve_gamma(gamma, X)
    return psi_from_losses(Q, X, _losses(model, X, y, resolve_loss(loss), "data"), g,
                           method=method, rel_error=rel_error, seed=seed, max_block_bytes=max_block_bytes,
                           scale=scale)


def relative_staleness(queries, data_now, data_then, model, *, gamma: Gamma = DEFAULT_GAMMA,
                       loss: str | LossFn = "zero_one", method: str = "exact",
                       rel_error: float = DEFAULT_REL_ERROR, seed=0,
                       max_block_bytes: int = MAX_BLOCK_BYTES, scale: str = DEFAULT_PSI_SCALE) -> float:
    """Relative staleness Ψ̄ of Eq. 3: Ψ(Q_t, D_t, M_t') − Ψ(Q_t, D_t', M_t').

    ``data_now`` is today's labelled batch D_t, ``data_then`` the batch D_t' the
    model was trained on. ``gamma="scale"`` is resolved on both batches' X stacked
    (the lifecycle resolves γ once at tune and passes the number). ``method``,
    ``rel_error`` and ``seed``: see :func:`pair_sums`; the two terms use independent
    streams of ``seed``, and each is within ``rel_error`` of its exact value. ``scale``: one of
    :data:`PSI_SCALES`; with ``"expected-loss"`` each term divides by the kernel mass of its own
    batch (all of its rows).

    >>> class Threshold:
    ...     def predict(self, X): return (X[:, 0] > 0.5).astype(int)
    >>> then = (np.array([[0.0], [1.0]]), np.array([0, 1]))   # the model was right
    >>> now = (np.array([[0.0], [1.0]]), np.array([1, 1]))    # the concept moved at 0
    >>> round(relative_staleness(np.array([[0.0]]), now, then, Threshold(), gamma=1.0), 6)
    0.5
    >>> round(relative_staleness(np.array([[0.0]]), now, then, Threshold(), gamma=1.0, scale="expected-loss"), 6)
    0.731059
    """
    check_psi_scale(scale)
    Xn, yn = _check_data("data_now", data_now)
    Xt, yt = _check_data("data_then", data_then, Xn.shape[1])
    Q = _check_points("queries", queries, Xn.shape[1])
    g = resolve_gamma(gamma, stack_rows([Xn, Xt])) if isinstance(gamma, str) else resolve_gamma(gamma, Xn)
    loss_fn = resolve_loss(loss)
    check_psi_method(method)
    _check_rel_error(rel_error, DEFAULT_CONFIDENCE)
    seeds = [_child_seed(seed, 0), _child_seed(seed, 1)]
    now = psi_from_losses(Q, Xn, _losses(model, Xn, yn, loss_fn, "data_now"), g, method=method,
                          rel_error=rel_error, seed=seeds[0], max_block_bytes=max_block_bytes, scale=scale)
    then = psi_from_losses(Q, Xt, _losses(model, Xt, yt, loss_fn, "data_then"), g, method=method,
                           rel_error=rel_error, seed=seeds[1], max_block_bytes=max_block_bytes, scale=scale)
    return now - then
