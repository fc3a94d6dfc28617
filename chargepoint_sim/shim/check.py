"""``--check``: read every meter once (with its retries) and every input that can be read without
driving anything; relays are not requested (a GPIO request would set the line), nothing is sent."""

from __future__ import annotations

from dataclasses import dataclass

from chargepoint_sim.shim.config import ShimConfig
from chargepoint_sim.shim.evse import EvseError, ModbusCurrentEvse, make_ev_input
from chargepoint_sim.shim.meters import PolledMeter, make_meter
from chargepoint_sim.shim.modbus import Buses, ModbusError
from chargepoint_sim.shim.relays import peek_relay


@dataclass
class CheckResult:
    connector_id: int
    ok: bool
    meter: str
    energy: str = "-"
    power: str = "-"
    voltage: str = "-"
    current: str = "-"
    relay: str = "-"
    car: str = "no input (a remote start starts at once)"
    evse: str = "-"
    error: str | None = None


async def check_board(cfg: ShimConfig) -> list[CheckResult]:
    buses = Buses()
    results: list[CheckResult] = []
    try:
        for c in cfg.connectors:
            driver = make_meter(c.meter, buses, lambda: False)
            polled = PolledMeter(driver, c.meter)
            ok = await polled.poll()
            r = CheckResult(c.id, ok, driver.description)
            if ok and polled.last is not None:
                last = polled.last
                r.energy = f"{last.energy_wh} Wh ({last.energy_wh / 1000:.3f} kWh)"
                r.power = f"{last.power_w:.0f} W"
                r.voltage = " / ".join(f"{v:.1f}" for v in last.voltage_v) + " V" if last.voltage_v else "-"
                r.current = " / ".join(f"{a:.2f}" for a in last.current_a) + " A" if last.current_a else "-"
            else:
                r.error = f"meter: {polled.last_error}"
            r.relay = peek_relay(c.relay)
            if c.relay.driver == "modbus-coil" and c.relay.link is not None and c.relay.coil is not None:
                try:
                    level = await buses.get(c.relay.link).read_bit(c.relay.unit, "coil", c.relay.coil)
                    r.relay = "closed" if level != c.relay.active_low else "open"
                except ModbusError as e:
                    r.relay = f"coil not readable: {e}"
            if c.ev is not None:
                if c.ev.driver == "gpiod":
                    r.car = f"{c.ev.chip} line {c.ev.line}: not read"
                else:
                    try:
                        ev = make_ev_input(c.ev, buses)
                        r.car = "plugged in" if await ev.read() else "no car"
                        ev.close()
                    except EvseError as e:
                        r.car = f"not readable: {e}"
            if c.evse is not None:
                evse = ModbusCurrentEvse(c.evse, buses)
                try:
                    value = await evse.read()
                    r.evse = f"{value / c.evse.scale:g} A (register {c.evse.register} = {value})"
                except EvseError as e:
                    r.evse = f"not readable: {e}"
            results.append(r)
    finally:
        await buses.close()
    return results
