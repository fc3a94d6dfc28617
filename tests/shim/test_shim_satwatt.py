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
import json
import secrets
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chargepoint_sim.shim.config import load_config
from chargepoint_sim.shim.runner import Shim
from tests.conftest import RunningServer
from tests.shim.conftest import ModbusSim, TcpProxy, modbus_tcp, shim_config, until

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
    return f'driver = "modbus-coil"\n{modbus_tcp(modbus_port)}\ncoil = {COIL}'


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
    return c["connection_state"] == "connected" and any(x["connector_id"] == 1 for x in c["connectors"])


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
    config = shim_config(
        tmp_path,
        cp_id=cp_id,
        csms_url=server.ocpp_url,
        protocol=protocol,
        password=password,
        modbus_port=sdm630.port,
        relay=relay_toml(relay, tmp_path, sdm630.port),
    )
    if relay == "modbus-coil":
        await sdm630.set_coil(COIL, True)  # left closed by whatever ran before: opened at start
    async with running(config) as shim:
        await until(lambda: relay_open(relay, tmp_path, sdm630), what="the relay open at start")
        await until(lambda: connected(api, cp_id), what="the shim booted at satwatt")
        assert await connector_status(api, cp_id, "Available")

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
        assert ended["meter_stop_wh"] == 12700  # 1.6's meterStop, 2.0.1's Ended event's final register
    assert await relay_open(relay, tmp_path, sdm630)


async def session_state(api: httpx.AsyncClient, sid: str, state: str) -> bool:
    return (await session(api, sid))["state"] == state


async def session_energy(api: httpx.AsyncClient, sid: str, wh: int) -> bool:
    return (await session(api, sid))["energy_wh"] == wh


def sampled_wh(action: str, payload: dict[str, Any]) -> list[int]:
    """The energy registers (Wh) in a queued or sent MeterValues / TransactionEvent / StopTransaction."""
    out = []
    values = payload.get("meterValue") or payload.get("transactionData") or []
    for mv in values:
        for sv in mv["sampledValue"]:
            if sv.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register":
                out.append(int(float(sv["value"])))
    return out


def queued_wh(queue: Path) -> list[int]:
    """Energy registers in the shim's queue file, in queue order (read beside the running shim)."""
    db = sqlite3.connect(queue)
    try:
        rows = db.execute("SELECT action, payload FROM outbox ORDER BY key").fetchall()
    finally:
        db.close()
    return [wh for action, payload in rows for wh in sampled_wh(action, json.loads(payload))]


@contextlib.asynccontextmanager
async def proxied(server: RunningServer) -> AsyncIterator[TcpProxy]:
    proxy = await TcpProxy(server.port).start()
    try:
        yield proxy
    finally:
        await proxy.stop()


