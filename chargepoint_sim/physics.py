"""EV and charger physics: pure, deterministic, no I/O.

The model answers one question: given a charger, an EV at some state of charge and a power limit, how much
power flows, and how much energy has the meter counted after ``dt`` seconds?  Everything is a plain
function of its inputs so it can be unit-tested and property-tested without sockets or clocks.

Units: power in W, energy in Wh (kept as a float internally, exposed as an integer register on the wire),
capacity in kWh, state of charge as a fraction 0..1 (``soc_percent`` for the wire).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

ChargerKind = Literal["AC", "DC"]

NOMINAL_AC_VOLTAGE = 230.0
NOMINAL_DC_VOLTAGE = 400.0
DC_TAPER_START_SOC = 0.80
DC_TAPER_END_FRACTION = 0.08  # a DC session still draws ~8 % of peak just before 100 %
AC_TAPER_START_SOC = 0.95
MAX_STEP_S = 5.0  # integration sub-step: the curve is re-evaluated at least this often


@dataclass(frozen=True)
class EVModel:
    """A vehicle type: battery and the power its onboard charger / battery can accept."""

    name: str
    capacity_kwh: float
    max_ac_kw: float  # onboard charger limit, 3.7..22 kW
    max_dc_kw: float  # DC peak, up to 150 kW (0 = no DC inlet)
    ac_phases: int = 3

    def __post_init__(self) -> None:
        if self.capacity_kwh <= 0:
            raise ValueError("capacity_kwh must be > 0")
        if not 0 < self.max_ac_kw <= 22:
            raise ValueError("max_ac_kw must be in (0, 22]")
        if not 0 <= self.max_dc_kw <= 350:
            raise ValueError("max_dc_kw must be in [0, 350]")
        if self.ac_phases not in (1, 3):
            raise ValueError("ac_phases must be 1 or 3")

    def accept_power_w(self, soc: float, kind: ChargerKind) -> float:
        """Power the EV accepts at ``soc`` (its charging curve), before charger and profile limits."""
        if soc >= 1.0:
            return 0.0
        soc = max(0.0, soc)
        if kind == "DC":
            peak = self.max_dc_kw * 1000.0
            if soc <= DC_TAPER_START_SOC:
                return peak
            # linear taper from peak at 80 % down to DC_TAPER_END_FRACTION * peak at 100 %
            frac = (soc - DC_TAPER_START_SOC) / (1.0 - DC_TAPER_START_SOC)
            return peak * (1.0 - frac * (1.0 - DC_TAPER_END_FRACTION))
        peak = self.max_ac_kw * 1000.0
        if soc <= AC_TAPER_START_SOC:
            return peak
        frac = (soc - AC_TAPER_START_SOC) / (1.0 - AC_TAPER_START_SOC)
        return peak * max(0.1, 1.0 - frac)


EV_MODELS: dict[str, EVModel] = {
    "compact": EVModel("compact", capacity_kwh=40.0, max_ac_kw=7.4, max_dc_kw=50.0, ac_phases=1),
    "sedan": EVModel("sedan", capacity_kwh=60.0, max_ac_kw=11.0, max_dc_kw=150.0),
    "suv": EVModel("suv", capacity_kwh=95.0, max_ac_kw=22.0, max_dc_kw=150.0),
    "plugin-hybrid": EVModel("plugin-hybrid", capacity_kwh=12.0, max_ac_kw=3.7, max_dc_kw=0.0, ac_phases=1),
}


@dataclass(frozen=True)
class ChargerSpec:
    """The electrical side of one connector: AC 3.7-22 kW or DC up to 150 kW."""

    max_power_w: float = 22_000.0
    kind: ChargerKind = "AC"
    phases: int = 3
    voltage: float = NOMINAL_AC_VOLTAGE

    def __post_init__(self) -> None:
        if self.max_power_w <= 0:
            raise ValueError("max_power_w must be > 0")
        if self.kind == "AC" and self.max_power_w > 22_000:
            raise ValueError("an AC connector delivers at most 22 kW")
        if self.kind == "DC" and self.max_power_w > 350_000:
            raise ValueError("a DC connector delivers at most 350 kW")

    @classmethod
    def ac(cls, kw: float = 22.0, phases: int = 3) -> ChargerSpec:
        return cls(max_power_w=kw * 1000.0, kind="AC", phases=phases, voltage=NOMINAL_AC_VOLTAGE)

    @classmethod
    def dc(cls, kw: float = 150.0) -> ChargerSpec:
        return cls(max_power_w=kw * 1000.0, kind="DC", phases=1, voltage=NOMINAL_DC_VOLTAGE)

    def amps_to_watts(self, amps: float, phases: int | None = None) -> float:
        """Convert a charging-profile limit in A to W (per phase current x phases x phase voltage)."""
        if self.kind == "DC":
            return amps * self.voltage
        return amps * self.voltage * (phases if phases else self.phases)

    def watts_to_amps(self, watts: float) -> float:
        if self.kind == "DC":
            return watts / self.voltage
        return watts / (self.voltage * self.phases)


def delivered_power_w(
    charger: ChargerSpec, ev: EVModel | None, soc: float, limit_w: float | None, relay_closed: bool
) -> float:
    """Instantaneous power: the minimum of charger rating, EV curve and the current limit."""
    if ev is None or not relay_closed:
        return 0.0
    accept = ev.accept_power_w(soc, charger.kind)
    if charger.kind == "AC":
        # a 1-phase car on a 3-phase charger draws on one phase only
        phases = min(charger.phases, ev.ac_phases)
        accept = min(accept, charger.max_power_w * phases / charger.phases)
    p = min(accept, charger.max_power_w)
    if limit_w is not None:
        p = min(p, max(0.0, limit_w))
    return max(0.0, p)


@dataclass
class ConnectorPhysics:
    """State of one connector's power path: EV, SoC, relay, limit and the energy register.

    ``advance(dt)`` integrates power over ``dt`` seconds in sub-steps (the curve depends on SoC), adding
    to the energy register and the EV's state of charge.  The register only ever grows.
    """

    charger: ChargerSpec = field(default_factory=ChargerSpec)
    ev: EVModel | None = None
    soc: float = 0.5
    target_soc: float = 1.0
    relay_closed: bool = False
    limit_w: float | None = None
    energy_wh: float = 0.0  # lifetime register, precise
    efficiency: float = 1.0  # share of metered energy that reaches the battery

    def power_w(self) -> float:
        soc = self.soc if self.soc < self.target_soc else 1.0
        return delivered_power_w(self.charger, self.ev, soc, self.limit_w, self.relay_closed)

    @property
    def energy_register_wh(self) -> int:
        """The integer Wh a meter reports (floor: a register never shows energy not yet counted)."""
        return math.floor(self.energy_wh + 1e-9)

    @property
    def soc_percent(self) -> float | None:
        return None if self.ev is None else round(self.soc * 100.0, 1)

    def ev_full(self) -> bool:
        return self.ev is not None and self.soc >= min(self.target_soc, 1.0) - 1e-9

    def advance(self, dt_s: float) -> float:
        """Integrate over ``dt_s`` seconds; return the energy added in Wh."""
        if dt_s <= 0:
            return 0.0
        added = 0.0
        remaining = dt_s
        while remaining > 1e-12:
            step = min(remaining, MAX_STEP_S)
            p = self.power_w()
            if p <= 0.0:
                break
            e = p * step / 3600.0
            if self.ev is not None:
                # never charge past the target: cut the step at the SoC limit
                room_wh = max(0.0, (min(self.target_soc, 1.0) - self.soc) * self.ev.capacity_kwh * 1000.0)
                room_wh /= self.efficiency
                if e >= room_wh:
                    e = room_wh
                    remaining = 0.0
                self.soc = min(1.0, self.soc + e * self.efficiency / (self.ev.capacity_kwh * 1000.0))
            added += e
            remaining -= step
        self.energy_wh += added
        return added

    def plug(self, ev: EVModel, soc: float, target_soc: float = 1.0) -> None:
        self.ev = ev
        self.soc = min(max(soc, 0.0), 1.0)
        self.target_soc = min(max(target_soc, 0.0), 1.0)

    def unplug(self) -> None:
        self.ev = None
        self.relay_closed = False


def ev_from_spec(name_or_model: str | EVModel, **overrides: float) -> EVModel:
    """Look up a preset by name and apply overrides (capacity_kwh, max_ac_kw, max_dc_kw, ac_phases)."""
    if isinstance(name_or_model, EVModel):
        base = name_or_model
    else:
        try:
            base = EV_MODELS[name_or_model]
        except KeyError:
            raise ValueError(f"unknown EV model {name_or_model!r}; known: {', '.join(EV_MODELS)}") from None
    return replace(base, **overrides) if overrides else base
