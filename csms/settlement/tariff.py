"""Tariffs: what energy costs, how it is sold in increments, and the time limits of the invoice stream.

Pure domain code: validation, time-of-use pricing and increment sizing. The REST layer maps a
``TariffError`` to a 422 whose location is ``TariffError.field``; the database stores ``to_dict()``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from csms.settlement.rounding import energy_wh_at_power, msat_for_energy

MINUTES_PER_DAY = 24 * 60
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class TariffError(ValueError):
    """A tariff value is invalid. ``field`` names it (dotted path, e.g. ``schedule.windows[1].start``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _require_int(value: object, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TariffError(name, "must be an integer")
    if value < minimum:
        raise TariffError(name, f"must be >= {minimum}" if minimum != 1 else "must be > 0")


def _parse_hhmm(value: object, name: str, *, allow_24: bool) -> int:
    """Minutes since local midnight for "HH:MM"; "24:00" is allowed only as a window's end."""
    if not isinstance(value, str):
        raise TariffError(name, 'must be a time "HH:MM"')
    if allow_24 and value == "24:00":
        return MINUTES_PER_DAY
    match = _HHMM.match(value)
    if match is None:
        raise TariffError(name, f'must be a time "HH:MM" between 00:00 and 23:59, got {value!r}')
    return int(match.group(1)) * 60 + int(match.group(2))


@dataclass(frozen=True)
class TouWindow:
    """A daily window of local time with its own price. ``end`` before ``start`` crosses midnight.

    ``start`` is inclusive, ``end`` exclusive; ``end`` may be "24:00". ``start == end`` is rejected
    (it would be ambiguous between an empty window and the whole day).
    """

    start: str
    end: str
    price_msat_per_kwh: int

    def validate(self, path: str) -> None:
        start = _parse_hhmm(self.start, f"{path}.start", allow_24=False)
        end = _parse_hhmm(self.end, f"{path}.end", allow_24=True)
        if start == end % MINUTES_PER_DAY:
            raise TariffError(f"{path}.end", "must differ from start")
        _require_int(self.price_msat_per_kwh, f"{path}.price_msat_per_kwh", minimum=1)

    def minute_ranges(self) -> tuple[tuple[int, int], ...]:
        """The window as half-open minute ranges within one day (two when it crosses midnight)."""
        start = _parse_hhmm(self.start, "start", allow_24=False)
        end = _parse_hhmm(self.end, "end", allow_24=True)
        if start < end:
            return ((start, end),)
        return tuple(r for r in ((start, MINUTES_PER_DAY), (0, end)) if r[0] < r[1])

    def contains(self, minute_of_day: int) -> bool:
        return any(lo <= minute_of_day < hi for lo, hi in self.minute_ranges())


@dataclass(frozen=True)
class TimeOfUseSchedule:
    """Daily price windows in the IANA time zone ``zone``; outside every window the base price applies."""

    zone: str
    windows: tuple[TouWindow, ...] = ()

    def validate(self, path: str) -> None:
        if not isinstance(self.zone, str) or not self.zone:
            raise TariffError(f"{path}.zone", "must be an IANA time zone name")
        try:
            ZoneInfo(self.zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise TariffError(f"{path}.zone", f"unknown time zone {self.zone!r}") from exc
        for index, window in enumerate(self.windows):
            window.validate(f"{path}.windows[{index}]")
        for later in range(len(self.windows)):
            for earlier in range(later):
                if _overlap(self.windows[earlier], self.windows[later]):
                    raise TariffError(f"{path}.windows[{later}]", f"overlaps windows[{earlier}]")

    def window_at(self, when: datetime) -> TouWindow | None:
        local = when.astimezone(ZoneInfo(self.zone))
        minute = local.hour * 60 + local.minute
        return next((w for w in self.windows if w.contains(minute)), None)


def _overlap(a: TouWindow, b: TouWindow) -> bool:
    return any(
        lo_a < hi_b and lo_b < hi_a for lo_a, hi_a in a.minute_ranges() for lo_b, hi_b in b.minute_ranges()
    )


@dataclass(frozen=True)
class Tariff:
    """What a session pays and how its invoice stream behaves.

    Defaults follow Distributed Charge (100 sat/kWh, 600 s invoice expiry) resized for OCPP chargers,
    which report meter values every 10-60 s rather than several times a second, and for mainnet
    payments that take seconds:

    * ``price_msat_per_kwh = 100_000``: 100 sat/kWh, Distributed Charge's rate.
    * ``session_fee_msat = 0``: no fixed fee unless the operator sets one.
    * ``increment_wh = 100`` (10 sat at the default price): Distributed Charge's 30 Wh is sized for a
      check several times a second; an 11 kW AC charger draws 100 Wh in ~33 s, i.e. about one invoice
      per meter report, and a 1-sat routing base fee stays a small share of each invoice.
    * ``min_invoice_interval_s = 60``: at most about one invoice a minute whatever the power (Satimoto's
      rule), so a 150 kW charger buys 2.5 kWh at a time and a fleet stays well inside a node's 25-90
      payments per second.
    * ``allowance_wh = 50``: energy a session may draw beyond what is paid (e.g. before the first payment
      of a charger-side start, or while a payment is in flight): 5 sat at the default price, so at most
      that is lost to a payer who never pays.
    * ``grace_s = 30``: how long an invoice may stay unpaid after the credit ran out; mainnet payments
      take ~8 s median and the rule must tolerate 10 s or more.
    * ``stop_after_s = 300``: a suspended session gets five minutes to pay before the transaction is
      stopped and the connector freed.
    * ``invoice_expiry_s = 600``: Distributed Charge's expiry; an expired unpaid invoice is replaced.
    * ``prepay_min_msat = 1_000_000``, ``prepay_max_msat = 100_000_000``: what a driver may prepay
      from a phone wallet (LNURL-pay, 1,000 to 100,000 sat); the unused part is withdrawn afterwards.
    * ``deposit_msat = 0``: off. Otherwise walk-up sessions are paid Distributed Charge's manual way: a
      hold invoice for this deposit (power on once its HTLC is held, at most the energy it would buy),
      a final invoice for the energy at the end, the deposit canceled once that is paid, else settled
      before its HTLC's CLTV deadline.
    """

    name: str = "default"
    price_msat_per_kwh: int = 100_000
    session_fee_msat: int = 0
    increment_wh: int = 100
    min_invoice_interval_s: int = 60
    allowance_wh: int = 50
    grace_s: int = 30
    stop_after_s: int = 300
    invoice_expiry_s: int = 600
    prepay_min_msat: int = 1_000_000
    prepay_max_msat: int = 100_000_000
    deposit_msat: int = 0
    schedule: TimeOfUseSchedule | None = field(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise TariffError("name", "must be a non-empty string")
        if len(self.name) > 100:
            raise TariffError("name", "must be at most 100 characters")
        _require_int(self.price_msat_per_kwh, "price_msat_per_kwh", minimum=1)
        _require_int(self.session_fee_msat, "session_fee_msat", minimum=0)
        _require_int(self.increment_wh, "increment_wh", minimum=1)
        _require_int(self.min_invoice_interval_s, "min_invoice_interval_s", minimum=0)
        _require_int(self.allowance_wh, "allowance_wh", minimum=0)
        _require_int(self.grace_s, "grace_s", minimum=0)
        _require_int(self.stop_after_s, "stop_after_s", minimum=0)
        _require_int(self.invoice_expiry_s, "invoice_expiry_s", minimum=1)
        _require_int(self.prepay_min_msat, "prepay_min_msat", minimum=1)
        _require_int(self.prepay_max_msat, "prepay_max_msat", minimum=1)
        _require_int(self.deposit_msat, "deposit_msat", minimum=0)
        if self.schedule is not None:
            if not isinstance(self.schedule, TimeOfUseSchedule):
                raise TariffError("schedule", "must be a time-of-use schedule")
            self.schedule.validate("schedule")
        # Every increment invoice must be worth at least 1 msat, or it could not be paid over Lightning.
        if msat_for_energy(self.increment_wh, self.price_msat_per_kwh) < 1:
            raise TariffError("price_msat_per_kwh", "increment_wh at this price must cost at least 1 msat")
        for index, window in enumerate(self.schedule.windows if self.schedule else ()):
            if msat_for_energy(self.increment_wh, window.price_msat_per_kwh) < 1:
                raise TariffError(
                    f"schedule.windows[{index}].price_msat_per_kwh",
                    "increment_wh at this price must cost at least 1 msat",
                )

    # -- (de)serialisation, for the REST layer and the database -------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "schedule"}
        data["schedule"] = (
            None
            if self.schedule is None
            else {
                "zone": self.schedule.zone,
                "windows": [
                    {"start": w.start, "end": w.end, "price_msat_per_kwh": w.price_msat_per_kwh}
                    for w in self.schedule.windows
                ],
            }
        )
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tariff:
        """Build and validate a tariff; missing fields take the defaults, unknown fields are rejected."""
        if not isinstance(data, Mapping):
            raise TariffError("tariff", "must be an object")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise TariffError(str(key), "unknown field")
        values = {k: v for k, v in data.items() if k != "schedule"}
        return cls(**values, schedule=_schedule_from(data.get("schedule")))

    def with_changes(self, changes: Mapping[str, Any]) -> Tariff:
        """A validated copy with ``changes`` applied (PATCH semantics; ``schedule`` is replaced whole)."""
        merged = self.to_dict()
        merged.update(changes)
        return Tariff.from_dict(merged)


def _schedule_from(data: object) -> TimeOfUseSchedule | None:
    if data is None:
        return None
    if isinstance(data, TimeOfUseSchedule):
        return data
    if not isinstance(data, Mapping):
        raise TariffError("schedule", "must be an object with zone and windows")
    for key in data:
        if key not in ("zone", "windows"):
            raise TariffError(f"schedule.{key}", "unknown field")
    raw_windows = data.get("windows", [])
    if not isinstance(raw_windows, list | tuple):
        raise TariffError("schedule.windows", "must be a list")
    windows: list[TouWindow] = []
    for index, raw in enumerate(raw_windows):
        if isinstance(raw, TouWindow):
            windows.append(raw)
            continue
        if not isinstance(raw, Mapping):
            raise TariffError(f"schedule.windows[{index}]", "must be an object")
        for key in ("start", "end", "price_msat_per_kwh"):
            if key not in raw:
                raise TariffError(f"schedule.windows[{index}].{key}", "is required")
        for key in raw:
            if key not in ("start", "end", "price_msat_per_kwh"):
                raise TariffError(f"schedule.windows[{index}].{key}", "unknown field")
        windows.append(TouWindow(raw["start"], raw["end"], raw["price_msat_per_kwh"]))
    if "zone" not in data:
        raise TariffError("schedule.zone", "is required")
    return TimeOfUseSchedule(zone=data["zone"], windows=tuple(windows))


DEFAULT_TARIFF = Tariff()


def require_aware(when: datetime) -> datetime:
    """``when`` itself; raises ``ValueError`` for a naive datetime (settlement never guesses a zone)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("settlement times must be timezone-aware datetimes")
    return when


def price_at(tariff: Tariff, when: datetime) -> int:
    """The price (msat/kWh) in effect at ``when`` (timezone-aware): a time-of-use window's or the base."""
    require_aware(when)
    if tariff.schedule is not None:
        window = tariff.schedule.window_at(when)
        if window is not None:
            return window.price_msat_per_kwh
    return tariff.price_msat_per_kwh


def prepay_bounds(tariff: Tariff, when: datetime) -> tuple[int, int]:
    """The least and most a driver may prepay (msat) at ``when``: the tariff's ``prepay_min_msat`` and
    ``prepay_max_msat``, raised so that a prepayment always covers the session fee and one Wh at the
    price of the moment, and the most is never below the least."""
    least = max(
        tariff.prepay_min_msat, tariff.session_fee_msat + max(1, msat_for_energy(1, price_at(tariff, when)))
    )
    return least, max(tariff.prepay_max_msat, least)


def prepay_refusal(tariff: Tariff, amount_msat: int, when: datetime) -> str | None:
    """Why ``amount_msat`` cannot be a prepayment or top-up under ``tariff`` at ``when``, or None."""
    least, most = prepay_bounds(tariff, when)
    if not least <= amount_msat <= most:
        return f"amount must be between {least} and {most} msat"
    return None


def deposit_amount(tariff: Tariff, when: datetime) -> int:
    """A deposit session's hold invoice (msat): the tariff's ``deposit_msat``, raised to cover the session
    fee and one Wh at the price of the moment."""
    return max(
        tariff.deposit_msat, tariff.session_fee_msat + max(1, msat_for_energy(1, price_at(tariff, when)))
    )


def increment_wh_for(tariff: Tariff, power_w: int) -> int:
    """The Wh one invoice buys: ``max(increment_wh, ceil(power_w * min_invoice_interval_s / 3600))``.

    At 150 kW and 60 s that is 2500 Wh, so a fast charger gets about one invoice a minute instead of one
    every 2.4 s. Negative or unknown power counts as 0.
    """
    return max(tariff.increment_wh, energy_wh_at_power(power_w, tariff.min_invoice_interval_s))