@pytest.mark.parametrize("protocol", ["1.6", "2.0.1"])
async def test_offline_grace_opens_the_relay_and_the_queue_is_replayed_in_order(
    server: RunningServer, api: httpx.AsyncClient, sdm630: ModbusSim, tmp_path: Path, protocol: str
) -> None:
    cp_id = f"OFF-{protocol.replace('.', '')}"
    password = await register(api, cp_id)
    await sdm630.set_energy_kwh(20.0)
    await sdm630.set_power_w(7000.0)
    queue = tmp_path / "queue.sqlite3"
    async with proxied(server) as proxy:
        config = shim_config(
            tmp_path,
            cp_id=cp_id,
            csms_url=f"ws://127.0.0.1:{proxy.port}/ocpp",
            protocol=protocol,
            password=password,
            modbus_port=sdm630.port,
            relay=relay_toml("file", tmp_path, sdm630.port),
            grace_s=2.0,
        )
        async with running(config) as shim:
            cp = shim.cp
            assert cp is not None
            await until(lambda: connected(api, cp_id), what="boot")
            sid = (await command(api, cp_id, {"command": "remote_start", "connector_id": 1}))["session_id"]
            await until(lambda: relay_closed("file", tmp_path, sdm630), what="the relay closed")
            await until(lambda: session_state(api, sid, "charging"), what="charging")

            await proxy.cut()  # the central system goes away
            await until(lambda: not cp.online, what="the shim to notice")
            assert await relay_closed("file", tmp_path, sdm630)  # not before the grace period
            offline_values = []
            for kwh in (20.05, 20.1, 20.15):
                await sdm630.set_energy_kwh(kwh)
                offline_values.append(round(kwh * 1000))
                await until(
                    lambda wh=offline_values[-1]: wh in queued_wh(queue), what=f"{offline_values[-1]} queued"
                )
            await until(
                lambda: relay_open("file", tmp_path, sdm630), timeout_s=10, what="grace_s to open the relay"
            )
            assert shim.offline_since is not None
            assert cp.connector(1).status == "SuspendedEVSE"
            in_queue = queued_wh(queue)
            assert in_queue == sorted(in_queue) and set(offline_values) <= set(in_queue)
            sent_before = len(cp.frames)

            await proxy.restore()
            await until(lambda: cp.online and not cp.outbox, timeout_s=20, what="the queue to be replayed")
            assert queued_wh(queue) == []
            await until(lambda: relay_closed("file", tmp_path, sdm630), what="the relay to close again")
            replayed = [
                wh
                for f in list(cp.frames)[sent_before:]
                if f.direction == "out" and f.kind == "call"
                for wh in sampled_wh(str(f.action), f.payload)
            ]
            assert replayed[: len(in_queue)] == in_queue  # in the order they were queued
            series = registers((await session(api, sid))["meter_series"])
            assert set(offline_values) <= set(series) and series == sorted(series)
            if protocol == "2.0.1":
                events = cp.sent("TransactionEvent")
                first: dict[int, dict[str, Any]] = {}
                for sent_event in events:  # a repeat is only a retry: one in flight when the link was cut
                    seen = first.setdefault(sent_event["seqNo"], sent_event)
                    for field in ("eventType", "timestamp", "meterValue", "transactionInfo"):
                        assert sent_event.get(field) == seen.get(field)
                assert list(first) == list(range(len(first)))  # no gap, in order
                assert any(e.get("offline") for e in events)
                assert (await session(api, sid))["offline_events"] > 0

            await command(api, cp_id, {"command": "remote_stop", "session_id": sid})
            await until(lambda: session_state(api, sid, "ended"), what="the session to end")


