"""The shim's control paths against a real satwatt: an EVSE's current register following the limits,
a car-presence input, a relay that does not read back what was written, and an unhandled error."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from chargepoint_sim.shim.config import load_config
from chargepoint_sim.shim.meters import PolledMeter
from chargepoint_sim.shim.runner import Shim
from tests.conftest import RunningServer
from tests.shim.conftest import EVSE_REGISTER, ModbusSim, modbus_tcp, shim_config, until, write_config
from tests.shim.test_shim_satwatt import (
    command,
    connected,
    register,
    relay_closed,
    relay_open,
    relay_toml,
    running,
    session_state,
)

EV_COIL = 5


@pytest.fixture
def server_settings(server_settings: dict[str, Any]) -> dict[str, Any]:
    return server_settings | {"meter_sample_interval_s": 1}


def config_for(
    tmp_path: Path,
    server: RunningServer,
    sim: ModbusSim,
    cp_id: str,
    password: str,
    protocol: str,
    extra: str = "",
) -> Path:
    return shim_config(
        tmp_path,
        cp_id=cp_id,
        csms_url=server.ocpp_url,
        protocol=protocol,
        password=password,
        modbus_port=sim.port,
        relay=relay_toml("file", tmp_path, sim.port),
        extra=extra,
    )


async def test_evse_current_register_follows_the_limits(
    server: RunningServer, api: httpx.AsyncClient, sdm630: ModbusSim, tmp_path: Path
) -> None:
    cp_id = "EVSE-1"
    password = await register(api, cp_id)
    evse = f"""
[evse]
driver = "modbus-current"
{modbus_tcp(sdm630.port)}
register = {EVSE_REGISTER}
scale = 10
min_amps = 6
max_amps = 16
phases = 3
voltage = 230
"""
    config = config_for(tmp_path, server, sdm630, cp_id, password, "2.0.1", evse)
    async with running(config) as shim:
        assert shim.cp is not None
        await until(lambda: connected(api, cp_id), what="boot")
        sid = (await command(api, cp_id, {"command": "remote_start", "connector_id": 1}))["session_id"]
        await until(lambda: relay_closed("file", tmp_path, sdm630), what="the relay closed")

        async def amps_register(value: int) -> bool:
            return await sdm630.holding(EVSE_REGISTER) == value

        await until(lambda: amps_register(160), what="16.0 A (the maximum) without a limit")
        for limit_w, expected in ((6900, 100), (5000, 72), (3000, 0), (0, 0)):  # below 6 A: 0 A
            body = {"command": "set_power_limit", "connector_id": 1, "limit_w": limit_w, "session_id": sid}
            assert (await command(api, cp_id, body))["status"] == "Accepted"
            await until(lambda e=expected: amps_register(e), what=f"{expected / 10} A for {limit_w} W")
        assert await relay_closed("file", tmp_path, sdm630)  # with an EVSE, 0 A pauses the car
        await until(
            lambda: shim.cp is not None and shim.cp.connector(1).status == "SuspendedEVSE", what="suspended"
        )
        await command(api, cp_id, {"command": "clear_power_limit", "profile_id": 1, "connector_id": 1})
        await until(lambda: amps_register(160), what="16 A again")
        await command(api, cp_id, {"command": "remote_stop", "session_id": sid})
        await until(lambda: relay_open("file", tmp_path, sdm630), what="stop opens the relay")
        await until(lambda: amps_register(0), what="0 A after the stop")
        await until(lambda: session_state(api, sid, "ended"), what="ended")


async def test_car_input_starts_and_ends_the_transaction(
    server: RunningServer, api: httpx.AsyncClient, sdm630: ModbusSim, tmp_path: Path
) -> None:
    cp_id = "EV-IN-1"
    password = await register(api, cp_id)
    ev = f"""
