"""Validating OCPP payloads against the official JSON schemas shipped by the ``ocpp`` library.

Validators are compiled once per (version, action, direction, leniency) with fastjsonschema (about
17x faster than jsonschema) and map each failure to the CALLERROR code the OCPP-J spec of that version
names. Date-times are checked strictly here (the library's jsonschema validator checks no formats):
``2024-02-31T00:00:00Z`` or ``not-a-date`` fail; a lenient charger may omit the zone (read as UTC).

The ranges of values satwatt accepts are decided here, once, so that every payload that passes
:func:`validate` can be stored and computed with (no overflow in the database or in decimal
arithmetic later). A value outside its range is a ``PropertyConstraintViolation``; a value of the
wrong form is a ``FormationViolation`` (1.6) / ``FormatViolation`` (2.0.1). Leniency relaxes none
of them.

* Integers anywhere (vendor data included) lie within signed 64 bits, ``INT64_MIN..INT64_MAX``.
* Integer fields of the schemas: OCPP 2.0.1 defines its ``integer`` as 32 bits (Part 2, primitive
  datatypes), so every one of them lies within ``INT32_MIN..INT32_MAX``; in 1.6 ``connectorId``
  does too (satwatt stores connector and EVSE ids as 32-bit integers), and ``meterStart`` /
  ``meterStop`` lie within ``-METER_MAX_WH..METER_MAX_WH``. Connector and EVSE ids are never
  negative (1.6 ``connectorId``, 2.0.1 ``evseId``, ``connectorId`` and an EVSE's ``id``: 0 is the
  charger as a whole), and a 1.6 StartTransaction's ``connectorId`` is at least 1. A negative
  ``meterStart`` is a valid message with an implausible reading: see :mod:`csms.charging.plausibility`.
* Numbers with a fraction or an exponent are finite and at most ``INT64_MAX`` in magnitude;
  ``NaN`` and ``Infinity`` (which Python's JSON reader would let through) are not JSON.
* Sampled meter values (``meterValue`` / ``transactionData``): a 1.6 value that is not
  ``SignedData`` is a decimal number in ASCII (:func:`csms.charging.metering.to_decimal`); a 2.0.1
  ``unitOfMeasure.multiplier`` lies within ``MULTIPLIER_MIN..MULTIPLIER_MAX`` (the spec names no
  range: satwatt takes the span of the SI prefixes, yocto to yotta); the value in its base unit
  (the value times ten to the multiplier, times 1000 for a kilo unit such as kWh or kW) is at most
  ``METER_MAX_WH`` (10^18) in magnitude, so every register in Wh fits 64 bits; a ``Power.*`` value at
  most ``POWER_MAX_W`` (2^31 - 1 W, 2.1 GW: power is stored in W as a 32-bit integer). Whether a
  reading within these ranges is plausible is the metering's question, not validation's.
* Strings (values and keys) hold no lone surrogate (``"\\ud800"`` is valid JSON but not Unicode,
  and cannot be encoded as UTF-8) and no U+0000 (PostgreSQL cannot store it in text or JSON).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import fastjsonschema
import ocpp

from csms.charging.metering import to_decimal

OcppVersion = Literal["1.6", "2.0.1"]
SUBPROTOCOLS: dict[str, OcppVersion] = {"ocpp2.0.1": "2.0.1", "ocpp1.6": "1.6"}
SUBPROTOCOL_OF: dict[OcppVersion, str] = {version: name for name, version in SUBPROTOCOLS.items()}

_SCHEMA_DIRS: dict[OcppVersion, Path] = {
    "1.6": Path(ocpp.__file__).parent / "v16" / "schemas",
    "2.0.1": Path(ocpp.__file__).parent / "v201" / "schemas",
}

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
METER_MAX_WH = 10**18
POWER_MAX_W = 2**31 - 1
MULTIPLIER_MIN, MULTIPLIER_MAX = -24, 24
_NUMBER_MAX = Decimal(INT64_MAX)
# integer bounds of named fields (2.0.1: every other integer field is 32-bit, see the docstring)
_FIELD_BOUNDS_16: dict[str, tuple[int, int]] = {
    "connectorId": (0, INT32_MAX),
    "meterStart": (-METER_MAX_WH, METER_MAX_WH),
    "meterStop": (-METER_MAX_WH, METER_MAX_WH),
}
_FIELD_BOUNDS_201: dict[str, tuple[int, int]] = {"evseId": (0, INT32_MAX), "connectorId": (0, INT32_MAX)}
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
_METER_ACTIONS = frozenset({"MeterValues", "StopTransaction", "TransactionEvent"})

_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|z|[+-]\d{2}:?\d{2})?$"
)


class OcppDateTimeError(ValueError):
    """A date-time string is not a valid RFC 3339 date-time."""


def parse_datetime(text: str, *, require_zone: bool = True) -> datetime:
    """Parse an OCPP date-time strictly; a missing zone is an error unless ``require_zone`` is off."""
    match = _DATETIME.match(text)
    if match is None:
        raise OcppDateTimeError(f"{text!r} is not an RFC 3339 date-time")
    zone = match.group(8)
    if zone is None and require_zone:
        raise OcppDateTimeError(f"{text!r} has no time zone")
    fraction = (match.group(7) or "")[:7]  # Python keeps microseconds: truncate further digits
    normalised = f"{match.group(1)}-{match.group(2)}-{match.group(3)}T{match.group(4)}:{match.group(5)}"
    normalised += f":{match.group(6)}{fraction}"
    if zone is None or zone in ("Z", "z"):
        normalised += "+00:00"
    elif ":" not in zone:
        normalised += f"{zone[:3]}:{zone[3:]}"
    else:
        normalised += zone
    try:
        return datetime.fromisoformat(normalised).astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # OverflowError: the zone moves it out of years 1-9999
        raise OcppDateTimeError(f"{text!r} is not a valid date-time: {exc}") from None


def _datetime_checker(require_zone: bool) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        try:
            parse_datetime(value, require_zone=require_zone)
        except OcppDateTimeError:
            return False
        return True

    return check


class PayloadError(Exception):
    """A payload failed validation; ``code`` is the CALLERROR code for the protocol version."""

    def __init__(self, code: str, description: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.details = details or {}


def error_code(version: OcppVersion, kind: str) -> str:
    """The CALLERROR code of one kind of failure, spelled as each version's spec spells it."""
    spelled = _SPELLING_16 if version == "1.6" else _SPELLING_201
    return spelled.get(kind) or _COMMON[kind]


