"""JSON that strict parsers accept: an undefined number (NaN, ±inf) is written ``null``.

Python's ``json`` writes ``NaN``, which is not JSON (``jq`` and most languages refuse it); a
regressor's query accuracy, for one, is undefined.

>>> dumps({"accuracy": float("nan"), "rows": [1.5, float("inf")]})
'{"accuracy": null, "rows": [1.5, null]}'
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dumps", "finite_or_none"]


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf), at any depth, replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def dumps(value: Any, **kwargs) -> str:
    """``json.dumps`` of :func:`finite_or_none` (``value``); refuses what would still not be JSON."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)
