"""Guard rails that compose with any policy: a maximum model age and a retrain budget.

Both count processed batches in order (the stream's clock, as the cooldown does), never ids:

* ``max_model_age = N``: a Keep when the model in use is more than ``N`` batches old (its age is
  the batches processed in order since the batch it was trained on) becomes a Retrain, with
  trigger ``max-age``; a model therefore serves at most ``N`` batches after its own.
* ``retrain_budget = (N, W)``: at most ``N`` retrain attempts (promoted or rejected, whatever
  asked for them) in any ``W`` consecutive batches. A Retrain past it is deferred: the batch is
  kept, and recorded with ``cara.deferred = budget``.

The planner applies them in this order: the policy decides; an old model turns a Keep into a
Retrain; the cooldown after a rejected challenger blocks both kinds; the budget defers what is
left. ``--force-retrain`` (and a schema retrain, which cannot wait) bypasses every guard rail,
and still counts against the budget.

>>> g = Guards.parse(max_model_age="10", retrain_budget="2:8")
>>> g.to_dict()
{'max_model_age': 10, 'retrain_budget': {'attempts': 2, 'window': 8}}
>>> g.too_old(age=11), g.too_old(age=10)
(True, False)
>>> g.over_budget(attempts=(3, 7), t=10), g.over_budget(attempts=(1, 7), t=10)
(True, False)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from .errors import InputError

__all__ = ["Guards", "MAX_BUDGET_ATTEMPTS", "OFF", "record_attempt"]

#: The largest N of a budget: the state keeps the positions of this many last attempts.
MAX_BUDGET_ATTEMPTS = 100
#: What switches a guard rail off at ``step`` (overriding the policy's).
OFF = ("off", "0", "none")


def _count(text: str, option: str, *, low: int) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or value < low or str(text).strip() != str(value):
        raise InputError(f"{option}: expected a whole number ≥ {low}, got {text!r}")
    return value


@dataclass(frozen=True)
class Guards:
    """The guard rails of a policy (``None``: that guard rail is off)."""

    max_model_age: int | None = None
    retrain_budget: tuple[int, int] | None = None    # (attempts, window)

    def __post_init__(self):
        if self.max_model_age is not None and not (isinstance(self.max_model_age, int) and self.max_model_age >= 1):
            raise InputError(f"--max-model-age: expected a whole number ≥ 1, got {self.max_model_age!r}")
        if self.retrain_budget is not None:
            n, w = self.retrain_budget
            if not (1 <= n <= MAX_BUDGET_ATTEMPTS and n <= w):
                raise InputError(f"--retrain-budget: expected N:W with 1 ≤ N ≤ {MAX_BUDGET_ATTEMPTS} and N ≤ W, "
                                 f"got {n}:{w}")

    @classmethod
    def parse(cls, *, max_model_age: str | None = None, retrain_budget: str | None = None) -> "Guards":
        """Guard rails from the command line's text (``None`` or ``off``: no such guard rail).

        >>> Guards.parse(retrain_budget="3").retrain_budget
        Traceback (most recent call last):
        ...
        cara_mlflow.errors.InputError: --retrain-budget: expected N:W (at most N retrain attempts in any W \
consecutive batches, e.g. 2:10) or off, got '3'
        """
        return cls(max_model_age=_age(max_model_age), retrain_budget=_budget(retrain_budget))

    def override(self, *, max_model_age: str | None = None, retrain_budget: str | None = None) -> "Guards":
        """These guard rails with the ones given replaced (``off`` switches one off; ``None`` keeps it).

        >>> Guards(max_model_age=5).override(max_model_age="off", retrain_budget="1:4")
        Guards(max_model_age=None, retrain_budget=(1, 4))
        """
        out = self
        if max_model_age is not None:
            out = replace(out, max_model_age=_age(max_model_age))
        if retrain_budget is not None:
            out = replace(out, retrain_budget=_budget(retrain_budget))
        return out

    @property
    def any(self) -> bool:
        return self.max_model_age is not None or self.retrain_budget is not None

    def too_old(self, *, age: int) -> bool:
        """True when a model ``age`` batches old must be retrained."""
        return self.max_model_age is not None and age > self.max_model_age

    def over_budget(self, *, attempts: tuple[int, ...], t: int) -> bool:
        """True when one more attempt at position ``t`` would exceed the budget, given the positions
        of the earlier ``attempts``: N of them already lie in the window of W batches ending at ``t``."""
        if self.retrain_budget is None:
            return False
        n, w = self.retrain_budget
        return sum(1 for a in attempts if t - w < a < t) >= n

    def describe(self) -> str:
        """One phrase for notes and ``status``.

        >>> Guards(max_model_age=30, retrain_budget=(2, 10)).describe()
        'maximum model age 30 batches; at most 2 retrain attempts in any 10 batches'
        >>> Guards().describe()
        'none'
        """
        parts = []
        if self.max_model_age is not None:
            parts.append(f"maximum model age {self.max_model_age} batches")
        if self.retrain_budget is not None:
            n, w = self.retrain_budget
            parts.append(f"at most {n} retrain attempt{'s' if n != 1 else ''} in any {w} batches")
        return "; ".join(parts) or "none"

    def to_dict(self) -> dict:
        """The ``guards`` object of ``policy.json``."""
        budget = self.retrain_budget
        return {"max_model_age": self.max_model_age,
                "retrain_budget": None if budget is None else {"attempts": budget[0], "window": budget[1]}}

    @classmethod
    def from_dict(cls, data: Any, source: str = "policy.json") -> "Guards":
        """Guard rails from ``policy.json``'s ``guards`` (:class:`InputError` naming the field)."""
        if data is None:
            return cls()
        budget = data.get("retrain_budget") if isinstance(data, Mapping) else None
        ok = (isinstance(data, Mapping) and set(data) <= {"max_model_age", "retrain_budget"}
              and (data.get("max_model_age") is None or _whole(data["max_model_age"]))
              and (budget is None or (isinstance(budget, Mapping) and set(budget) == {"attempts", "window"}
                                      and _whole(budget["attempts"]) and _whole(budget["window"]))))
        if not ok:
            raise InputError(f"{source}: field 'guards' is {data!r:.80}; expected {{max_model_age, retrain_budget}} "
                             "as tune writes them; re-run `cara-mlflow tune`")
        return cls(max_model_age=data.get("max_model_age"),
                   retrain_budget=None if budget is None else (budget["attempts"], budget["window"]))


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _age(text: str | None) -> int | None:
    if text is None or str(text).strip().lower() in OFF:
        return None
    return _count(str(text).strip(), "--max-model-age", low=1)


def _budget(text: str | None) -> tuple[int, int] | None:
    if text is None or str(text).strip().lower() in OFF:
        return None
    parts = str(text).strip().split(":")
    if len(parts) != 2:
        raise InputError("--retrain-budget: expected N:W (at most N retrain attempts in any W consecutive batches, "
                         f"e.g. 2:10) or off, got {text!r}")
    return (_count(parts[0], "--retrain-budget N", low=1), _count(parts[1], "--retrain-budget W", low=1))


def record_attempt(attempts: tuple[int, ...], t: int) -> tuple[int, ...]:
    """The positions of the last attempts after one at ``t`` (at most :data:`MAX_BUDGET_ATTEMPTS`).

    >>> record_attempt(tuple(range(100)), 100)[:2], len(record_attempt(tuple(range(100)), 100))
    ((1, 2), 100)
    """
    return (*attempts, int(t))[-MAX_BUDGET_ATTEMPTS:]