_SPELLING_16 = {"format": "FormationViolation", "occurrence": "OccurenceConstraintViolation"}  # sic, 1.6
_SPELLING_201 = {"format": "FormatViolation", "occurrence": "OccurrenceConstraintViolation"}
_COMMON = {
    "type": "TypeConstraintViolation",
    "property": "PropertyConstraintViolation",
    "protocol": "ProtocolError",
    "not_implemented": "NotImplemented",
    "not_supported": "NotSupported",
    "internal": "InternalError",
    "security": "SecurityError",
    "generic": "GenericError",
    "rpc_framework": "RpcFrameworkError",
    "message_type": "MessageTypeNotSupported",
}

# fastjsonschema rule -> kind of failure
_RULE_KINDS = {
    "type": "type",
    "maxLength": "type",
    "minLength": "type",
    "required": "occurrence",
    "minItems": "occurrence",
    "maxItems": "occurrence",
    "enum": "property",
    "const": "property",
    "minimum": "property",
    "maximum": "property",
    "exclusiveMinimum": "property",
    "exclusiveMaximum": "property",
    "multipleOf": "property",
    "pattern": "property",
    "additionalProperties": "format",
    "format": "format",
}


def _relax(schema: Any) -> Any:
    """The lenient form of a schema: extra fields and over-long strings are tolerated."""
    if isinstance(schema, dict):
        return {
            key: _relax(value)
            for key, value in schema.items()
            if key not in ("maxLength",) and not (key == "additionalProperties" and value is False)
        }
    if isinstance(schema, list):
        return [_relax(item) for item in schema]
    return schema


def schema_file(version: OcppVersion, action: str, response: bool) -> Path:
    if version == "1.6":
        name = f"{action}Response.json" if response else f"{action}.json"
    else:
        name = f"{action}Response.json" if response else f"{action}Request.json"
    return _SCHEMA_DIRS[version] / name


