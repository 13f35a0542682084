"""Retraining decision functions: the CARA variants (§5) and the baselines (§7.4) of the paper.

A policy is shown one :class:`Observation` per arriving batch and answers with a
:class:`Decision`, Keep or Retrain. It hears through :meth:`Policy.reset` when a retrain has
*landed* (production changed), never merely when one was decided: a retrain that failed or was
rejected keeps the staleness accumulated so far. Parameters and state are plain JSON, so a
policy tuned offline can be stored, and resumed exactly by a step on another machine.

A policy whose decisions depend on the cost matrix alone (:meth:`Policy.from_costs`) also
evaluates itself offline, for many parameters at once (:meth:`Policy.offline_costs`): the
tuner searches that, and never repeats a decision rule. The drift detectors
(:attr:`Policy.needs_errors`) and the ORACLE follower (:attr:`Policy.follows_oracle`) have none.

>>> p = make_policy("cara-ct", tau_cum=2.5)
>>> [p.decide(Observation(t=t, trained_on=0, psi_bar=1.0)).action for t in (1, 2, 3)]
['keep', 'keep', 'retrain']
>>> p.reset(3)
>>> p.to_dict()
{'policy': 'cara-ct', 'params': {'tau_cum': 2.5}, 'state': {'cum': 0.0, 'n': 0}}

"""

from __future__ import annotations

import abc
import base64
import inspect
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .errors import InputError

__all__ = [
    "POLICIES",
    "AdwinPolicy",
    "CaraCT",
    "CaraP",
    "CaraT",
    "DdmPolicy",
    "Decision",
    "Markov",
    "NeverRetrain",
    "Observation",
    "OracleFollower",
    "Policy",
    "RentOrBuy",
    "make_policy",
    "mean_kappa",
    "policy_from_dict",
]


# --------------------------------------------------------------------------- validation helpers


def _check_real(name, value, *, low=None, high=None, low_open=False, high_open=False) -> float:
    """Return ``value`` as a float, or raise an InputError naming ``name`` and what was expected."""
    if low is not None and high is not None:
        expected = (
            f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        )
    elif low is not None:
        expected = f"a finite number {'>' if low_open else '>='} {low}"
    else:
        expected = "a finite number"
    # bool is a numbers.Real too, but True as a threshold is always a mistake.
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name}: expected {expected}, got {value!r}")
    v = float(value)
    if (
        not math.isfinite(v)
        or (low is not None and (v <= low if low_open else v < low))
        or (high is not None and (v >= high if high_open else v > high))
    ):
        raise InputError(f"{name}: expected {expected}, got {value!r}")
    return v


def _check_int(name, value, *, low=None, high=None) -> int:
    """Return ``value`` as an int (integral floats such as ``3.0`` from JSON are accepted)."""
    if low is not None and high is not None:
        expected = f"an integer in [{low}, {high}]"
    elif low is not None:
        expected = f"an integer >= {low}"
    else:
        expected = "an integer"
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name}: expected {expected}, got {value!r}")
    if not isinstance(value, numbers.Integral) and not (
        isinstance(value, numbers.Real) and float(value).is_integer()
    ):
        raise InputError(f"{name}: expected {expected}, got {value!r}")
    v = int(value)
    if (low is not None and v < low) or (high is not None and v > high):
        raise InputError(f"{name}: expected {expected}, got {value!r}")
    return v


def _check_fields(state, policy: str, fields: tuple[str, ...]) -> None:
    """Check that a state is a mapping with exactly ``fields``."""
    if not isinstance(state, Mapping):
        raise InputError(f"state: expected a dict for the {policy} policy, got {state!r}")
    for f in fields:
        if f not in state:
            raise InputError(f"state.{f}: missing from the {policy} policy's state")
    for f in state:
        if f not in fields:
            raise InputError(f"state.{f}: not a field of the {policy} policy's state")


def _fmt(x: float) -> str:
    return f"{x:.4g}"


# --------------------------------------------------------------------------- observation, decision


@dataclass(frozen=True)
class Observation:
    """What a policy sees when batch ``t`` arrives.

    Parameters
    ----------
    t
        Absolute index of the batch that just arrived.
    trained_on
        Absolute index ``t'`` of the batch the current model was trained on, ``0 <= t' < t``.
    psi_bar
        Relative staleness ``Ψ̄_{t,t'}`` (Eq. 3) of the current model on this batch.
    errors
        The current model's per-sample 0/1 errors on the batch's data, in order; only the drift
        detector policies need them.
    kappa
        Retraining cost ``κ_t`` at this batch, if known (MARKOV and rent compare with it; CARA-T and
        CARA-CT tuned at a κ̄ scale their thresholds by ``κ_t/κ̄``).

    Examples
    --------
    >>> Observation(t=5, trained_on=2, psi_bar=0.7)
    Observation(t=5, trained_on=2, psi_bar=0.7, errors=None, kappa=None)
    >>> Observation(t=2, trained_on=2, psi_bar=0.7)
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: trained_on: expected an integer in [0, 1], got 2

    """

    t: int
    trained_on: int
    psi_bar: float
    errors: np.ndarray | None = None
    kappa: float | None = None

    def __post_init__(self):
        # Catch off-by-one mistakes of the caller here, where they are still easy to explain.
        t = _check_int("t", self.t, low=1)
        _check_int("trained_on", self.trained_on, low=0, high=t - 1)


@dataclass(frozen=True)
class Decision:
    """A policy's answer for one batch.

    Parameters
    ----------
    retrain
        True for Retrain, False for Keep.
    reason
        One human sentence saying why, e.g. ``"Ψ̄=3.2 ≥ τ=2.5"``.
    score
        The number the decision compared (Ψ̄, the cumulative Ψ̄, the number of detections, ...).
    threshold
        The value the score was compared with at this batch: CARA-T's τ_t, CARA-CT's τ_cum_t
        (relative to κ_t when the policy was tuned at a κ̄), MARKOV's and rent's κ_t; None for the
        policies that compare no score with a threshold (CARA-P, NR, the ORACLE follower, the drift
        detectors). Left out of the repr.

    Examples
    --------
    >>> d = Decision(True, "Ψ̄=3.2 ≥ τ=2.5", 3.2, 2.5)
    >>> d.action, d.threshold
    ('retrain', 2.5)
    >>> d
    Decision(retrain=True, reason='Ψ̄=3.2 ≥ τ=2.5', score=3.2)

    """

    retrain: bool
    reason: str
    score: float
    threshold: float | None = field(default=None, repr=False)

    @property
    def action(self) -> str:
        """``"retrain"`` or ``"keep"``."""
        return "retrain" if self.retrain else "keep"


# --------------------------------------------------------------------------- base class


