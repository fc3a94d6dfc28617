"""What the in-memory charger state and group commit must keep right: readings that share a timestamp
all count, a lost transaction is ended by the next one on its connector, a remote start that never
becomes a transaction is given up, and an acknowledged fact survives a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from ocpp.v16 import call
from websockets.exceptions import InvalidStatus

from csms.settings import Settings
from tests.conftest import RunningServer, start_server
from tests.ocpp_clients import at, connect_charger
from tests.test_ocpp16 import register

STUCK = "2025-01-01T00:00:00Z"


def register_value(wh: int, timestamp: str = STUCK) -> dict[str, Any]:
    return {
        "timestamp": timestamp,
        "sampledValue": [{"value": str(wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}],
    }


async def session_of(api: httpx.AsyncClient, charger_id: str, state: str | None = None) -> list[Any]:
    params = {"charger_id": charger_id} | ({"state": state} if state else {})
    return (await api.get("/api/v1/sessions", params=params)).json()


async def test_readings_with_one_timestamp_all_count(server: RunningServer, api: httpx.AsyncClient) -> None:
    """A charger with a stuck clock: 100, 200, 300 Wh all stamped alike; a retry counts once."""
    await register(api, "CP-stuck")
    async with connect_charger(server.ocpp_url, "CP-stuck", "1.6") as cp:
        start = await cp.call(
            call.StartTransaction(connector_id=1, id_tag="T", meter_start=100, timestamp=STUCK)
        )
        tx = start.transaction_id
        for wh in (100, 200, 300):
            await cp.call(
                call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[register_value(wh)])
            )
        # the same message again (a retry after a lost answer): stored and counted once
        await cp.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[register_value(300)]))
        (running,) = await session_of(api, "CP-stuck")
        detail = (await api.get(f"/api/v1/sessions/{running['id']}")).json()
    assert detail["energy_wh"] == 200
    assert [p["energy_wh"] for p in detail["meter_series"]] == [0, 100, 200]


@asynccontextmanager
async def serving(settings: Settings, key: str) -> AsyncIterator[RunningServer]:
    uv, task, port = await start_server(settings, key)
    try:
        yield RunningServer(settings, uv.config.app, key, port)
    finally:
        uv.should_exit = True
        await asyncio.wait_for(task, 20)


@pytest.mark.parametrize("restart_between", [False, True])
async def test_a_new_transaction_ends_the_lost_one_on_its_connector(
    server_settings: dict[str, Any], restart_between: bool
) -> None:
    """The charger rebooted without StopTransaction and starts again on the same connector: the lost
    transaction ends on what was metered, with a reason, and one session stays open there (whether
    satwatt kept the charger in memory or loads it again after its own restart)."""
    settings = Settings(**server_settings)
    async with serving(settings, "key-1") as first_run:
        async with first_run.api() as api:
            await register(api, "CP-lost")
        async with connect_charger(first_run.ocpp_url, "CP-lost", "1.6") as cp:
            first = await cp.call(
                call.StartTransaction(connector_id=1, id_tag="T", meter_start=1000, timestamp=at(0))
            )
            meter = [register_value(1400, at(60))]
            await cp.call(
                call.MeterValues(connector_id=1, transaction_id=first.transaction_id, meter_value=meter)
            )
            if not restart_between:
                second = await cp.call(
                    call.StartTransaction(connector_id=1, id_tag="T", meter_start=1400, timestamp=at(600))
                )
        async with first_run.api() as api:
            sessions = {s["ocpp_transaction_id"]: s for s in await session_of(api, "CP-lost")}
    if restart_between:
        async with (
            serving(settings, "key-2") as second_run,
            connect_charger(second_run.ocpp_url, "CP-lost", "1.6") as cp,
        ):
            second = await cp.call(
                call.StartTransaction(connector_id=1, id_tag="T", meter_start=1400, timestamp=at(600))
            )
            async with second_run.api() as api:
                sessions = {s["ocpp_transaction_id"]: s for s in await session_of(api, "CP-lost")}
    assert second.transaction_id != first.transaction_id
    lost, new = sessions[str(first.transaction_id)], sessions[str(second.transaction_id)]
    assert lost["state"] == "ended" and lost["stop_reason"] == "SupersededByNewTransaction"
    assert lost["energy_wh"] == 400
    assert new["state"] == "charging"
    assert [s["state"] for s in sessions.values()].count("charging") == 1


async def test_remote_start_never_taken_up_is_given_up(
    server_settings: dict[str, Any],
) -> None:
    """A remote start the charger accepted but never turned into a transaction (no car came) ends with
    the reason recorded, and the connector takes the next start."""
    settings = Settings(**(server_settings | {"remote_start_timeout_s": 1}))
    async with serving(settings, "key-timeout") as running, running.api() as api:
        await register(api, "CP-nocar")
        async with connect_charger(running.ocpp_url, "CP-nocar", "1.6"):
            body = {"command": "remote_start", "connector_id": 1}
            reply = await api.post("/api/v1/chargers/CP-nocar/commands", json=body)
            assert reply.status_code == 200 and reply.json()["status"] == "Accepted", reply.text
            session_id = reply.json()["session_id"]
            ended = await wait_until_ended(api, session_id)
            again = await api.post("/api/v1/chargers/CP-nocar/commands", json=body)
    assert ended["stop_reason"] == "no transaction within 1 s of the remote start"
    assert ended["ocpp_transaction_id"] is None
    assert again.status_code == 200 and again.json()["status"] == "Accepted"


async def wait_until_ended(api: httpx.AsyncClient, session_id: str, within_s: float = 20) -> Any:
    """The session once it has ended (the server's timer ends it; bounded wait)."""
    async with asyncio.timeout(within_s):
        while True:
            session = (await api.get(f"/api/v1/sessions/{session_id}")).json()
            if session["state"] == "ended":
                return session
            await asyncio.sleep(0.1)


async def test_a_fleet_reconnecting_after_a_restart_skips_scrypt(server_settings: dict[str, Any]) -> None:
    """scrypt runs once per charger password, not once per connection, even across a restart; a wrong
    password is still refused and a new one still checked."""
    settings = Settings(**(server_settings | {"require_charger_password": True}))
    password = "a-long-charger-secret"
    async with serving(settings, "key-a") as first:
        async with first.api() as api:
            await register(api, "CP-pw", password)
        async with connect_charger(first.ocpp_url, "CP-pw", "1.6", password) as cp:
            await cp.call(call.Heartbeat())
        assert first.app.state.verifier.scrypt_checks == 1
    async with serving(settings, "key-b") as second:
        for _ in range(3):
            async with connect_charger(second.ocpp_url, "CP-pw", "1.6", password) as cp:
                await cp.call(call.Heartbeat())
        assert second.app.state.verifier.scrypt_checks == 0
        with pytest.raises(InvalidStatus):
            async with connect_charger(second.ocpp_url, "CP-pw", "1.6", "not-the-right-secret"):
                pass
        assert second.app.state.verifier.scrypt_checks == 1
        async with second.api() as api:
            changed = await api.patch("/api/v1/chargers/CP-pw", json={"password": "another-long-secret"})
            assert changed.status_code == 200, changed.text
        with pytest.raises(InvalidStatus):
            async with connect_charger(second.ocpp_url, "CP-pw", "1.6", password):
                pass
        async with connect_charger(second.ocpp_url, "CP-pw", "1.6", "another-long-secret") as cp:
            await cp.call(call.Heartbeat())


async def test_metrics_show_what_the_writer_committed(server: RunningServer, api: httpx.AsyncClient) -> None:
    """/metrics counts the facts the group-commit writer committed and the batches it needed."""

    def counters(text: str) -> dict[str, float]:
        return {
            line.split()[0]: float(line.split()[1])
            for line in text.splitlines()
            if line.startswith("satwatt_db_")
        }

    before = counters((await api.get("/metrics")).text)
    await register(api, "CP-metrics")
    async with connect_charger(server.ocpp_url, "CP-metrics", "1.6") as cp:
        start = await cp.call(
            call.StartTransaction(connector_id=1, id_tag="T", meter_start=0, timestamp=at(0))
        )
        for wh in (10, 20, 30):
            await cp.call(
                call.MeterValues(
                    connector_id=1,
                    transaction_id=start.transaction_id,
                    meter_value=[register_value(wh, at(wh))],
                )
            )
    after = counters((await api.get("/metrics")).text)
    facts = after["satwatt_db_facts_total"] - before["satwatt_db_facts_total"]
    batches = after["satwatt_db_batches_total"] - before["satwatt_db_batches_total"]
    assert facts >= 5  # connected, the start, three samples (each answered after its commit)
    assert 1 <= batches <= facts
    assert after["satwatt_db_failed_facts_total"] == 0