def _bound_integers(schema: Any, version: OcppVersion, bounds: tuple[int, int] | None = None) -> Any:
    """``schema`` with the integer ranges of the module docstring added to its integer fields."""
    if isinstance(schema, list):
        return [_bound_integers(item, version) for item in schema]
    if not isinstance(schema, dict):
        return schema
    bounded: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties" and isinstance(value, dict):
            named = _FIELD_BOUNDS_16 if version == "1.6" else _FIELD_BOUNDS_201
            if schema.get("javaType") == "EVSE":  # 2.0.1 EVSEType: its id is an EVSE id
                named = named | {"id": (0, INT32_MAX)}
            bounded[key] = {
                name: _bound_integers(sub, version, named.get(name)) for name, sub in value.items()
            }
        else:
            bounded[key] = _bound_integers(value, version)
    if schema.get("type") == "integer":
        low, high = bounds or ((INT32_MIN, INT32_MAX) if version == "2.0.1" else (INT64_MIN, INT64_MAX))
        bounded["minimum"] = max(schema.get("minimum", low), low)
        bounded["maximum"] = min(schema.get("maximum", high), high)
    return bounded


@lru_cache(maxsize=512)
def _validator(version: OcppVersion, action: str, response: bool, lenient: bool) -> Callable[[Any], Any]:
    path = schema_file(version, action, response)
    schema = json.loads(path.read_text())
    schema.pop("$id", None)
    schema = _bound_integers(schema, version)
    if version == "1.6" and action == "StartTransaction" and not response:
        schema["properties"]["connectorId"]["minimum"] = 1  # a transaction is on a connector, not 0
    if lenient:
        schema = _relax(schema)
    return fastjsonschema.compile(schema, formats={"date-time": _datetime_checker(not lenient)})


def known_action(version: OcppVersion, action: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9]{1,64}", action)) and schema_file(version, action, False).exists()