[ev]
driver = "modbus"
{modbus_tcp(sdm630.port)}
function = "coil"
address = {EV_COIL}
"""
    config = config_for(tmp_path, server, sdm630, cp_id, password, "1.6", ev)
    async with running(config) as shim:
        cp = shim.cp
        assert cp is not None
        await until(lambda: connected(api, cp_id), what="boot")
        sid = (await command(api, cp_id, {"command": "remote_start", "connector_id": 1}))["session_id"]
        await until(lambda: cp.connector(1).status == "Preparing", what="waiting for the car")
        assert cp.transaction(1) is None and await relay_open("file", tmp_path, sdm630)
        await sdm630.set_coil(EV_COIL, True)  # the car is plugged in
        await until(lambda: relay_closed("file", tmp_path, sdm630), what="the transaction to start")
        await until(lambda: session_state(api, sid, "charging"), what="charging")
        await sdm630.set_coil(EV_COIL, False)  # and leaves
        await until(lambda: relay_open("file", tmp_path, sdm630), what="the relay opened")
        await until(lambda: session_state(api, sid, "ended"), what="ended")
        assert cp.connector(1).last_tx is not None and cp.connector(1).last_tx.stop_reason == "EVDisconnected"


async def test_a_relay_that_does_not_read_back_is_a_fault(
    server: RunningServer, api: httpx.AsyncClient, sdm630: ModbusSim, tmp_path: Path
) -> None:
    cp_id = "RB-1"
    password = await register(api, cp_id)
    config = config_for(tmp_path, server, sdm630, cp_id, password, "1.6")
    async with running(config) as shim:
        cp = shim.cp
        assert cp is not None
        await until(lambda: connected(api, cp_id), what="boot")
        await command(api, cp_id, {"command": "remote_start", "connector_id": 1})
        await until(lambda: relay_closed("file", tmp_path, sdm630), what="the relay closed")
        (tmp_path / "relay").write_text("0")  # the contactor dropped out by itself
        await until(
            lambda: any(
                s["status"] == "Faulted" and s["errorCode"] == "PowerSwitchFailure"
                for s in cp.sent("StatusNotification")
            ),
            what="a PowerSwitchFailure",
        )
        # put right by opening and closing again, the fault clears and the session goes on
        await until(lambda: relay_closed("file", tmp_path, sdm630), what="the relay closed again")
        await until(lambda: cp.connector(1).status == "Charging", what="charging again")


async def test_an_unhandled_error_opens_the_relay(
    server: RunningServer,
    api: httpx.AsyncClient,
    sdm630: ModbusSim,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cp_id = "ERR-1"
    password = await register(api, cp_id)
    shim = Shim(load_config(config_for(tmp_path, server, sdm630, cp_id, password, "2.0.1")))
    task = asyncio.create_task(shim.run())
    await until(lambda: connected(api, cp_id), what="boot")
    await command(api, cp_id, {"command": "remote_start", "connector_id": 1})
    await until(lambda: relay_closed("file", tmp_path, sdm630), what="the relay closed")

    async def broken(self: PolledMeter) -> bool:
        raise RuntimeError("a bug")

    monkeypatch.setattr(PolledMeter, "poll", broken)
    assert await asyncio.wait_for(task, 20) == 1
    assert isinstance(shim.fatal, RuntimeError)
    assert (tmp_path / "relay").read_text() == "0"


async def test_two_connectors_with_simulated_meters(
    server: RunningServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """[[connectors]]: each connector its own meter and relay; the simulated meter counts while its
    relay is closed (for trying a board's config without a meter)."""
    cp_id = "TWO-1"
    password = await register(api, cp_id)
    config = write_config(
        tmp_path / "shim.toml",
        f"""
[charge_point]
id = "{cp_id}"
csms_url = "{server.ocpp_url}/{cp_id}"
protocol = "2.0.1"
password = "{password}"
meter_interval_s = 1

[[connectors]]
meter = {{ driver = "simulated", power_w = 11000, energy_wh = 1000, poll_s = 0.1 }}
relay = {{ driver = "file", path = "{tmp_path / "relay1"}" }}

[[connectors]]
meter = {{ driver = "simulated", power_w = 7400, energy_wh = 5000, poll_s = 0.1 }}
relay = {{ driver = "file", path = "{tmp_path / "relay2"}" }}

[offline]
queue = "{tmp_path / "queue.sqlite3"}"
""",
    )
    async with running(config) as shim:
        cp = shim.cp
        assert cp is not None
        await until(lambda: connected(api, cp_id), what="boot")
        sid = (await command(api, cp_id, {"command": "remote_start", "connector_id": 2}))["session_id"]
        await until(lambda: (tmp_path / "relay2").read_text() == "1", what="relay 2 closed")
        assert (tmp_path / "relay1").read_text() == "0"
        await until(lambda: session_energy_above(api, sid, 1), what="energy counted on connector 2")
        assert cp.connector(1).tx is None and cp.connector(1).energy_wh() == 1000.0
        await command(api, cp_id, {"command": "remote_stop", "session_id": sid})
        await until(lambda: (tmp_path / "relay2").read_text() == "0", what="relay 2 opened")
        await until(lambda: session_state(api, sid, "ended"), what="ended")


async def session_energy_above(api: httpx.AsyncClient, sid: str, wh: int) -> bool:
    return int((await api.get(f"/api/v1/sessions/{sid}")).json()["energy_wh"]) >= wh
