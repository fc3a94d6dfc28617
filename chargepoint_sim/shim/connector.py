"""One connector of the board: its meter, relay, optional EVSE current and car input, behind the charge
point's hardware interfaces (:class:`~chargepoint_sim.hardware.Contactor`, ``EVSession``, ``Meter``).

The charge point says what it wants synchronously (``contactor.close()``, ``ev.set_power_limit_w(0)``);
the relay's *target* combines that with the limit and the safety holds, and :meth:`ShimConnector.apply`
(awaited by the runner whenever something changes, and on every poll) brings the hardware there and
reads it back:

* closed only while the charge point wants power, no safety hold is set (offline past the grace period,
  shutting down) and - without an EVSE - the limit is above 0;
* with an EVSE, the limit goes to its current register instead (0 A pauses the car) and the relay
  follows only the session;
* opening: 0 A first, then the relay; closing: the relay first, then the current.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from chargepoint_sim.hardware import ConnectorHardware
from chargepoint_sim.physics import ChargerSpec
from chargepoint_sim.shim.config import ConnectorConfig
from chargepoint_sim.shim.evse import EvInput, EvseError, ModbusCurrentEvse
from chargepoint_sim.shim.meters import PolledMeter
from chargepoint_sim.shim.relays import RelayDriver, RelayError


class ShimConnector:
    def __init__(
        self,
        cfg: ConnectorConfig,
        meter: PolledMeter,
        relay: RelayDriver,
        evse: ModbusCurrentEvse | None = None,
        ev_input: EvInput | None = None,
    ) -> None:
        self.id = cfg.id
        self.cfg = cfg
        self.meter = meter
        self.relay = relay
        self.evse = evse
        self.ev_input = ev_input
        self.wants_power = False
        self.limit_w: float | None = None
        self.holds: set[str] = set()  # "offline" (grace period over), "shutdown"
        self.applied_closed: bool | None = None  # None: not written yet
        self.applied_amps: float | None = None
        self.read_back: bool | None = None
        self.ev_present = False  # from the [ev] input
        # without an [ev] input: "a car is there" while the charge point holds an authorisation or a
        # transaction for this connector (set by the runner), so a remote start starts at once
        self.assumed_present: Callable[[], bool] = lambda: False
        self.changed = asyncio.Event()
        max_w = (cfg.evse.max_amps * cfg.phases * cfg.voltage) if cfg.evse else 22_000.0
        spec = ChargerSpec(max_power_w=max_w, kind="AC", phases=cfg.phases, voltage=cfg.voltage)
        self.hardware = ConnectorHardware(meter, _Contactor(self), _EV(self), spec)

    # ------------------------------------------------------------------ what the hardware should do
    def target_closed(self) -> bool:
        if self.holds or not self.wants_power:
            return False
        return self.evse is not None or self.limit_w is None or self.limit_w > 0

    def target_amps(self) -> float:
        assert self.evse is not None
        return self.evse.amps_for(self.limit_w) if self.target_closed() else 0.0

    def plugged(self) -> bool:
        return self.ev_present if self.ev_input is not None else self.assumed_present()

    def wake(self) -> None:
        self.changed.set()

    async def apply(self) -> None:
        """Bring relay and EVSE to their targets and read them back; RelayError / EvseError on failure
        (a relay that reads back otherwise is a failure too)."""
        target = self.target_closed()
        if self.evse is not None and not target:
            await self._set_amps(0.0)
        if target != self.applied_closed:
            await self.relay.write(target)
            self.applied_closed = target
        actual = await self.relay.read()
        self.read_back = actual
        if actual is not None and actual != target:
            word = {True: "closed", False: "open"}
            raise RelayError(f"relay reads back {word[actual]}, should be {word[target]}")
        if self.evse is not None and target:
            await self._set_amps(self.target_amps())

    async def _set_amps(self, amps: float) -> None:
        assert self.evse is not None
        if amps != self.applied_amps:
            await self.evse.write(amps)
            self.applied_amps = amps
        value = await self.evse.read()
        if value != self.evse.register_value(amps):
            self.applied_amps = None
            raise EvseError(
                f"EVSE current register reads {value}, should be {self.evse.register_value(amps)}"
            )

    async def open_now(self, hold: str = "shutdown") -> None:
        """Open the relay (and set 0 A) now, and keep it open while ``hold`` is set."""
        self.holds.add(hold)
        self.applied_closed = None  # write it whatever we think it is
        self.applied_amps = None
        await self.apply()

    async def poll_ev(self) -> bool:
        """Read the car input; True when it changed."""
        if self.ev_input is None:
            return False
        present = await self.ev_input.read()
        changed = present != self.ev_present
        self.ev_present = present
        return changed


class _Contactor:
    def __init__(self, sc: ShimConnector) -> None:
        self._sc = sc

    @property
    def closed(self) -> bool:
        return self._sc.target_closed()

    def close(self) -> None:
        self._sc.wants_power = True
        self._sc.wake()

    def open(self) -> None:
        self._sc.wants_power = False
        self._sc.wake()


class _EV:
    def __init__(self, sc: ShimConnector) -> None:
        self._sc = sc

    def plugged(self) -> bool:
        return self._sc.plugged()

    def drawing_allowed(self) -> bool:
        return self._sc.plugged()

    def set_power_limit_w(self, limit_w: float | None) -> None:
        self._sc.limit_w = limit_w
        self._sc.wake()

    def unlock(self) -> bool:
        return False  # the board has no cable lock actuator