def validate(
    version: OcppVersion, action: str, payload: Any, *, response: bool = False, lenient: bool = False
) -> None:
    """Raise PayloadError with the version's CALLERROR code when ``payload`` breaks the schema or
    holds a value outside the ranges of the module docstring."""
    if not isinstance(payload, dict):
        raise PayloadError(error_code(version, "format"), "Payload must be a JSON object")
    check_values(version, payload)
    try:
        _validator(version, action, response, lenient)(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        kind = _RULE_KINDS.get(str(exc.rule), "format")
        field = str(exc.name).removeprefix("data").lstrip(".") or "(payload)"
        raise PayloadError(
            error_code(version, kind),
            exc.message.replace("data.", "").replace("data ", "payload "),
            {"field": field, "rule": str(exc.rule)},
        ) from None
    if action in _METER_ACTIONS and not response:
        check_sampled_values(version, payload)


def _out_of_range(version: OcppVersion, field: str, description: str) -> PayloadError:
    return PayloadError(error_code(version, "property"), f"{field}: {description}", {"field": field})


def _bad_form(version: OcppVersion, field: str, description: str) -> PayloadError:
    return PayloadError(error_code(version, "format"), f"{field}: {description}", {"field": field})


def _text_problem(text: str) -> str | None:
    """Why a string cannot be taken (a lone surrogate, U+0000), or None."""
    if text.isascii():  # O(1) in CPython: most strings skip the search
        return "contains U+0000, which satwatt does not store" if "\x00" in text else None
    bad = _BAD_TEXT.search(text)
    if bad is None:
        return None
    if bad.group() == "\x00":
        return "contains U+0000, which satwatt does not store"
    return f"contains a lone surrogate (U+{ord(bad.group()):04X}): not valid Unicode"


def check_values(version: OcppVersion, payload: Any) -> None:
    """Check every value of a decoded payload against the generic ranges of the module docstring:
    integers within 64 bits, finite numbers within ``INT64_MAX``, strings and keys valid Unicode
    without U+0000. Raises PayloadError naming the field."""
    if not _values_ok(payload):
        _raise_first_bad(version, payload)


def _values_ok(payload: Any) -> bool:
    """The fast pass of check_values: no paths, every string and key checked at once at the end."""
    texts: list[str] = []
    stack: list[Any] = [payload]
    while stack:
        node = stack.pop()
        kind = type(node)
        if kind is str:
            texts.append(node)
        elif kind is dict:
            texts.extend(node)
            stack.extend(node.values())
        elif kind is list:
            stack.extend(node)
        elif kind is int:
            if not INT64_MIN <= node <= INT64_MAX:
                return False
        elif kind is Decimal:
            if not node.is_finite() or abs(node) > _NUMBER_MAX:
                return False
        elif not (kind is bool or node is None):
            return False  # a float (NaN, Infinity) or anything JSON does not make
    return _text_problem("".join(texts)) is None


def _raise_first_bad(version: OcppVersion, payload: Any) -> None:
    """The slow pass of check_values, for a payload that failed the fast one: find and name the field."""
    stack: list[tuple[str, Any]] = [("", payload)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            problem = _text_problem(node)
            if problem is not None:
                raise _bad_form(version, path or "(payload)", problem)
        elif isinstance(node, dict):
            for key, value in node.items():
                problem = _text_problem(key) if isinstance(key, str) else None
                if problem is not None:
                    raise _bad_form(version, f"{path or '(payload)'} (a key)", problem)
                stack.append((f"{path}.{key}" if path else key, value))
        elif isinstance(node, list):
            stack.extend((f"{path}[{index}]", item) for index, item in enumerate(node))
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, int):
            if not INT64_MIN <= node <= INT64_MAX:
                raise _out_of_range(version, path, "integer beyond the signed 64-bit range")
        elif isinstance(node, Decimal):
            if not node.is_finite() or abs(node) > _NUMBER_MAX:
                raise _out_of_range(version, path, f"number beyond {INT64_MAX} in magnitude")
        else:  # float: only NaN and Infinity could be one (other numbers are read as int or Decimal)
            raise _bad_form(version, path or "(payload)", f"{node!r} is not a JSON number")
    raise AssertionError("_values_ok and _raise_first_bad disagree")  # pragma: no cover


def check_sampled_values(version: OcppVersion, payload: dict[str, Any]) -> None:
    """Check the sampled values of a schema-valid MeterValues, StopTransaction or TransactionEvent
    (see the module docstring: 1.6 values are decimal numbers, multipliers and magnitudes bounded)."""
    for list_name in ("meterValue", "transactionData"):
        for m, meter_value in enumerate(payload.get(list_name) or ()):
            for s, sampled in enumerate(meter_value.get("sampledValue") or ()):
                field = f"{list_name}[{m}].sampledValue[{s}]"
                if version == "1.6":
                    if sampled.get("format") == "SignedData":
                        continue
                    number = to_decimal(sampled["value"])
                    if number is None:
                        raise _bad_form(version, f"{field}.value", "a Raw value must be a decimal number")
                    unit, multiplier = sampled.get("unit"), 0
                else:
                    number = sampled["value"]
                    unit_of_measure = sampled.get("unitOfMeasure") or {}
                    unit, multiplier = unit_of_measure.get("unit"), unit_of_measure.get("multiplier", 0)
                    if not MULTIPLIER_MIN <= multiplier <= MULTIPLIER_MAX:
                        raise _out_of_range(
                            version,
                            f"{field}.unitOfMeasure.multiplier",
                            f"multiplier beyond {MULTIPLIER_MIN}..{MULTIPLIER_MAX}",
                        )
                measurand = sampled.get("measurand") or "Energy.Active.Import.Register"
                limit = POWER_MAX_W if measurand.startswith("Power.") else METER_MAX_WH
                if not within_meter_range(number, multiplier, unit, limit):
                    raise _out_of_range(version, f"{field}.value", f"beyond {limit} in its base unit")


def within_meter_range(
    number: Decimal | int, multiplier: int, unit: str | None, limit: int = METER_MAX_WH
) -> bool:
    """Whether ``number`` x 10^multiplier (x 1000 for a kilo unit) is at most ``limit`` in magnitude."""
    value = number if isinstance(number, Decimal) else Decimal(number)
    if value.is_zero():
        return True
    shift = multiplier + (3 if unit is not None and len(unit) > 1 and unit[0] in "kK" else 0)
    magnitude = value.adjusted() + shift  # decided on the exponent where it can be, without arithmetic
    digits = len(str(limit)) - 1  # limit < 10^(digits + 1)
    if magnitude != digits:
        return magnitude < digits
    return abs(value.scaleb(shift)) <= limit
