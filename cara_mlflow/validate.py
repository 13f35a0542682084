"""Checks of the values users give, each written once: κ, policy names, windows, counts, reasons.

Every check returns the value (normalised) or raises :class:`~cara_mlflow.errors.InputError`
with one line that names the value and what is expected. The library, the policy document and
the CLI's option callbacks all call these, so a rule and its message never drift apart.

>>> kappa(20), policy_name("cara-ct", tunable=True), offline_window("0:25"), policy_list("nr, cara-t")
(20.0, 'cara-ct', (0, 25), ['nr', 'cara-t'])
>>> kappa(0)
Traceback (most recent call last):
...
cara_mlflow.errors.InputError: kappa: expected a finite number > 0 (the cost of one retrain in Ψ units), got 0
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .errors import InputError

__all__ = ["is_positive", "kappa", "policy_name", "policy_names", "tunable_policies", "policy_list",
           "offline_window", "offline_spec", "Latest", "count", "reason"]


def _policies() -> tuple[str, ...]:
    from .policies import POLICIES  # the registry of names; numpy only, no scikit-learn

    return tuple(POLICIES)


def is_positive(value) -> bool:
    """A finite real number > 0 (a bool is not a number here).

    >>> is_positive(1e-3), is_positive(float("inf")), is_positive(True), is_positive("2")
    (True, False, False, False)
    """
    return (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            and value > 0)


def kappa(value) -> float:
    """κ, the cost of one retrain: a finite number > 0."""
    if not is_positive(value):
        raise InputError(f"kappa: expected a finite number > 0 (the cost of one retrain in Ψ units), got {value!r}")
    return float(value)


def policy_name(name, *, tunable: bool = False) -> str:
    """A registered policy name; with ``tunable``, one ``tune`` can put in production.

    >>> policy_name("oracle", tunable=True)
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: policy: 'oracle' cannot be tuned for production (it needs the future);
    expected one of cara-t, cara-ct, cara-p, markov, rent, nr, adwin, ddm
    """
    known = _policies()
    choices = tunable_policies() if tunable else known
    if not isinstance(name, str) or name not in known:
        raise InputError(f"policy: unknown policy {name!r}: expected one of {', '.join(choices)}")
    if name not in choices:
        raise InputError(f"policy: {name!r} cannot be tuned for production (it needs the future); "
                         f"expected one of {', '.join(choices)}")
    return name


def decides_before_labels(name: str) -> str:
    """``name``, a policy that can decide on a Ψ̄ estimated before labels (not a drift detector).

    >>> decides_before_labels("adwin")
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: decide-before-labels: adwin watches the errors of labelled rows, which a
    batch's queries do not have; tune a cost-based policy (cara-t, cara-ct, cara-p, ...) to decide before labels
    """
    from .policies import POLICIES

    if not POLICIES[name].from_costs():
        raise InputError(f"decide-before-labels: {name} watches the errors of labelled rows, which a batch's "
                         "queries do not have; tune a cost-based policy (cara-t, cara-ct, cara-p, ...) to decide "
                         "before labels")
    return name


def tunable_policies() -> tuple[str, ...]:
    """The policies ``tune`` accepts: every registered one but those that follow the ORACLE,
    which needs the future (``Policy.follows_oracle``)."""
    from .policies import POLICIES

    return tuple(name for name, cls in POLICIES.items() if not cls.follows_oracle)


def policy_names(names=None) -> list[str]:
    """A list of registered policy names (None: every policy), in the order given.

    >>> policy_names(["nr", "oracle"]), len(policy_names())
    (['nr', 'oracle'], 9)
    """
    known = _policies()
    names = list(known) if names is None else list(names)
    for name in names:
        if not isinstance(name, str) or name not in known:
            raise InputError(f"policies: unknown policy {name!r}: expected one of {', '.join(known)}")
    return names


def policy_list(text: str) -> list[str]:
    """``"all"`` or a comma-separated list of policy names, in the order given."""
    names = list(_policies()) if text.strip() == "all" else [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in _policies()]
    if unknown or not names:
        raise InputError(f"policies: unknown policy {', '.join(unknown) or '(none)'}: expected 'all' or a "
                         f"comma-separated list of {', '.join(_policies())}")
    return names


def offline_window(value, *, plain_count: bool = False, minimum: int = 2) -> tuple[int, int]:
    """A half-open window of batch ids ``START:STOP`` (or a ``(start, stop)`` pair) with at least 2 batches.

    With ``plain_count``, a plain ``N`` means ``0:N``.

    >>> offline_window("10", plain_count=True), offline_window((3, 9))
    ((0, 10), (3, 9))
    >>> offline_window("5:6")
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: offline: expected 0 <= START < STOP with room for at least 2 batches ...
    """
    if isinstance(value, str):
        text = value.strip()
        if plain_count and text.isdigit():
            text = f"0:{text}"
        try:
            start, stop = (int(v) for v in text.split(":"))
        except ValueError:
            raise InputError(f"offline: expected START:STOP (half-open, e.g. 0:25 for batches 0-24), "
                             f"got {value!r}") from None
    else:
        start, stop = value
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (start, stop)):
        raise InputError(f"offline: expected integer batch ids START:STOP, got {value!r}")
    if start < 0 or stop - start < minimum:
        raise InputError(f"offline: expected 0 <= START < STOP with room for at least {minimum} batch"
                         f"{'es' if minimum != 1 else ''} (ids START … STOP-1), got {start}:{stop}")
    return int(start), int(stop)


@dataclass(frozen=True)
class Latest:
    """``--offline last:N``: the N latest complete batches of the store, whatever their ids;
    ``--offline all`` (``n`` None): every complete batch, the whole history."""

    n: int | None


def offline_spec(value) -> "tuple[int, int] | Latest":
    """``START:STOP`` (half-open ids, at least one batch), ``last:N`` (N ≥ 1) or ``all``; how many
    batches a policy needs is checked against the store (a tuned one: 2; ``rent``: 1).

    >>> offline_spec("7:8"), offline_spec("last:25"), offline_spec("all")
    ((7, 8), Latest(n=25), Latest(n=None))
    >>> offline_spec("last:0")
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: offline: expected last:N with N ≥ 1 (the N latest complete batches), got 'last:0'
    """
    if isinstance(value, Latest):
        return value
    text = value.strip() if isinstance(value, str) else None
    if text is not None and text.lower() == "all":
        return Latest(None)
    if text is not None and text.lower().startswith("last:"):
        n = text[5:]
        if not n.isdigit() or int(n) < 1:
            raise InputError(f"offline: expected last:N with N ≥ 1 (the N latest complete batches), got {value!r}")
        return Latest(int(n))
    return offline_window(value, minimum=1)


def count(value, what: str) -> int:
    """A number of batches >= 0 (``what`` names it in the message).

    >>> count(3, "cooldown")
    3
    >>> count(-1, "cooldown")
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: cooldown: expected a number of batches >= 0, got -1
    """
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise InputError(f"{what}: expected a number of batches >= 0, got {value!r}")
    return int(value)


def reason(text, why: str) -> str:
    """A non-empty reason, recorded with an action taken by hand (``why`` says what it explains)."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"reason: expected a short text saying why {why}")
    return text
