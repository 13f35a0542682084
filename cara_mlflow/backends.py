"""Where a retrain runs: an MLflow Projects backend and its configuration (``--backend``,
``--backend-config``), stored in the policy by ``tune`` and overridable at ``step``.

``local`` (the default) runs the project in the step's process tree and waits for it, as
always. Any other backend (``databricks``, ``kubernetes``, an installed plugin) is *detached*:
the retrain is submitted, the step waits for it up to ``--retrain-timeout`` seconds and, if it is
still running then, exits 75 leaving it running for the next step. ``local`` with
``{"detach": true}`` runs the project as its own process on this host under the same rules (a
training longer than the cron interval; and how the detached path is tested here).

>>> Backend.parse("kubernetes", '{"kube-context": "prod"}').detached
True
>>> Backend().detached, Backend("local", {"detach": True}).mlflow_config()
(False, {})
>>> spec = Backend("databricks", {"new_cluster": {}})
>>> Backend.from_dict(spec.to_dict()) == spec
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import InputError

__all__ = ["Backend", "LOCAL", "DETACH_KEY", "DEFAULT_RETRAIN_TIMEOUT", "parse_backend_config", "check_retrain_timeout"]

LOCAL = "local"
#: The key of ``--backend-config`` that makes a ``local`` retrain detached (never passed to MLflow).
DETACH_KEY = "detach"
#: Seconds a step waits for a detached retrain before it exits 75 and leaves it running.
DEFAULT_RETRAIN_TIMEOUT = 3600.0


def parse_backend_config(text: str | None) -> dict:
    """``--backend-config``: a JSON object, or the path of a ``.json`` file holding one (as
    ``mlflow run --backend-config`` takes it); empty or None is ``{}``.

    >>> parse_backend_config('{"num_workers": 2}')
    {'num_workers': 2}
    >>> parse_backend_config("[1]")
    Traceback (most recent call last):
    ...
    cara_mlflow.errors.InputError: --backend-config: expected a JSON object (or a .json file holding one), got [1]
    """
    if text is None or not text.strip():
        return {}
    source, base = text, Path.cwd()
    if not text.lstrip().startswith(("{", "[")):
        path = Path(text).expanduser()
        if not path.is_file():
            raise InputError(f"--backend-config: no file {text!r}; give a JSON object or the path of a .json file")
        base = path.absolute().parent
        try:
            source = path.read_text()
        except OSError as exc:
            raise InputError(f"--backend-config: cannot read {text!r} ({exc.strerror})") from None
    try:
        config = json.loads(source)
    except ValueError as exc:
        raise InputError(f"--backend-config: not valid JSON ({exc}); give a JSON object or a .json file") from None
    if not isinstance(config, dict):
        raise InputError(f"--backend-config: expected a JSON object (or a .json file holding one), got {text.strip()}")
    return _absolute_paths(config, base)


#: Keys of a backend configuration that name a file: made absolute (relative to the configuration
#: file, or to the working directory for inline JSON), so a step from cron finds them.
_PATH_KEYS = ("kube-job-template-path",)


def _absolute_paths(config: dict, base: Path) -> dict:
    return {k: str((base / Path(v).expanduser()).absolute()) if k in _PATH_KEYS and isinstance(v, str) else v
            for k, v in config.items()}


def check_retrain_timeout(seconds: float) -> float:
    """``--retrain-timeout``: seconds >= 0 (0: look once, never wait)."""
    if not (isinstance(seconds, (int, float)) and seconds >= 0 and seconds == seconds and seconds != float("inf")):
        raise InputError(f"--retrain-timeout: expected seconds >= 0, got {seconds!r}")
    return float(seconds)


@dataclass(frozen=True)
class Backend:
    """An MLflow Projects backend, its configuration, and how long a step waits for a detached
    retrain (``timeout``: a step's option, not stored in the policy)."""

    name: str = LOCAL
    config: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = field(default=DEFAULT_RETRAIN_TIMEOUT, compare=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip() or self.name != self.name.strip():
            raise InputError(f"--backend: expected a backend name (local, databricks, kubernetes or a plugin's), "
                             f"got {self.name!r}")
        if not isinstance(self.config, Mapping):
            raise InputError("--backend-config: expected a JSON object")
        detach = self.config.get(DETACH_KEY, False)
        if not isinstance(detach, bool) or (detach and self.name != LOCAL):
            raise InputError(f"--backend-config: {DETACH_KEY!r} is true or false, for the local backend only "
                             "(every other backend is detached)")
        check_retrain_timeout(self.timeout)

    @classmethod
    def parse(cls, name: str | None, config_text: str | None, timeout: float = DEFAULT_RETRAIN_TIMEOUT) -> "Backend":
        """The backend of ``--backend NAME --backend-config JSON|FILE.json``."""
        return cls(name or LOCAL, parse_backend_config(config_text), timeout)

    @property
    def detached(self) -> bool:
        """True when the retrain runs on its own (submitted, waited for, found again after a crash)."""
        return self.name != LOCAL or bool(self.config.get(DETACH_KEY))

    @property
    def is_default(self) -> bool:
        return self.name == LOCAL and not self.config

    def mlflow_config(self) -> dict:
        """The ``backend_config`` MLflow gets (our own key taken out)."""
        return {k: v for k, v in self.config.items() if k != DETACH_KEY}

    def to_dict(self) -> dict:
        return {"name": self.name, "config": dict(self.config)}

    @classmethod
    def from_dict(cls, data: Mapping | None, timeout: float = DEFAULT_RETRAIN_TIMEOUT) -> "Backend":
        if data is None:
            return cls(timeout=timeout)
        if not isinstance(data, Mapping) or set(data) != {"name", "config"}:
            raise InputError("backend: expected {name, config}")
        return cls(data["name"], dict(data["config"]), timeout)

    def describe(self) -> str:
        """How the CLI names it: ``kubernetes``, ``local (detached)``."""
        return f"{self.name} (detached)" if self.name == LOCAL and self.detached else self.name
