"""κ from money: a retrain's cost over the cost of one wrong answer, fixed or from measured training time.

κ = retrain cost ÷ error cost is the number of wrong answers one retrain is worth; it is only
right if Ψ̄ counts wrong answers, which is why ``tune`` measures Ψ̄ on the expected-loss scale
whenever κ comes from money. With ``retrain_cost = "measured"``, the retrain cost of each batch is
the median wall time of the last :data:`MEASURED_WINDOW` trainings (run start until the model is
logged; at first the offline trainings of ``tune``) times the price per hour, so κ_t follows the
training time as it changes.

>>> m = Money(error_cost=2.0, retrain_cost=40.0)
>>> m.kappa(()), m.describe()
(20.0, 'retrain cost 40 ÷ error cost 2')
>>> timed = Money(error_cost=2.0, price_per_hour=6.0)            # 20 minutes at $6/hour = $2
>>> timed.kappa([1100.0, 1200.0, 1300.0])
1.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import InputError

__all__ = ["Money", "MEASURED_WINDOW", "SPEND_WINDOW", "MEASURED", "record_seconds", "record_spend"]

#: The trainings whose median wall time prices a measured retrain.
MEASURED_WINDOW = 5
#: The batches over which ``status`` sums the money spent.
SPEND_WINDOW = 30
MEASURED = "measured"


def _amount(value, option: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (np.isfinite(number) and number > 0):
        raise InputError(f"{option}: expected an amount > 0, got {value!r}")
    return number


@dataclass(frozen=True)
class Money:
    """What a retrain and a wrong answer cost (any one currency). ``retrain_cost`` None: measured."""

    error_cost: float
    retrain_cost: float | None = None
    price_per_hour: float | None = None

    def __post_init__(self):
        _amount(self.error_cost, "--error-cost")
        if (self.retrain_cost is None) == (self.price_per_hour is None):
            raise InputError("--retrain-cost: give an amount, or `measured` with --price-per-hour P "
                             "(the retrain is priced from its measured training time)")
        if self.retrain_cost is not None:
            _amount(self.retrain_cost, "--retrain-cost")
        else:
            _amount(self.price_per_hour, "--price-per-hour")

    @classmethod
    def parse(cls, *, retrain_cost: str | None, error_cost: str | None,
              price_per_hour: str | None = None) -> "Money | None":
        """Money from the command line (None: none of the three given; κ is then given as ``--kappa``).

        >>> Money.parse(retrain_cost="measured", error_cost="2", price_per_hour="6").measured
        True
        >>> Money.parse(retrain_cost="40", error_cost=None)
        Traceback (most recent call last):
        ...
        cara_mlflow.errors.InputError: --error-cost: κ from money needs the cost of one wrong answer too \
(--retrain-cost 40 --error-cost 2)
        """
        if retrain_cost is None and error_cost is None and price_per_hour is None:
            return None
        if error_cost is None or retrain_cost is None:
            missing = "--error-cost" if error_cost is None else "--retrain-cost"
            what = "the cost of one wrong answer" if error_cost is None else "the cost of one retrain"
            raise InputError(f"{missing}: κ from money needs {what} too (--retrain-cost 40 --error-cost 2)")
        if str(retrain_cost).strip().lower() == MEASURED:
            if price_per_hour is None:
                raise InputError("--price-per-hour: `--retrain-cost measured` prices the measured training time; "
                                 "give the compute price per hour (e.g. --price-per-hour 6)")
            return cls(_amount(error_cost, "--error-cost"), None, _amount(price_per_hour, "--price-per-hour"))
        if price_per_hour is not None:
            raise InputError("--price-per-hour: only with `--retrain-cost measured`; a fixed retrain cost "
                             f"({retrain_cost}) is already an amount")
        return cls(_amount(error_cost, "--error-cost"), _amount(retrain_cost, "--retrain-cost"))

    @property
    def measured(self) -> bool:
        return self.retrain_cost is None

    def retrain_amount(self, training_seconds: Sequence[float]) -> float:
        """The cost of the next retrain: fixed, or the median of the last trainings' wall times priced."""
        if not self.measured:
            return float(self.retrain_cost)
        recent = list(training_seconds)[-MEASURED_WINDOW:]
        if not recent:
            raise InputError("--retrain-cost measured: no training has been timed yet; re-run `cara-mlflow tune`")
        return float(np.median(recent)) * float(self.price_per_hour) / 3600.0

    def kappa(self, training_seconds: Sequence[float]) -> float:
        """κ_t = the next retrain's cost ÷ the cost of one wrong answer."""
        return self.retrain_amount(training_seconds) / float(self.error_cost)

    def describe(self) -> str:
        if self.measured:
            return (f"retrain cost = median training time of the last {MEASURED_WINDOW} × "
                    f"{self.price_per_hour:g}/hour ÷ error cost {self.error_cost:g}")
        return f"retrain cost {self.retrain_cost:g} ÷ error cost {self.error_cost:g}"

    def to_dict(self, training_seconds: Sequence[float] = ()) -> dict:
        """The ``money`` object of ``policy.json`` (with the offline trainings' wall times)."""
        return {"error_cost": self.error_cost, "retrain_cost": MEASURED if self.measured else self.retrain_cost,
                "price_per_hour": self.price_per_hour,
                "training_seconds": [float(s) for s in list(training_seconds)[-MEASURED_WINDOW:]]}

    @classmethod
    def from_dict(cls, data: Any, source: str = "policy.json") -> tuple["Money", tuple[float, ...]] | None:
        """``(money, offline training seconds)`` from ``policy.json``'s ``money`` (None: κ was given)."""
        if data is None:
            return None
        try:
            if not isinstance(data, Mapping) or set(data) != {"error_cost", "retrain_cost", "price_per_hour",
                                                               "training_seconds"}:
                raise InputError("fields")
            seconds = tuple(_amount(s, "training_seconds") for s in data["training_seconds"])
            fixed = None if data["retrain_cost"] == MEASURED else data["retrain_cost"]
            return cls(data["error_cost"], fixed, data["price_per_hour"]), seconds
        except (InputError, TypeError):
            raise InputError(f"{source}: field 'money' is {data!r:.80}; expected error_cost, retrain_cost, "
                             "price_per_hour, training_seconds as tune writes them; re-run `cara-mlflow tune`"
                             ) from None


def record_seconds(seconds: Sequence[float], new: float | None) -> tuple[float, ...]:
    """The last :data:`MEASURED_WINDOW` training times after one more (None: nothing was timed).

    >>> record_seconds((1.0, 2.0, 3.0, 4.0, 5.0), 6.0)
    (2.0, 3.0, 4.0, 5.0, 6.0)
    """
    out = tuple(seconds) if new is None else (*seconds, float(new))
    return out[-MEASURED_WINDOW:]


def record_spend(recent: Sequence[Sequence[float]], staleness: float,
                 retrain: float) -> tuple[tuple[float, float], ...]:
    """The last :data:`SPEND_WINDOW` batches' (staleness paid, retrain paid), in κ units, after one more."""
    return (*(tuple(map(float, r)) for r in recent), (float(staleness), float(retrain)))[-SPEND_WINDOW:]
