"""JSON with exact decimals: OCPP numbers are read as Decimal, so no float enters a meter or money path."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any


def loads(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> str:
    """Compact JSON; a decimal keeps its digits (float's shortest repr round-trips them)."""
    return json.dumps(value, default=_default, separators=(",", ":"))
