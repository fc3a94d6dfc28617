"""What a meter reading may be: the rules that keep energy that cannot be true from being billed.

Pure, version-free and I/O-free. A *reading* is one register value (integer Wh, a 1.6 meterStart /
meterStop or the Energy.Active.Import.Register of a sampled meter value), possibly with a power
(integer W), stamped with the charger's ``at`` and satwatt's own ``received_at``. A reading is
*plausible* when all of these hold, checked in this order (the first that fails is its reason):

1. ``from_the_future``: ``at`` is at most ``clock_tolerance_s`` after ``received_at``. A charger whose
   clock is behind is not an anomaly (offline replays arrive late by design); one from the year 9999 is.
2. ``register_out_of_range``: the register lies within ``0..meter_max_wh``. Values are finite by
   construction: validation (:mod:`csms.ocpp.schemas`) refuses NaN, Infinity and numbers beyond
   10^18 before anything is stored, and :func:`csms.charging.metering.normalise` floors to integers.
3. ``power_out_of_range``: a reported power lies within ``-max_power_w..max_power_w``.
4. ``register_decreased``: within a transaction the plausible readings, ordered by ``at`` (then by
   ``received_at``), never decrease: a reading lies between its plausible neighbours in time. A
   reading that arrives late (an offline replay, out of order) is placed by its timestamp, not by
   when it arrived. *Meter resets are not recognised*: neither OCPP 1.6 nor 2.0.1 has a message that
   reports a register reset within a transaction, and a reading below its predecessor cannot be told
   apart from a wrong one; readings after an unreported reset are flagged, so the session keeps the
   energy metered up to the reset and never bills more than flowed (a charger whose meter is replaced
   ends the transaction; the next one has its own start).
5. ``faster_than_max_power``: between a reading and each plausible neighbour, and between it and the
   transaction's first and last plausible readings, the register moves by at most
   ``max_power_w x elapsed + margin_wh``. ``elapsed`` is the larger of the two clocks' differences:
   the charger's timestamps (right for offline replays, which arrive together) and satwatt's receipt
   times (right for a charger whose clock is stuck: several readings with one timestamp still count
   when the time between their arrivals allows them). The check against the first reading bounds the
   whole transaction, so ``margin_wh`` (meter resolution: a register in whole kWh moves 1000 Wh at
   once) cannot be gained once per reading.

An implausible reading is kept as received by the caller, flagged with its reason, and never priced:
it does not enter the history, so later readings are judged against plausible ones only. A reading
without a register (power or state of charge only) is judged by rules 1 and 3.

The history keeps the transaction's first plausible reading and the latest :data:`KEPT` ones, so
memory stays bounded however long a transaction lasts; a reading replayed from before the kept window
is judged against the first reading and the earliest kept one (a wider, so more lenient, interval).
A history resumed from the log (:meth:`ReadingHistory.resumed`) knows only the start and the highest
register, without receipt times.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime, timedelta

FROM_THE_FUTURE = "from_the_future"
REGISTER_OUT_OF_RANGE = "register_out_of_range"
POWER_OUT_OF_RANGE = "power_out_of_range"
REGISTER_DECREASED = "register_decreased"
FASTER_THAN_MAX_POWER = "faster_than_max_power"
REASONS = (
    FROM_THE_FUTURE,
    REGISTER_OUT_OF_RANGE,
    POWER_OUT_OF_RANGE,
    REGISTER_DECREASED,
    FASTER_THAN_MAX_POWER,
)

KEPT = 64
_MICROSECONDS_PER_HOUR = 3_600_000_000
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Limits:
    """What a connector and its meter can do (see the settings ``CSMS_MAX_CONNECTOR_POWER_W`` ...)."""

    max_power_w: int = 400_000
    margin_wh: int = 1_000
    meter_max_wh: int = 10**11
    clock_tolerance_s: int = 300

    def allowance_wh(self, elapsed: timedelta) -> int:
        """The most energy a connector can deliver in ``elapsed``, plus the margin (integer Wh)."""
        microseconds = max(0, elapsed // _MICROSECOND)
        return self.max_power_w * microseconds // _MICROSECONDS_PER_HOUR + self.margin_wh


@dataclass(frozen=True, slots=True)
class Point:
    """A plausible register reading: the charger's timestamp, satwatt's receipt time (None when
    resumed from the log) and the register."""

    at: datetime
    received_at: datetime | None
    register_wh: int

    @property
    def key(self) -> tuple[datetime, int, datetime]:
        return (self.at, 0 if self.received_at is None else 1, self.received_at or self.at)


def elapsed(earlier: Point, later: Point) -> timedelta:
    """The time between two readings: the larger of the charger's and satwatt's clock differences."""
    charger = later.at - earlier.at
    if earlier.received_at is not None and later.received_at is not None:
        return max(charger, later.received_at - earlier.received_at, timedelta(0))
    return max(charger, timedelta(0))


def check_value(
    at: datetime, received_at: datetime, register_wh: int | None, power_w: int | None, limits: Limits
) -> str | None:
    """Rules 1-3, which need no history: the reason a reading is implausible, or None."""
    if at - received_at > timedelta(seconds=limits.clock_tolerance_s):
        return FROM_THE_FUTURE
    if register_wh is not None and not 0 <= register_wh <= limits.meter_max_wh:
        return REGISTER_OUT_OF_RANGE
    if power_w is not None and abs(power_w) > limits.max_power_w:
        return POWER_OUT_OF_RANGE
    return None


class ReadingHistory:
    """The plausible register readings of one transaction, to judge the next one against."""

    __slots__ = ("_keys", "_points")

    def __init__(self, points: list[Point] | None = None) -> None:
        self._points: list[Point] = sorted(points or (), key=lambda p: p.key)
        self._keys = [p.key for p in self._points]

    @classmethod
    def resumed(
        cls, start_wh: int | None, start_at: datetime | None, top_wh: int | None, top_at: datetime | None
    ) -> ReadingHistory:
        """A history from what the log keeps of a session: its start and highest register."""
        points: list[Point] = []
        if start_wh is not None and start_at is not None:
            points.append(Point(start_at, None, start_wh))
            if top_wh is not None and top_wh != start_wh:
                points.append(Point(max(top_at or start_at, start_at), None, top_wh))
        return cls(points)

    def __len__(self) -> int:
        return len(self._points)

    @property
    def points(self) -> list[Point]:
        return list(self._points)

    def judge(self, point: Point, limits: Limits) -> str | None:
        """Rules 4 and 5 for a reading with a register: the reason it is implausible, or None."""
        if not self._points:
            return None
        index = bisect.bisect_right(self._keys, point.key)
        before = self._points[index - 1] if index > 0 else None
        after = self._points[index] if index < len(self._points) else None
        if (before is not None and point.register_wh < before.register_wh) or (
            after is not None and point.register_wh > after.register_wh
        ):
            return REGISTER_DECREASED
        first, last = self._points[0], self._points[-1]
        for earlier in (before, first if index > 0 else None):
            if earlier is not None and point.register_wh - earlier.register_wh > limits.allowance_wh(
                elapsed(earlier, point)
            ):
                return FASTER_THAN_MAX_POWER
        for later in (after, last if after is not None else None):
            if later is not None and later.register_wh - point.register_wh > limits.allowance_wh(
                elapsed(point, later)
            ):
                return FASTER_THAN_MAX_POWER
        return None

    def add(self, point: Point) -> None:
        """Keep a plausible reading (the first one and the latest :data:`KEPT` stay)."""
        index = bisect.bisect_right(self._keys, point.key)
        self._points.insert(index, point)
        self._keys.insert(index, point.key)
        if len(self._points) > KEPT + 1:
            del self._points[1]
            del self._keys[1]

    def take(
        self,
        at: datetime,
        received_at: datetime,
        register_wh: int | None,
        power_w: int | None,
        limits: Limits,
    ) -> str | None:
        """Judge one reading by all the rules and keep it when it is plausible; its reason if not."""
        reason = check_value(at, received_at, register_wh, power_w, limits)
        if reason is not None or register_wh is None:
            return reason
        point = Point(at, received_at, register_wh)
        reason = self.judge(point, limits)
        if reason is None:
            self.add(point)
        return reason