class Policy(abc.ABC):
    """Base class of the retraining decision functions.

    ``__init__`` stores and validates the parameters, then builds the state with
    ``_reset_state()``: nothing else. :meth:`decide` may update the state; :meth:`reset` clears it
    once a retrain has landed. Parameters and state are JSON, and
    ``set_state(get_state())`` on a fresh instance with the same parameters resumes exactly.

    """

    name: ClassVar[str]
    """Registry name, as users type it (``"cara-t"``)."""
    tunable: ClassVar[tuple[str, ...]] = ()
    """Names of the parameters that are tuned offline."""
    offline_fixed: ClassVar[tuple[str, ...]] = ()
    """Constructor parameters that shape an offline evaluation without being searched: read off the
    cost matrix (:meth:`offline_params`) and passed with θ (CARA-T's and CARA-CT's κ̄, ``kappa``)."""
    needs_errors: ClassVar[bool] = False
    """True if :meth:`decide` needs the model's per-sample errors (``Observation.errors``): the
    drift detectors. A cost matrix does not hold them, so such a policy has no offline evaluation."""
    follows_oracle: ClassVar[bool] = False
    """True if the parameters are the ORACLE's retrain batches of the very window the policy runs
    on, given by the caller: nothing to tune, nothing to evaluate offline."""

    @abc.abstractmethod
    def decide(self, obs: Observation) -> Decision:
        """Keep or Retrain at batch ``obs.t``; may update the policy's state."""

    def _reset_state(self) -> None:
        """Build the state of a policy whose model was just trained; none for stateless ones."""

    def reset(self, t: int) -> None:
        """Clear the accumulated state: call it only once a retrain at batch ``t`` has landed."""
        _check_int("t", t, low=0)
        self._reset_state()

    @classmethod
    def _param_names(cls) -> tuple[str, ...]:
        # As in scikit-learn, the parameters are exactly the arguments of __init__.
        return tuple(
            n for n, p in inspect.signature(cls.__init__).parameters.items()
            if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        )

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, as JSON-able values."""
        return {
            n: list(v) if isinstance(v, list) else v
            for n in self._param_names()
            for v in [getattr(self, n)]
        }

    def get_state(self) -> dict[str, Any]:
        """The state accumulated since the last reset, as JSON-able values."""
        return {}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore a state returned by :meth:`get_state` (InputError naming a bad field)."""
        _check_fields(state, self.name, ())

    def to_dict(self) -> dict[str, Any]:
        """``{"policy": name, "params": ..., "state": ...}``, ready for ``json.dumps``."""
        return {"policy": self.name, "params": self.get_params(), "state": self.get_state()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Policy:
        """Rebuild a policy from :meth:`to_dict`'s output (``state`` may be left out: fresh).

        Other top-level keys are ignored, so a larger document holding a policy can be passed.
        On a subclass, ``d["policy"]`` must name that subclass.

        """
        if not isinstance(d, Mapping) or "policy" not in d:
            raise InputError(
                f"policy: expected a dict with keys 'policy', 'params', 'state', got {d!r}"
            )
        policy_cls = _lookup(d["policy"])
        if cls is not Policy and policy_cls is not cls:
            raise InputError(f"policy: expected {cls.name!r}, got {d['policy']!r}")
        params = d.get("params", {})
        if not isinstance(params, Mapping):
            raise InputError(f"params: expected a dict of parameters, got {params!r}")
        policy = make_policy(d["policy"], **params)
        if "state" in d:
            policy.set_state(d["state"])
        return policy

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{self.name}({params})"

    # -- offline evaluation: Algorithm 1 on a whole cost matrix, for many θ at once -------------

    @classmethod
    def tunes_a_threshold(cls) -> bool:
        """True if the one tuned parameter is a threshold searched exactly (:meth:`offline_thresholds`):
        the policies a pooled or re-tuned history can tune.

        >>> [name for name, cls in POLICIES.items() if cls.tunes_a_threshold()]
        ['cara-t', 'cara-ct']
        """
        return False

    @classmethod
    def from_costs(cls) -> bool:
        """True if the decisions depend on the cost matrix alone: :meth:`offline_costs` applies.

        Run on a window with cost matrix ``C``, such a policy sees at batch ``t`` only
        Ψ̄ = ``C[s_{t-1}, t]`` of the model in use, κ_t = ``C[t, t]`` and ``t`` itself.

        >>> [name for name, cls in POLICIES.items() if cls.from_costs()]
        ['cara-t', 'cara-ct', 'cara-p', 'markov', 'rent', 'nr']
        """
        return not (cls.needs_errors or cls.follows_oracle)

    @classmethod
    def offline_costs(cls, C, *, start: int = 0, **theta) -> tuple[np.ndarray, np.ndarray]:
        """Offline strategy cost and strategy of the policy with each θ on ``C``, side by side.

        Exactly what running :meth:`decide` batch by batch over the window gives (as
        :func:`cara_mlflow.simulate.run_policy` does, every retrain landing): the first batch
        trains the initial model, each later batch ``t`` shows Ψ̄ = ``C[s_{t-1}, t]`` and
        κ_t = ``C[t, t]``. Vectorised over θ; the only loop is over batches, where a decision
        depends on the previous one. A policy evaluated from the cost matrix (:meth:`from_costs`)
        implements the kernel ``_offline_costs(C, theta, start)``, which gets C and θ checked.

        Parameters
        ----------
        C
            Offline cost matrix ``(T, T)`` (:func:`cara_mlflow.costs.check_cost_matrix`).
        start
            Absolute index of the window's first batch (CARA-P's ``t`` is absolute).
        **theta
            The :attr:`tunable` parameters, each a number or a 1-D sequence of ``m`` values
            (broadcast together); one left out takes its constructor default. Each θ is checked
            as the constructor checks it. A policy with nothing tuned takes none: ``m = 1``.
            The :attr:`offline_fixed` ones may be given too, in the same way (CARA-T's
            ``kappa=κ̄``: thresholds relative to κ_t = ``C[t, t]``); left out, they are not used.

        Returns
        -------
        ``(costs, strategies)`` with shapes ``(m,)`` and ``(m, T)`` (local model indices).

        Examples
        --------
        >>> C = np.array([[1.0, 0.5, 2.0], [np.inf, 1.0, 0.1], [np.inf, np.inf, 1.0]])
        >>> costs, strategies = CaraT.offline_costs(C, tau=[0.4, 0.6, 9.0])
        >>> costs.tolist(), strategies.tolist()
        ([2.1, 2.5, 3.5], [[0, 1, 1], [0, 0, 2], [0, 0, 0]])
        >>> CaraP.offline_costs(C, phi=2, offset=[0, 1], start=10)[1].tolist()
        [[0, 0, 2], [0, 1, 1]]
        >>> Markov.offline_costs(C)[1].tolist()
        [[0, 0, 2]]
        >>> C[2, 2] = 3.0               # κ_2 = 3κ̄: CARA-T tuned at κ̄ = 1 needs Ψ̄ ≥ 3τ at batch 2
        >>> CaraT.offline_costs(C, tau=0.8, kappa=1.0)[1].tolist(), CaraT.offline_costs(C, tau=0.8)[1].tolist()
        ([[0, 0, 0]], [[0, 0, 2]])
        >>> AdwinPolicy.offline_costs(C)
        Traceback (most recent call last):
        ...
        cara_mlflow.errors.InputError: the adwin policy needs the model's per-sample errors:
        it has no offline evaluation from a cost matrix

        """
        if cls.needs_errors:
            raise InputError(f"the {cls.name} policy needs the model's per-sample errors: "
                             "it has no offline evaluation from a cost matrix")
        if cls.follows_oracle:
            raise InputError(f"the {cls.name} policy follows the ORACLE's retrain batches: "
                             "it has no offline evaluation of its own")
        from .costs import check_cost_matrix  # scipy comes with costs: only when evaluating

        C = check_cost_matrix(C)
        start = _check_int("start", start, low=0)
        return cls._offline_costs(C, cls._check_theta(theta), start)

    @classmethod
    def _check_theta(cls, theta: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """θ as 1-D arrays of one length, every parameter given, each θ accepted by the constructor."""
        for n in theta:
            if n not in cls.tunable and n not in cls.offline_fixed:
                fixed = "".join(f" (or {f}, not searched)" for f in cls.offline_fixed)
                raise InputError(f"{n}: not a tuned parameter of the {cls.name} policy: expected "
                                 f"{', '.join(cls.tunable) or 'none'}{fixed}")
        signature = inspect.signature(cls.__init__).parameters
        names = [*cls.tunable, *(f for f in cls.offline_fixed if theta.get(f) is not None)]
        values = []
        for n in names:
            if n not in theta and signature[n].default is inspect.Parameter.empty:
                raise InputError(f"{n}: the {cls.name} policy needs this parameter")
            v = np.asarray(theta.get(n, signature[n].default))
            if v.ndim > 1 or v.dtype.kind not in "iuf":
                raise InputError(f"{n}: expected a number or a 1-D sequence of numbers, got {v!r:.60}")
            values.append(np.atleast_1d(v))
        try:
            values = np.broadcast_arrays(*values)
        except ValueError:
            lengths = ", ".join(f"{n}: {v.size}" for n, v in zip(names, values))
            raise InputError(f"theta: expected values of one length (or single numbers), got {lengths}") from None
        grid = dict(zip(names, values))
        for k in range(values[0].size if values else 0):
            cls(**{n: v[k] for n, v in grid.items()})  # the constructor's checks, said once
        return grid

    @classmethod
    def offline_grid(cls, C) -> dict[str, np.ndarray]:
        """The finitely many θ an exhaustive offline search evaluates on ``C``, in order of preference.

        ``{}`` for a policy with nothing tuned. A tuner breaks ties in cost by fewer offline
        retrains, then by this order. Threshold policies search an interval instead
        (:meth:`offline_thresholds`).

        >>> C = np.full((3, 3), np.inf); C[np.triu_indices(3)] = 1.0
        >>> {k: v.tolist() for k, v in CaraP.offline_grid(C).items()}
        {'phi': [3, 3, 3, 2, 2, 1], 'offset': [0, 1, 2, 0, 1, 0]}
        >>> NeverRetrain.offline_grid(C)
        {}
        """
        return {}

    @classmethod
    def offline_thresholds(cls, C, **fixed) -> np.ndarray | None:
        """The sorted distinct θ at which a threshold policy's offline strategy on ``C`` changes.

        For a policy whose one tunable parameter is a threshold (Retrain iff a score ≥ θ), these
        are the scores it compares θ with, and the offline strategy is constant for θ in each
        interval ``(v_k, v_{k+1}]`` between two consecutive values; None for the other policies.
        With the :attr:`offline_fixed` ``kappa=κ̄`` the threshold is relative to κ_t
        (:class:`CaraT`), and each value is the largest θ whose scaled threshold a score reaches.

        >>> C = np.array([[1.0, 0.5, 2.0], [np.inf, 1.0, 0.1], [np.inf, np.inf, 1.0]])
        >>> CaraT.offline_thresholds(C).tolist(), CaraCT.offline_thresholds(C).tolist()
        ([0.1, 0.5, 2.0], [0.1, 0.5, 2.5])
        >>> C[2, 2] = 2.0                            # κ_2 = 2κ̄: batch 2's scores count half
        >>> CaraT.offline_thresholds(C, kappa=1.0).tolist()
        [0.05, 0.5, 1.0]
        >>> CaraP.offline_thresholds(C) is None
        True
        """
        return None

    @classmethod
    def offline_params(cls, C) -> dict[str, Any]:
        """Parameters read off the cost matrix rather than searched: MARKOV's κ when constant, the κ̄
        CARA-T's and CARA-CT's thresholds are tuned at (:func:`mean_kappa`).

        >>> C = np.array([[2.0, 0.5], [np.inf, 2.0]])
        >>> Markov.offline_params(C), CaraT.offline_params(C), CaraP.offline_params(C)
        ({'kappa': 2.0}, {'kappa': 2.0}, {})
        """
        return {}


def _psi_bar(obs: Observation) -> float:
    return _check_real("psi_bar", obs.psi_bar)


def _at_least(psi: float, symbol: str, threshold: float, note: str = "") -> Decision:
    """Retrain iff Ψ̄ >= threshold: the rule shared by CARA-T (Eq. 8) and MARKOV (Eq. 17)."""
    retrain = psi >= threshold
    return Decision(
        retrain, f"Ψ̄={_fmt(psi)} {'≥' if retrain else '<'} {symbol}={_fmt(threshold)}{note}", psi, threshold
    )


def mean_kappa(C) -> float:
    """κ̄ of a cost matrix: the mean of its diagonal κ_t, exactly κ when it is constant.

    The κ a CARA-T or CARA-CT threshold tuned on ``C`` is relative to (:class:`CaraT`).

    >>> mean_kappa(np.diag([2.0, 2.0, 2.0])), mean_kappa(np.diag([1.0, 2.0, 6.0]))
    (2.0, 3.0)
    """
    kappa = np.diag(np.asarray(C, dtype=np.float64))
    # np.mean of equal values may be an ulp off them: a constant κ is taken as it is.
    return float(kappa[0]) if np.all(kappa == kappa[0]) else float(np.mean(kappa))


def _relative(threshold: float, kappa_t: float | None, kbar: float | None) -> float:
    """The threshold at κ_t of a threshold tuned at κ̄: ``τ·(κ_t/κ̄)`` for τ > 0, else τ as tuned.

    The ratio is taken first, so that κ_t = κ̄ gives τ bit for bit. A τ <= 0 (retrain unless the
    model got better) has no cost scale: it stays, and a Retrain at κ stays one at any smaller κ.
    """
    if kbar is None or kappa_t is None or not threshold > 0:
        return threshold
    return threshold * (kappa_t / kbar)


def _relative_note(symbol: str, tuned: float, used: float, kappa_t: float | None, kbar: float | None) -> str:
    """`` (τ·κ_t/κ̄ = 2·10/5)`` when the threshold was scaled, else nothing."""
    if used == tuned:
        return ""
    return f" ({symbol}·κ_t/κ̄ = {_fmt(tuned)}·{_fmt(kappa_t)}/{_fmt(kbar)})"


def _obs_kappa(obs: Observation) -> float | None:
    return None if obs.kappa is None else _check_real("kappa", obs.kappa, low=0, low_open=True)


def _threshold_run(C: np.ndarray, taus: np.ndarray | None, *, cumulative: bool = False,
                   kbar: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 1 on ``C`` for ``m`` thresholds side by side: ``(costs, strategies)``.

    Retrain iff Ψ̄ (``cumulative``: its sum since the model was trained, added left to right as
    :class:`CaraCT` does) ≥ τ; with ``kbar`` (κ̄, one or one per τ) each τ > 0 is relative to
    κ_t = ``C[t, t]``: τ·(κ_t/κ̄), as :func:`_relative`. ``taus=None`` compares with κ_t itself
    instead (MARKOV; ``cumulative``: rent-or-buy). A loop over batches, vectorised over
    thresholds; the cost is summed left to right.
    """
    T = C.shape[0]
    m = 1 if taus is None else taus.shape[0]
    tp = np.zeros(m, dtype=np.int64)
    cost = np.full(m, C[0, 0])
    cum = np.zeros(m)
    strategies = np.zeros((m, T), dtype=np.int64)
    for t in range(1, T):
        psi = C[tp, t]
        if taus is None:
            threshold = C[t, t]
        elif kbar is None:
            threshold = taus
        else:
            threshold = np.where(taus > 0, taus * (C[t, t] / kbar), taus)
        if cumulative:
            cum = cum + psi
            retrain = cum >= threshold
            cum = np.where(retrain, 0.0, cum)  # offline, every retrain lands: reset
        else:
            retrain = psi >= threshold
        cost += np.where(retrain, C[t, t], psi)
        tp = np.where(retrain, t, tp)
        strategies[:, t] = tp
    return cost, strategies


def _path_costs(C: np.ndarray, strategies: np.ndarray) -> np.ndarray:
    """Σ_t C[s_t, t] per strategy (a row of ``strategies``), summed by numpy (pairwise)."""
    return C[strategies, np.arange(C.shape[0])].sum(axis=1)


class _Threshold(Policy):
    """A policy whose one tunable parameter is a threshold θ: Retrain iff a score ≥ θ, where θ is
    relative to κ_t (θ·κ_t/κ̄ for θ > 0) when the policy has the κ̄ it was tuned at (``kappa``)."""

    _cumulative: ClassVar[bool]
    """The score is the sum of Ψ̄ since the model was trained (CARA-CT), not Ψ̄ itself (CARA-T)."""
    offline_fixed = ("kappa",)

    @classmethod
    def tunes_a_threshold(cls) -> bool:
        return True

    def get_params(self) -> dict[str, Any]:
        # κ-blind (kappa None): the parameters, documents and reprs from before κ-relative thresholds.
        params = super().get_params()
        if params["kappa"] is None:
            del params["kappa"]
        return params

    @classmethod
    def offline_params(cls, C) -> dict[str, Any]:
        return {"kappa": mean_kappa(C)}

    @classmethod
    def offline_thresholds(cls, C, *, kappa: float | None = None) -> np.ndarray:
        C = np.asarray(C, dtype=np.float64)
        T = C.shape[0]
        above = np.triu_indices(T, 1)
        if not cls._cumulative:
            scores = C[above]
        else:
            # Row t' summed left to right from t'+1, exactly as the policy adds (0 + x is x).
            scores = np.cumsum(np.where(np.triu(np.ones((T, T), bool), 1), C, 0.0), axis=1)[above]
        if kappa is not None:
            scores = _largest_reaching(scores, np.diag(C)[above[1]] / _check_real("kappa", kappa, low=0, low_open=True))
        return np.unique(scores)

    @classmethod
    def _offline_costs(cls, C, theta, start):
        taus = np.asarray(theta[cls.tunable[0]], dtype=np.float64)
        kbar = theta.get("kappa")
        return _threshold_run(C, taus, cumulative=cls._cumulative,
                              kbar=None if kbar is None else np.asarray(kbar, dtype=np.float64))


def _largest_reaching(scores: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """Per score s at a batch with κ_t/κ̄ = ``ratio``: the largest θ with ``s >= _relative(θ)``.

    s itself for s <= 0 (θ <= 0 is not scaled); else s/ratio, moved by ulps until θ·ratio <= s
    and the next θ up's is not, so that the strategy is constant on each ``(v_k, v_{k+1}]`` in
    floating point as it is for the κ-blind scores. ``ratio == 1`` gives the scores unchanged.
    """
    up = np.nextafter
    v = np.where(scores > 0, scores / ratio, scores)
    pos = scores > 0
    for _ in range(4):     # a quotient is within an ulp or two of the boundary
        v = np.where(pos & (v * ratio > scores), up(v, -np.inf), v)
        nxt = up(v, np.inf)
        v = np.where(pos & (nxt * ratio <= scores), nxt, v)
    return v


# --------------------------------------------------------------------------- CARA variants


class CaraT(_Threshold):
    """CARA-T, the threshold variant (Eq. 8): Retrain iff ``Ψ̄_{t,t'} >= τ``.

    Under a changing retraining cost (the paper's §9, "non-static κ") a τ tuned at κ̄ means a
    trade-off between staleness and κ̄; with ``kappa=κ̄`` the policy keeps that trade-off at
    every κ_t it is shown (``Observation.kappa``): Retrain iff ``Ψ̄_{t,t'} >= τ_t = τ·κ_t/κ̄``
    (for τ > 0; a τ <= 0, retrain unless the model got better, is not scaled). When κ_t = κ̄
    this is the κ-blind rule bit for bit; without ``kappa``, or without κ_t, τ is used as tuned.

    Parameters
    ----------
    tau
        Threshold on the relative staleness, in the units of Ψ̄, at κ̄. Ψ̄ is a difference and
        may be negative, so any finite τ is allowed.
    kappa
        κ̄, the retraining cost τ was tuned at (κ̄ > 0): the tuner's is the mean κ of its offline
        window. None: κ-blind, τ whatever κ_t is (policies tuned before κ-relative thresholds).

    Examples
    --------
    >>> p = CaraT(tau=2.0)
    >>> for psi in (1.9, 2.0, 2.1):
    ...     print(p.decide(Observation(t=1, trained_on=0, psi_bar=psi)))
    Decision(retrain=False, reason='Ψ̄=1.9 < τ=2', score=1.9)
    Decision(retrain=True, reason='Ψ̄=2 ≥ τ=2', score=2.0)
    Decision(retrain=True, reason='Ψ̄=2.1 ≥ τ=2', score=2.1)

    Tuned at κ̄ = 5, a retrain at κ_t = 10 needs twice the staleness:

    >>> p = CaraT(tau=2.0, kappa=5.0)
    >>> for kappa in (5.0, 10.0):
    ...     d = p.decide(Observation(t=1, trained_on=0, psi_bar=3.0, kappa=kappa))
    ...     print(d.action, d.threshold, d.reason)
    retrain 2.0 Ψ̄=3 ≥ τ=2
    keep 4.0 Ψ̄=3 < τ=4 (τ·κ_t/κ̄ = 2·10/5)

    """

    name = "cara-t"
    tunable = ("tau",)
    _cumulative = False

    def __init__(self, tau: float, kappa: float | None = None):
        self.tau = _check_real("tau", tau)
        self.kappa = None if kappa is None else _check_real("kappa", kappa, low=0, low_open=True)
        self._reset_state()

    def decide(self, obs: Observation) -> Decision:
        psi = _psi_bar(obs)
        kappa_t = _obs_kappa(obs)
        tau = _relative(self.tau, kappa_t, self.kappa)
        return _at_least(psi, "τ", tau, _relative_note("τ", self.tau, tau, kappa_t, self.kappa))


class CaraCT(_Threshold):
    """CARA-CT, the cumulative threshold variant (Eq. 9): Retrain iff ``Σ_{j=t'+1..t} Ψ̄_{j,t'} >= τ_cum``.

    The sum runs over the batches seen since the last :meth:`reset`, the current one included.
    A Retrain *decision* does not clear it: only a landed retrain does, through ``reset``.

    With ``kappa=κ̄`` the threshold is relative to κ_t as :class:`CaraT`'s:
    ``τ_cum_t = τ_cum·κ_t/κ̄`` at the batch deciding (for τ_cum > 0); the staleness already
    paid is not re-priced.

    Parameters
    ----------
    tau_cum
        Threshold on the cumulative relative staleness (any finite number), at κ̄.
    kappa
        κ̄, the retraining cost τ_cum was tuned at (κ̄ > 0), or None: κ-blind (:class:`CaraT`).

    Examples
    --------
    >>> p = CaraCT(tau_cum=2.5)
    >>> for t in (1, 2, 3, 4):
    ...     print(p.decide(Observation(t=t, trained_on=0, psi_bar=1.0)).reason)
    ΣΨ̄=1 over 1 batch < τ_cum=2.5
    ΣΨ̄=2 over 2 batches < τ_cum=2.5
    ΣΨ̄=3 over 3 batches ≥ τ_cum=2.5
    ΣΨ̄=4 over 4 batches ≥ τ_cum=2.5
    >>> p.reset(4)
    >>> p.decide(Observation(t=5, trained_on=4, psi_bar=1.0)).action
    'keep'
    >>> p = CaraCT(tau_cum=2.5, kappa=4.0)
    >>> for t, kappa in ((1, 4.0), (2, 8.0), (3, 2.0)):
    ...     print(p.decide(Observation(t=t, trained_on=0, psi_bar=1.0, kappa=kappa)).reason)
    ΣΨ̄=1 over 1 batch < τ_cum=2.5
    ΣΨ̄=2 over 2 batches < τ_cum=5 (τ_cum·κ_t/κ̄ = 2.5·8/4)
    ΣΨ̄=3 over 3 batches ≥ τ_cum=1.25 (τ_cum·κ_t/κ̄ = 2.5·2/4)

    """

    name = "cara-ct"
    tunable = ("tau_cum",)
    _cumulative = True

    def __init__(self, tau_cum: float, kappa: float | None = None):
        self.tau_cum = _check_real("tau_cum", tau_cum)
        self.kappa = None if kappa is None else _check_real("kappa", kappa, low=0, low_open=True)
        self._reset_state()

    def _reset_state(self) -> None:
        self._cum = 0.0
        self._n = 0

    def decide(self, obs: Observation) -> Decision:
        psi = _psi_bar(obs)
        # Sequential float addition, exactly as np.cumsum along a row of the offline cost
        # matrix: the tuner and the online policy then agree bit for bit at the threshold.
        kappa_t = _obs_kappa(obs)
        tau = _relative(self.tau_cum, kappa_t, self.kappa)
        self._cum = self._cum + psi
        self._n += 1
        retrain = self._cum >= tau
        note = _relative_note("τ_cum", self.tau_cum, tau, kappa_t, self.kappa)
        return Decision(
            retrain,
            f"ΣΨ̄={_fmt(self._cum)} over {self._n} batch{'es' if self._n != 1 else ''} "
            f"{'≥' if retrain else '<'} τ_cum={_fmt(tau)}{note}",
            self._cum,
            tau,
        )

    def get_state(self) -> dict[str, Any]:
        # json writes floats with repr, which round-trips them exactly.
        return {"cum": self._cum, "n": self._n}

    def set_state(self, state: Mapping[str, Any]) -> None:
        _check_fields(state, self.name, ("cum", "n"))
        cum = _check_real("state.cum", state["cum"])
        n = _check_int("state.n", state["n"], low=0)
        self._cum, self._n = cum, n


class CaraP(Policy):
    """CARA-P, the periodic variant (Eq. 10): Retrain iff ``(t - offset) % phi == 0``.

    ``t`` is the absolute batch index, so the period does not drift when a retrain fails.

    Parameters
    ----------
    phi
        Period, in batches (``>= 1``).
    offset
        Offset ``a`` of the first retrain, ``0 <= offset < phi``.

    Examples
    --------
    >>> p = CaraP(phi=3, offset=1)
    >>> [t for t in range(1, 10) if p.decide(Observation(t=t, trained_on=0, psi_bar=0.0)).retrain]
    [1, 4, 7]

    """

    name = "cara-p"
    tunable = ("phi", "offset")

    def __init__(self, phi: int, offset: int = 0):
        self.phi = _check_int("phi", phi, low=1)
        self.offset = _check_int("offset", offset, low=0, high=self.phi - 1)
        self._reset_state()

    def decide(self, obs: Observation) -> Decision:
        r = (obs.t - self.offset) % self.phi
        return Decision(
            r == 0,
            f"(t−a) mod φ = ({obs.t}−{self.offset}) mod {self.phi} = {r}",
            float(r),
        )

    @classmethod
    def offline_grid(cls, C) -> dict[str, np.ndarray]:
        # Every φ in [1, T] and a in [0, φ): the longer period first, then the smaller offset.
        periods = np.arange(np.shape(C)[0], 0, -1)
        phi = np.repeat(periods, periods)
        first = np.cumsum(periods) - periods  # where each period's offsets start in the grid
        return {"phi": phi, "offset": np.arange(phi.size) - np.repeat(first, periods)}

    @classmethod
    def _offline_costs(cls, C, theta, start):
        phi = np.asarray(theta["phi"], dtype=np.int64)[:, None]
        offset = np.asarray(theta["offset"], dtype=np.int64)[:, None]
        local = np.arange(C.shape[0])
        mark = (start + local - offset) % phi == 0  # numpy's % has Python's sign, as decide's
        mark[:, 0] = True  # the initial model, not a decision
        strategies = np.maximum.accumulate(np.where(mark, local, 0), axis=1)
        return _path_costs(C, strategies), strategies


# --------------------------------------------------------------------------- baselines


def _kappa_of(obs: Observation, default: float | None, policy: str) -> float:
    """κ_t of the observation, else the policy's ``kappa`` parameter (MARKOV, rent-or-buy)."""
    if obs.kappa is not None:
        return _check_real("kappa", obs.kappa, low=0, low_open=True)
    if default is not None:
        return default
    raise InputError(
        f"kappa: the {policy} policy needs the retraining cost κ_t: "
        "pass kappa= to the policy or set Observation.kappa"
    )


class Markov(Policy):
    """MARKOV (Eq. 17): Retrain iff ``Ψ̄_{t,t'} >= κ_t``, an uncalibrated CARA-T with ``τ = κ_t``.

    Parameters
    ----------
    kappa
        Retraining cost used when the observation carries none (``obs.kappa`` wins). One of the
        two must be given; κ > 0.

    Examples
    --------
    >>> p = Markov(kappa=2.0)
    >>> p.decide(Observation(t=1, trained_on=0, psi_bar=1.5)).reason
    'Ψ̄=1.5 < κ=2'
    >>> p.decide(Observation(t=1, trained_on=0, psi_bar=1.5, kappa=1.0)).reason
    'Ψ̄=1.5 ≥ κ=1'

    """

    name = "markov"

    def __init__(self, kappa: float | None = None):
        self.kappa = None if kappa is None else _check_real("kappa", kappa, low=0, low_open=True)
        self._reset_state()

    def decide(self, obs: Observation) -> Decision:
        kappa = _kappa_of(obs, self.kappa, self.name)
        return _at_least(_psi_bar(obs), "κ", kappa)

    @classmethod
    def offline_params(cls, C) -> dict[str, Any]:
        kappa = np.diag(np.asarray(C, dtype=np.float64))
        return {"kappa": float(kappa[0])} if np.all(kappa == kappa[0]) else {}

    @classmethod
    def _offline_costs(cls, C, theta, start):
        # Offline every observation carries κ_t = C[t, t], which wins over the parameter.
        strategies = _threshold_run(C, None)[1]
        return _path_costs(C, strategies), strategies


class RentOrBuy(Policy):
    """Rent-or-buy (ski rental): Retrain once the staleness paid since the last retrain reaches κ.

    Retrain at batch ``t`` iff ``Σ_{j=t'+1..t} Ψ̄_{j,t'} >= κ_t``: keeping the model ("renting")
    has cost as much as one retrain ("buying"). This is CARA-CT with ``τ_cum = κ_t``, with nothing
    tuned, so it runs from a stream's first batch, before any offline window exists. As for
    CARA-CT, the sum runs over the batches seen since the last :meth:`reset`, the current one
    included: a retrain that failed keeps the staleness paid.

    **Bound.** Assume κ_t = κ constant and (A): no Ψ̄ negative and, at every batch, an older
    model at least as stale as a newer one, ``0 <= Ψ̄_{t,q} <= Ψ̄_{t,p}`` for all ``p <= q < t``
    (e.g. ``Ψ̄_{t,t'} = f(t − t')`` with ``f >= 0`` non-decreasing in the model's age). Then on
    any cost matrix, every retrain landing, ``cost(rent) < 2 · cost(ORACLE)``
    (:func:`cara_mlflow.oracle.solve`; costs as :func:`cara_mlflow.costs.strategy_cost`, the
    first model's κ = ``C[0, 0]`` included on both sides).

    *Proof.* Let ``0 = r_0 < r_1 < … < r_k`` be the batches rent trains on. From each ``r_i``
    it pays κ, then Ψ̄ at each batch it keeps until the next training or the end, and those
    sum to less than κ (else it would have retrained sooner): ``cost(rent) < 2κ(k + 1)``. The
    intervals ``I_i = (r_{i-1}, r_i]``, ``i = 1..k``, are disjoint and
    ``Σ_{j∈I_i} Ψ̄_{j,r_{i-1}} >= κ`` (rent retrained at ``r_i``). On ``I_i`` the ORACLE either
    trains, paying κ, or serves every batch with one model ``p <= r_{i-1}``, paying
    ``Σ_{j∈I_i} Ψ̄_{j,p} >= Σ_{j∈I_i} Ψ̄_{j,r_{i-1}} >= κ`` by (A). With κ at batch 0 and no
    negative cost anywhere, ``cost(ORACLE) >= κ(k + 1)``. ∎

    The factor 2 is tight: with ``Ψ̄ = κ/L`` at every age, rent pays ``κ(2 − 1/L)`` every ``L``
    batches, the ORACLE never retrains and pays κ every ``L`` batches, a ratio tending to
    ``2 − 1/L`` on long windows (a retrain that removes no staleness). Without (A) there is no
    bound: with ``Ψ̄ = κ`` at age 1 and 0 after, rent retrains at every batch (cost ``Tκ``)
    while the ORACLE keeps the first model (cost ``2κ``). Real Ψ̄ matrices need not meet (A).

    Parameters
    ----------
    kappa
        Retraining cost used when the observation carries none (``obs.kappa`` wins), as
        :class:`Markov`. One of the two must be given; κ > 0.

    Examples
    --------
    >>> p = RentOrBuy(kappa=3.0)
    >>> for t in (1, 2, 3):
    ...     print(p.decide(Observation(t=t, trained_on=0, psi_bar=1.2)).reason)
    paid Σ Ψ̄=1.2 < κ=3 since the last retrain
    paid Σ Ψ̄=2.4 < κ=3 since the last retrain
    paid Σ Ψ̄=3.6 ≥ κ=3 since the last retrain
    >>> p.reset(3)
    >>> p.to_dict()
    {'policy': 'rent', 'params': {'kappa': 3.0}, 'state': {'paid': 0.0, 'n': 0}}

    Offline, with Ψ̄ = 1 at every age and κ = 2: a retrain every 2 batches, against the
    ORACLE's none.

    >>> from cara_mlflow.costs import with_kappa
    >>> from cara_mlflow.oracle import solve
    >>> C = with_kappa(np.ones((6, 6)), 2.0)
    >>> costs, strategies = RentOrBuy.offline_costs(C)
    >>> strategies.tolist(), costs.tolist(), solve(C).cost
    ([[0, 0, 2, 2, 4, 4]], [9.0], 7.0)

    """

    name = "rent"

    def __init__(self, kappa: float | None = None):
        self.kappa = None if kappa is None else _check_real("kappa", kappa, low=0, low_open=True)
        self._reset_state()

    def _reset_state(self) -> None:
        self._paid = 0.0
        self._n = 0

    def decide(self, obs: Observation) -> Decision:
        psi = _psi_bar(obs)
        kappa = _kappa_of(obs, self.kappa, self.name)
        # Added left to right, as the offline run (_threshold_run) adds: the two agree bit for bit.
        self._paid = self._paid + psi
        self._n += 1
        retrain = self._paid >= kappa
        return Decision(
            retrain,
            f"paid Σ Ψ̄={_fmt(self._paid)} {'≥' if retrain else '<'} κ={_fmt(kappa)} since the last retrain",
            self._paid,
            kappa,
        )

    def get_state(self) -> dict[str, Any]:
        return {"paid": self._paid, "n": self._n}

    def set_state(self, state: Mapping[str, Any]) -> None:
        _check_fields(state, self.name, ("paid", "n"))
        paid = _check_real("state.paid", state["paid"])
        n = _check_int("state.n", state["n"], low=0)
        self._paid, self._n = paid, n

    @classmethod
    def offline_params(cls, C) -> dict[str, Any]:
        return Markov.offline_params(C)

    @classmethod
    def _offline_costs(cls, C, theta, start):
        # CARA-CT's cumulative run with τ_cum = κ_t = C[t, t] (which wins over the parameter).
        strategies = _threshold_run(C, None, cumulative=True)[1]
        return _path_costs(C, strategies), strategies


class NeverRetrain(Policy):
    """NR: always Keep; the oldest model serves the whole stream.

    Examples
    --------
    >>> NeverRetrain().decide(Observation(t=1, trained_on=0, psi_bar=99.0))
    Decision(retrain=False, reason='never retrain', score=0.0)

    """

    name = "nr"

    def __init__(self):
        self._reset_state()

    def decide(self, obs: Observation) -> Decision:
        return Decision(False, "never retrain", 0.0)

    @classmethod
    def _offline_costs(cls, C, theta, start):
        strategies = np.zeros((1, C.shape[0]), dtype=np.int64)
        return _path_costs(C, strategies), strategies


class OracleFollower(Policy):
    """ORACLE follower (Eq. 11): Retrain iff ``t`` is one of the oracle's retrain batches.

    Parameters
    ----------
    retrain_at
        Absolute batch indices at which the hindsight-optimal strategy retrains (stored sorted,
        without duplicates).

    Examples
    --------
    >>> p = OracleFollower(retrain_at=[7, 3])
    >>> p
    oracle(retrain_at=[3, 7])
    >>> p.decide(Observation(t=3, trained_on=0, psi_bar=0.0)).reason
    "t=3 is one of the oracle's retrain batches"

    """

    name = "oracle"
    follows_oracle = True

    def __init__(self, retrain_at: Iterable[int]):
        if isinstance(retrain_at, (str, bytes, Mapping)) or not isinstance(retrain_at, Iterable):
            raise InputError(f"retrain_at: expected a list of batch indices, got {retrain_at!r}")
        self.retrain_at = sorted(
            {_check_int(f"retrain_at[{i}]", v, low=0) for i, v in enumerate(retrain_at)}
        )
        self._reset_state()

    def decide(self, obs: Observation) -> Decision:
        hit = obs.t in self.retrain_at
        where = "one of" if hit else "not one of"
        return Decision(hit, f"t={obs.t} is {where} the oracle's retrain batches", float(hit))


# --------------------------------------------------------------------------- drift detectors


class _DetectorPolicy(Policy):
    """Retrain at the end of a batch in which a river drift detector fired on the model's errors.

    river's detectors expose no state (ADWIN's core is compiled), so the state is the 0/1 errors
    fed since the detector was last fresh, packed into bits; ``set_state`` replays them into a
    fresh detector. Both detectors reset themselves fully on the update after a detection, so
    only the errors after the last detection need keeping: the state is bounded by the interval
    between detections (or retrains), about one bit per sample.

    """

    _label: ClassVar[str]
    needs_errors = True

    @abc.abstractmethod
    def _new_detector(self): ...

    def _reset_state(self) -> None:
        self._detector = self._new_detector()
        # Errors fed since the detector was fresh, one uint8 array per batch, so that a long
        # quiet stretch costs one append per batch rather than a growing copy.
        self._fed: list[np.ndarray] = []

    def _errors(self, obs: Observation) -> np.ndarray:
        if obs.errors is None:
            raise InputError(
                f"errors: the {self.name} policy needs the current model's per-sample "
                "0/1 errors on the batch"
            )
        e = np.asarray(obs.errors)
        if e.ndim != 1 or e.dtype.kind not in "biuf":
            raise InputError(
                f"errors: expected a 1-D array of 0/1 values, got dtype {e.dtype} "
                f"and shape {e.shape}"
            )
        bad = np.flatnonzero((e != 0) & (e != 1))  # NaN is caught too
        if bad.size:
            raise InputError(
                f"errors: expected 0/1 values, got {e[bad[0]]!r} at sample {bad[0]}"
            )
        return e.astype(np.uint8)

    def _feed(self, detector, bits: np.ndarray) -> list[int]:
        """Update ``detector`` with every bit, in order; return the samples where it fired."""
        update = detector.update  # river detectors are per sample: keep the loop tight
        hits = []
        for i, x in enumerate(bits.tolist()):
            update(x)
            if detector.drift_detected:
                hits.append(i)
        return hits

    def decide(self, obs: Observation) -> Decision:
        bits = self._errors(obs)
        hits = self._feed(self._detector, bits)
        n = bits.size
        if hits:
            # The detector will reset itself on its next update: forget what came before.
            self._fed = [bits[hits[-1] + 1:]]
            more = f" ({len(hits)} detections)" if len(hits) > 1 else ""
            reason = f"{self._label} signalled drift at sample {hits[0]} of {n}{more}"
        else:
            self._fed.append(bits)
            reason = f"{self._label} signalled no drift in {n} samples"
        return Decision(bool(hits), reason, float(len(hits)))

    def get_state(self) -> dict[str, Any]:
        bits = np.concatenate(self._fed) if self._fed else np.zeros(0, np.uint8)
        return {
            "n_errors": int(bits.size),
            "errors": base64.b64encode(np.packbits(bits).tobytes()).decode("ascii"),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        _check_fields(state, self.name, ("n_errors", "errors"))
        n = _check_int("state.n_errors", state["n_errors"], low=0)
        packed = state["errors"]
        try:
            raw = np.frombuffer(base64.b64decode(packed, validate=True), np.uint8)
        except (TypeError, ValueError):  # binascii.Error is a ValueError
            raise InputError(
                f"state.errors: expected a base64 string, got {packed!r:.60}"
            ) from None
        unpacked = np.unpackbits(raw)
        if raw.size != -(-n // 8) or unpacked[n:].any():
            raise InputError(
                f"state.errors: expected {n} packed bits (state.n_errors), got {raw.size} bytes"
            )
        bits = unpacked[:n]
        detector = self._new_detector()
        if self._feed(detector, bits):
            # get_state keeps only the errors after the last detection, so a replay never fires.
            raise InputError(
                f"state.errors: replaying them fires the {self._label} detector: "
                "not a state written by this policy with these parameters"
            )
        self._detector, self._fed = detector, [bits] if n else []


class AdwinPolicy(_DetectorPolicy):
    """ADWIN baseline: Retrain at the end of a batch in which ADWIN detected drift in the errors.

    Wraps :class:`river.drift.ADWIN` (Bifet & Gavaldà, 2007) fed with the current model's
    per-sample 0/1 errors; the parameters are river's.

    Parameters
    ----------
    delta
        Significance value, in (0, 1).
    clock
        How often, in samples, ADWIN checks for change (``>= 1``).
    max_buckets
        Buckets of each size kept before merging (``>= 1``).
    min_window_length
        Minimum length of a sub-window tested for change (``>= 1``).
    grace_period
        Samples seen before any detection (``>= 0``).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> p = AdwinPolicy()
    >>> for t in (1, 2, 3):
    ...     rate = 0.05 if t < 3 else 0.6
    ...     errors = (rng.random(500) < rate).astype(int)
    ...     print(p.decide(Observation(t=t, trained_on=0, psi_bar=0.0, errors=errors)).reason)
    ADWIN signalled no drift in 500 samples
    ADWIN signalled no drift in 500 samples
    ADWIN signalled drift at sample 23 of 500

    """

    name = "adwin"
    _label = "ADWIN"

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ):
        self.delta = _check_real("delta", delta, low=0, high=1, low_open=True, high_open=True)
        # river's compiled core panics (rather than raising) on clock=0 or max_buckets=0.
        self.clock = _check_int("clock", clock, low=1)
        self.max_buckets = _check_int("max_buckets", max_buckets, low=1)
        self.min_window_length = _check_int("min_window_length", min_window_length, low=1)
        self.grace_period = _check_int("grace_period", grace_period, low=0)
        self._reset_state()

    def _new_detector(self):
        from river.drift import ADWIN  # river takes a second to import: only when needed

        return ADWIN(
            delta=self.delta,
            clock=self.clock,
            max_buckets=self.max_buckets,
            min_window_length=self.min_window_length,
            grace_period=self.grace_period,
        )


class DdmPolicy(_DetectorPolicy):
    """DDM baseline: Retrain at the end of a batch in which DDM detected drift in the errors.

    Wraps :class:`river.drift.binary.DDM` (Gama et al., 2004) fed with the current model's
    per-sample 0/1 errors; the parameters are river's. Warnings are not acted on.

    Parameters
    ----------
    warm_start
        Samples seen before any detection (``>= 0``).
    warning_threshold
        Warning level, in standard deviations (``> 0``).
    drift_threshold
        Drift level, in standard deviations (``> 0``).

    Examples
    --------
    >>> p = DdmPolicy()
    >>> quiet = np.zeros(100, dtype=int); quiet[::10] = 1
    >>> p.decide(Observation(t=1, trained_on=0, psi_bar=0.0, errors=quiet)).reason
    'DDM signalled no drift in 100 samples'
    >>> d = p.decide(Observation(t=2, trained_on=0, psi_bar=0.0, errors=np.ones(100)))
    >>> d.retrain, d.reason
    (True, 'DDM signalled drift at sample 6 of 100')

    """

    name = "ddm"
    _label = "DDM"

    def __init__(
        self, warm_start: int = 30, warning_threshold: float = 2.0, drift_threshold: float = 3.0
    ):
        self.warm_start = _check_int("warm_start", warm_start, low=0)
        self.warning_threshold = _check_real(
            "warning_threshold", warning_threshold, low=0, low_open=True
        )
        self.drift_threshold = _check_real(
            "drift_threshold", drift_threshold, low=0, low_open=True
        )
        self._reset_state()

    def _new_detector(self):
        from river.drift.binary import DDM

        return DDM(
            warm_start=self.warm_start,
            warning_threshold=self.warning_threshold,
            drift_threshold=self.drift_threshold,
        )


# --------------------------------------------------------------------------- registry

POLICIES: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (CaraT, CaraCT, CaraP, Markov, RentOrBuy, NeverRetrain, OracleFollower, AdwinPolicy, DdmPolicy)
}
"""Every policy by registry name; feeds validation, docs and the CLI's choices."""


def _lookup(name) -> type[Policy]:
    try:
        return POLICIES[name]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown policy {name!r}: expected one of {', '.join(POLICIES)}"
        ) from None


def make_policy(name: str, **params) -> Policy:
    """Build the policy registered as ``name`` with ``params``.

    Examples
    --------
    >>> make_policy("cara-p", phi=4, offset=1)
    cara-p(phi=4, offset=1)
    >>> make_policy("cara-x")
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: unknown policy 'cara-x': expected one of cara-t, cara-ct, cara-p, markov, rent,
    nr, oracle, adwin, ddm

    """
    cls = _lookup(name)
    signature = inspect.signature(cls.__init__).parameters
    names = cls._param_names()
    for p in params:
        if p not in names:
            raise InputError(
                f"{p}: not a parameter of the {name} policy: expected one of "
                f"{', '.join(names) or '(none)'}"
            )
    for p in names:
        if p not in params and signature[p].default is inspect.Parameter.empty:
            raise InputError(f"{p}: the {name} policy needs this parameter")
    return cls(**params)


def policy_from_dict(d: Mapping[str, Any]) -> Policy:
    """Rebuild any registered policy from ``Policy.to_dict()`` output (e.g. after a JSON trip).

    Examples
    --------
    >>> import json
    >>> p = make_policy("cara-ct", tau_cum=2.5)
    >>> _ = p.decide(Observation(t=1, trained_on=0, psi_bar=0.1))
    >>> q = policy_from_dict(json.loads(json.dumps(p.to_dict())))
    >>> q, q.get_state()
    (cara-ct(tau_cum=2.5), {'cum': 0.1, 'n': 1})

    """
    return Policy.from_dict(d)
