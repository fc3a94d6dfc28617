"""The hardware a charge point drives, as three small interfaces, and their simulated implementations.

The OCPP charge point (``chargepoint.py``) only talks to a connector through these interfaces:

* :class:`Meter` - the energy register (Wh), instantaneous power (W) and, when the EV reports it, SoC;
* :class:`Contactor` - the relay that switches power to the cable;
* :class:`EVSession` - the vehicle side (control pilot / DC communication): is an EV plugged in, has it
  stopped drawing, and the power limit signalled to it (PWM duty cycle on AC, current request on DC);
  it may also lock / unlock the cable.

A firmware shim on a real board implements them with a Modbus meter, a GPIO relay and the pilot
controller, and calls :meth:`ConnectorHardware.notify` (or the charge point's ``hardware_changed``)
when its own poller sees the pilot state change.  Here :class:`SimulatedConnector` implements all three
on top of :class:`~chargepoint_sim.physics.ConnectorPhysics`, advancing the physics lazily to the clock
each time it is read or changed, so an idle fleet costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from chargepoint_sim.clock import Clock
from chargepoint_sim.physics import ChargerSpec, ConnectorPhysics, EVModel


@runtime_checkable
class Meter(Protocol):
    def energy_wh(self) -> float:
        """Lifetime imported energy in Wh (monotonic)."""
        ...

    def power_w(self) -> float:
        """Active import power in W right now."""
        ...

    def soc_percent(self) -> float | None:
        """EV state of charge in %, if known (DC / ISO 15118), else None."""
        ...


@runtime_checkable
class Contactor(Protocol):
    @property
    def closed(self) -> bool: ...

    def close(self) -> None: ...

    def open(self) -> None: ...


@runtime_checkable
class EVSession(Protocol):
    def plugged(self) -> bool:
        """A vehicle is connected (pilot state B/C)."""
        ...

    def drawing_allowed(self) -> bool:
        """The EV wants power (False when full / EV-side suspended)."""
        ...

    def set_power_limit_w(self, limit_w: float | None) -> None:
        """Signal a limit to the EV; None = the connector's rating; 0 = draw nothing."""
        ...

    def unlock(self) -> bool:
        """Release the cable lock; True when it is released."""
        ...


Listener = Callable[[], None]


@dataclass
class ConnectorHardware:
    """The drivers of one connector plus a change notification (plug-in, unplug, EV full)."""

    meter: Meter
    contactor: Contactor
    ev: EVSession
    charger: ChargerSpec
    listeners: list[Listener] = field(default_factory=list)

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def notify(self) -> None:
        for cb in list(self.listeners):
            cb()


class SimulatedConnector:
    """Physics-backed meter, contactor and EV session for one connector."""

    def __init__(self, charger: ChargerSpec, clock: Clock, energy_wh: float = 0.0) -> None:
        self.clock = clock
        self.physics = ConnectorPhysics(charger=charger, energy_wh=energy_wh)
        self._t = clock.monotonic()
        self.meter = _SimMeter(self)
        self.contactor = _SimContactor(self)
        self.ev = _SimEV(self)
        self.hardware = ConnectorHardware(self.meter, self.contactor, self.ev, charger)

    def advance(self) -> None:
        now = self.clock.monotonic()
        self.physics.advance(now - self._t)
        self._t = now

    # driving the simulated world
    def plug_in(self, ev: EVModel, soc: float = 0.3, target_soc: float = 1.0) -> None:
        self.advance()
        self.physics.plug(ev, soc, target_soc)
        self.hardware.notify()

    def unplug(self) -> None:
        self.advance()
        self.physics.unplug()
        self.hardware.notify()

    def reset_register(self) -> None:
        """Quirk: some meters restart their register at boot."""
        self.advance()
        self.physics.energy_wh = 0.0


class _SimMeter:
    def __init__(self, sim: SimulatedConnector) -> None:
        self._sim = sim

    def energy_wh(self) -> float:
        self._sim.advance()
        return self._sim.physics.energy_wh

    def power_w(self) -> float:
        self._sim.advance()
        return self._sim.physics.power_w()

    def soc_percent(self) -> float | None:
        self._sim.advance()
        return self._sim.physics.soc_percent


class _SimContactor:
    def __init__(self, sim: SimulatedConnector) -> None:
        self._sim = sim

    @property
    def closed(self) -> bool:
        return self._sim.physics.relay_closed

    def close(self) -> None:
        self._sim.advance()
        self._sim.physics.relay_closed = True

    def open(self) -> None:
        self._sim.advance()
        self._sim.physics.relay_closed = False


class _SimEV:
    def __init__(self, sim: SimulatedConnector) -> None:
        self._sim = sim
        self.locked = False

    def plugged(self) -> bool:
        return self._sim.physics.ev is not None

    def drawing_allowed(self) -> bool:
        self._sim.advance()
        return self.plugged() and not self._sim.physics.ev_full()

    def set_power_limit_w(self, limit_w: float | None) -> None:
        self._sim.advance()
        self._sim.physics.limit_w = limit_w

    def unlock(self) -> bool:
        self.locked = False
        return True
