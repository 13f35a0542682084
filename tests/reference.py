"""Slow, obviously-correct references: per-point loops straight from the paper's equations."""

from __future__ import annotations

import itertools
import math

import numpy as np


def psi_slow(queries, X, y, model, gamma, loss=lambda a, b: float(a != b)):
    """Ψ(Q, D, M) of Eq. 1–2 with one Python loop per query and per point."""
    pred = model.predict(X)
    total = 0.0
    for q in queries:
        psi_q = 0.0
        for x, yy, p in zip(X, y, pred):
            sim = math.exp(-gamma * sum((qi - xi) ** 2 for qi, xi in zip(q, x)))
            psi_q += sim * loss(yy, p)
        total += psi_q / len(X)
    return total


def cost_matrix_slow(batches, queries, models, kappa, gamma):
    """Eq. 4 pair by pair: predicts and builds both kernels anew for every (t', t)."""
    T = len(batches)
    C = np.full((T, T), np.inf)
    for t in range(T):
        C[t, t] = kappa
        for tp in range(t):
            X_now, y_now = batches[t]
            X_then, y_then = batches[tp]
            C[tp, t] = (psi_slow(queries[t], X_now, y_now, models[tp], gamma)
                        - psi_slow(queries[t], X_then, y_then, models[tp], gamma))
    return C


def all_strategies(T):
    """Every strategy of T batches: one per subset of {1..T-1} retrain points."""
    for mask in itertools.product([False, True], repeat=T - 1):
        s, current = [0], 0
        for t, retrain in enumerate(mask, start=1):
            if retrain:
                current = t
            s.append(current)
        yield s


def strategy_cost_slow(C, s):
    return sum(C[s[t], t] for t in range(len(s)))


def random_cost_matrix(rng, T, kappa=None, negative=True):
    """A random cost-matrix-shaped array (Ψ̄ may be negative, as in practice)."""
    C = np.full((T, T), np.inf)
    low = -0.5 if negative else 0.0
    for tp in range(T):
        for t in range(tp + 1, T):
            C[tp, t] = rng.uniform(low, 3.0)
    np.fill_diagonal(C, rng.uniform(0.5, 5.0) if kappa is None else kappa)
    return C


def doubled_zero_one(y_true, y_pred):
    """A user's loss by import path (``tests.reference:doubled_zero_one``): each error counts twice."""
    return 2.0 * (np.asarray(y_true) != np.asarray(y_pred))
