"""JSON with exact decimals: OCPP numbers are read as Decimal, so no float enters a meter or money path."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(text: str) -> Any:
    """Parse JSON text; anything that is not JSON (NaN, Infinity, a number Decimal cannot hold such as
    1e99999999999999999999) raises ValueError."""
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except InvalidOperation:
        raise ValueError("a number beyond the range of decimals") from None


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> str:
    """Compact JSON; a decimal keeps its digits (float's shortest repr round-trips them)."""
    return json.dumps(value, default=_default, separators=(",", ":"))
