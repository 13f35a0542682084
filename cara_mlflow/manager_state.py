"""The manager state (``policy_state.json`` on every batch run), typed and checked.

What a step carries to the next: the policy's JSON state, the cumulative cost, the cooldown, the
production version in use and the last retrain (DESIGN.md "Policy state and costs"). The state
is read back from the committed batch run, so a step can run on any machine.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import InputError
from .policies import Policy, policy_from_dict

__all__ = ["STATE_FILE", "LastRetrain", "ManagerState"]

STATE_FILE = "policy_state.json"
_FIELDS = ("policy", "cumulative_cost", "cooldown_until", "model_version", "last_retrain")


@dataclass(frozen=True)
class LastRetrain:
    """The last retrain attempt: its batch, the version it registered and its gate outcome."""

    batch: int
    version: int
    gate: str

    def to_dict(self) -> dict:
        return {"batch": self.batch, "version": self.version, "gate": self.gate}


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class ManagerState:
    """The lifecycle's state after a batch.

    ``policy`` is the policy's own JSON (``Policy.to_dict()``); :meth:`make_policy` rebuilds it.

    >>> from cara_mlflow.policies import make_policy
    >>> s = ManagerState.fresh(make_policy("cara-ct", tau_cum=2.0), version=1, kappa=5.0, batch=4)
    >>> s.cumulative_cost, s.model_version, s.last_retrain
    (5.0, 1, LastRetrain(batch=4, version=1, gate='off'))
    >>> ManagerState.from_json(json.dumps(s.to_dict())) == s
    True
    """

    policy: Mapping[str, Any]
    cumulative_cost: float
    model_version: int
    cooldown_until: int | None = None
    last_retrain: LastRetrain | None = None

    @classmethod
    def fresh(cls, policy: Policy, *, version: int, kappa: float, batch: int) -> "ManagerState":
        """The state after ``init``: the first model (trained or adopted on ``batch``) cost κ."""
        return cls(policy=policy.to_dict(), cumulative_cost=float(kappa), model_version=int(version),
                   last_retrain=LastRetrain(int(batch), int(version), "off"))

    @classmethod
    def from_json(cls, text: str | bytes, source: str = STATE_FILE) -> "ManagerState":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{source}: not valid JSON ({exc}); the batch run's state was edited by hand") from None
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: Any, source: str = STATE_FILE) -> "ManagerState":
        """A checked state from its decoded JSON (:class:`InputError` naming the field if not valid)."""
        if not isinstance(data, dict) or not set(data) <= set(_FIELDS) or not {"policy", "model_version"} <= set(data):
            raise InputError(f"{source}: expected an object with the fields {', '.join(_FIELDS)}")
        last = data.get("last_retrain")
        checks = {"cumulative_cost": isinstance(data.get("cumulative_cost", 0.0), numbers.Real),
                  "model_version": _is_int(data["model_version"]),
                  "cooldown_until": data.get("cooldown_until") is None or _is_int(data["cooldown_until"]),
                  "last_retrain": last is None or (isinstance(last, dict) and set(last) == {"batch", "version", "gate"}
                                                   and _is_int(last["batch"]) and _is_int(last["version"]))}
        for name, good in checks.items():
            if not good:
                raise InputError(f"{source}: field {name!r} is {data.get(name)!r:.80}; not what a step writes")
        policy_from_dict(data["policy"])               # the policy's own checks
        return cls(policy=data["policy"], cumulative_cost=float(data.get("cumulative_cost", 0.0)),
                   model_version=int(data["model_version"]), cooldown_until=data.get("cooldown_until"),
                   last_retrain=None if last is None else LastRetrain(last["batch"], last["version"], last["gate"]))

    def to_dict(self) -> dict:
        """The JSON stored as ``policy_state.json``."""
        return {"policy": dict(self.policy), "cumulative_cost": self.cumulative_cost,
                "cooldown_until": self.cooldown_until, "model_version": self.model_version,
                "last_retrain": None if self.last_retrain is None else self.last_retrain.to_dict()}

    def make_policy(self) -> Policy:
        """The policy, with its state, as the last step left it."""
        return policy_from_dict(self.policy)
