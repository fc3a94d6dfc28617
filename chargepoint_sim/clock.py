"""The charger's clock: real or accelerated, with optional skew.

All charger timers (heartbeat, meter interval, boot retry) and the physics run on *simulated seconds*.
With ``scale=1`` a simulated second is a real second; with ``scale=60`` a minute of charging passes in a
real second, and the timestamps a charger reports advance at the same rate, so energy, power and
timestamps stay mutually consistent.  Network timeouts and reconnect back-off are real seconds.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self, scale: float = 1.0, skew_s: float = 0.0) -> None:
        if scale <= 0:
            raise ValueError("clock scale must be > 0")
        self.scale = scale
        self.skew_s = skew_s
        self._mono0 = time.monotonic()
        self._epoch0 = time.time()
        self.unsynced_until_boot = False  # quirk: reports 1970 until the CSMS time is adopted
        self._synced = True

    def monotonic(self) -> float:
        """Simulated seconds since the clock was created."""
        return (time.monotonic() - self._mono0) * self.scale

    def epoch(self) -> float:
        return self._epoch0 + self.monotonic() + self.skew_s

    def now(self) -> datetime:
        if self.unsynced_until_boot and not self._synced:
            return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=self.monotonic())
        return datetime.fromtimestamp(self.epoch(), tz=UTC)

    def mark_unsynced(self) -> None:
        self._synced = False

    def sync(self) -> None:
        self._synced = True

    def real_seconds(self, sim_seconds: float) -> float:
        return sim_seconds / self.scale

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(max(0.0, sim_seconds) / self.scale)


def iso(dt: datetime, naive: bool = False) -> str:
    """OCPP date-time: ISO 8601 UTC with milliseconds and 'Z' (or without a zone for the quirk)."""
    s = dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}"
    return s if naive else s + "Z"


def parse_iso(s: str) -> datetime:
    dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