def spawn_shim(config: Path) -> asyncio.subprocess.Process:
    return asyncio.create_subprocess_exec(  # type: ignore[return-value]
        sys.executable,
        "-m",
        "chargepoint_sim.cli",
        "shim",
        "--config",
        str(config),
        "--log-level",
        "WARNING",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.parametrize("protocol", ["1.6", "2.0.1"])
async def test_kill_9_and_restart_loses_nothing(
    server: RunningServer, api: httpx.AsyncClient, sdm630: ModbusSim, tmp_path: Path, protocol: str
) -> None:
    cp_id = f"K9-{protocol.replace('.', '')}"
    password = await register(api, cp_id)
    await sdm630.set_energy_kwh(30.0)
    await sdm630.set_power_w(7000.0)
    queue = tmp_path / "queue.sqlite3"
    async with proxied(server) as proxy:
        config = shim_config(
            tmp_path,
            cp_id=cp_id,
            csms_url=f"ws://127.0.0.1:{proxy.port}/ocpp",
            protocol=protocol,
            password=password,
            modbus_port=sdm630.port,
            relay=relay_toml("file", tmp_path, sdm630.port),
            grace_s=60.0,
        )
        first = await spawn_shim(config)
        try:
            await until(lambda: connected(api, cp_id), timeout_s=30, what="the shim process to boot")
            sid = (await command(api, cp_id, {"command": "remote_start", "connector_id": 1}))["session_id"]
            await until(lambda: relay_closed("file", tmp_path, sdm630), what="the relay closed")
            await sdm630.set_energy_kwh(30.1)
            await until(lambda: session_energy(api, sid, 100), what="satwatt to see 30.1 kWh")

            await proxy.cut()  # messages from now on wait in the queue
            for kwh in (30.2, 30.3):
                await sdm630.set_energy_kwh(kwh)
                await until(lambda wh=round(kwh * 1000): wh in queued_wh(queue), what=f"{kwh} kWh queued")
            queued_before_kill = queued_wh(queue)
        finally:
            first.kill()  # SIGKILL: no clean-up of any kind
            await first.wait()
        assert first.returncode == -signal.SIGKILL
        assert (tmp_path / "relay").read_text() == "1"  # nobody opened it: the restart must

        await sdm630.set_energy_kwh(30.45)  # the car drew more while the shim was down
        await proxy.restore()
        second = await spawn_shim(config)
        try:
            await until(
                lambda: relay_open("file", tmp_path, sdm630), timeout_s=30, what="the relay opened at start"
            )
            await until(lambda: session_state(api, sid, "ended"), timeout_s=30, what="the session to end")
            ended = await session(api, sid)
            series = registers(ended["meter_series"])
            assert set(queued_before_kill) <= set(series) and series == sorted(series)
            assert series[-1] == 30450 and ended["energy_wh"] == 450  # nothing lost, nothing made up
            assert ended["stop_reason"] == "PowerLoss"
            await until(lambda: queued_wh(queue) == [], what="the queue emptied")
        finally:
            second.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(second.communicate(), 20)
        assert second.returncode == 0, stderr.decode()
        assert (tmp_path / "relay").read_text() == "0"


@pytest.mark.parametrize("protocol", ["1.6", "2.0.1"])
async def test_meter_read_errors_become_a_fault(
    server: RunningServer, api: httpx.AsyncClient, sdm630: ModbusSim, tmp_path: Path, protocol: str
) -> None:
    cp_id = f"MF-{protocol.replace('.', '')}"
    password = await register(api, cp_id)
    await sdm630.set_energy_kwh(5.0)
    config = shim_config(
        tmp_path,
        cp_id=cp_id,
        csms_url=server.ocpp_url,
        protocol=protocol,
        password=password,
        modbus_port=sdm630.port,
        relay=relay_toml("file", tmp_path, sdm630.port),
    )
    async with running(config) as shim:
        cp = shim.cp
        assert cp is not None
        await until(lambda: connected(api, cp_id), what="boot")
        sid = (await command(api, cp_id, {"command": "remote_start", "connector_id": 1}))["session_id"]
        await until(lambda: relay_closed("file", tmp_path, sdm630), what="the relay closed")
        await until(lambda: session_state(api, sid, "charging"), what="charging")

        sdm630.failing = True
        await until(
            lambda: connector_status(api, cp_id, "Faulted"), what="satwatt to see the connector Faulted"
        )
        await until(lambda: relay_open("file", tmp_path, sdm630), what="the relay opened on the fault")
        c = await connector(api, cp_id)
        assert c is not None
        if protocol == "1.6":
            assert c["error_code"] == "PowerMeterFailure"
        else:
            (event,) = cp.sent("NotifyEvent")
            assert event["eventData"][0]["techCode"] == "PowerMeterFailure"
            assert event["eventData"][0]["cleared"] is False
        # while the meter fails, no sample goes out (over two meter intervals): no energy is made up
        before = periodic_samples(cp.frames)
        reads = sdm630.reads
        await until(lambda: sdm630.reads >= reads + 30, what="two seconds of failed reads")
        assert periodic_samples(cp.frames) == before

        sdm630.failing = False
        await until(
            lambda: relay_closed("file", tmp_path, sdm630), what="the relay closed once the meter answers"
        )
        charging = "Charging" if protocol == "1.6" else "Occupied"
        await until(lambda: connector_status(api, cp_id, charging), what="charging again")
        assert cp.connector(1).status == "Charging"


async def connector(api: httpx.AsyncClient, cp_id: str, connector_id: int = 1) -> dict[str, Any] | None:
    for c in (await charger(api, cp_id))["connectors"]:
        if c["connector_id"] == connector_id:
            return dict(c)
    return None


async def connector_status(api: httpx.AsyncClient, cp_id: str, status: str) -> bool:
    c = await connector(api, cp_id)
    return c is not None and c["status"] == status


def periodic_samples(frames: Any) -> int:
    """Periodic meter samples the charge point has sent (1.6 MeterValues, 2.0.1 TransactionEvent)."""
    return sum(
        1
        for f in list(frames)
        if f.direction == "out"
        and f.kind == "call"
        and any(
            sv.get("context") == "Sample.Periodic"
            for mv in f.payload.get("meterValue", [])
            for sv in mv["sampledValue"]
        )
    )
