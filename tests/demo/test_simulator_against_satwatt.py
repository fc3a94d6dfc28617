"""The simulated charge point against a running satwatt over real sockets: offline replay after a
disconnect, a reset, and a charging profile that changes the metered power (both protocol versions)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from chargepoint_sim import ChargePoint, ChargePointOptions, create_charge_point
from tests.conftest import RunningServer
from tests.demo.conftest import FAST_CP

VERSIONS = ["1.6", "2.0.1"]
TX_MESSAGE = {"1.6": "MeterValues", "2.0.1": "TransactionEvent"}


@pytest.fixture
async def station(
    server: RunningServer, api: httpx.AsyncClient, request: pytest.FixtureRequest
) -> AsyncIterator[ChargePoint]:
    version = request.param
    charger_id = f"SIM-{version}"
    password = secrets.token_urlsafe(16)
    assert (
        await api.post("/api/v1/chargers", json={"id": charger_id, "password": password})
    ).status_code == 201
    assert (await api.post("/api/v1/id-tags", json={"id_tag": "FLEET-1"})).status_code == 201
    cp = create_charge_point(
        ChargePointOptions(
            id=charger_id, csms_url=server.ocpp_url, protocol=version, password=password, **FAST_CP
        )
    )
    await cp.start()
    await cp.wait_online(10)
    try:
        yield cp
    finally:
        await cp.stop()


async def charging(cp: ChargePoint) -> Any:
    await cp.plug_in(1, ev="sedan", soc=0.3)
    assert await cp.authorize(1, "FLEET-1")
    transaction = await cp.wait_transaction(1)
    await cp.wait_status(1, "Charging", timeout_s=10)
    return transaction


async def the_session(api: httpx.AsyncClient, cp: ChargePoint) -> dict[str, Any]:
    (session,) = (await api.get("/api/v1/sessions", params={"charger_id": cp.id})).json()
    return (await api.get(f"/api/v1/sessions/{session['id']}")).json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("station", VERSIONS, indirect=True)
async def test_offline_replay_after_a_disconnect(api: httpx.AsyncClient, station: ChargePoint) -> None:
    cp = station
    transaction = await charging(cp)
    message = TX_MESSAGE[cp.version]
    await cp.wait_for(lambda: len(cp.sent(message)) >= 2, 10)
    # the link drops without a close frame; meter values keep coming and are queued
    await cp.disconnect(for_s=2, graceful=False)
    sent_before = len(cp.sent(message))
    await cp.wait_online(15)
    await cp.wait_outbox_empty(15)
    assert len(cp.sent(message)) > sent_before  # the queue was replayed
    await cp.stop_charging(1)
    await cp.wait_outbox_empty(10)
    session = await the_session(api, cp)
    assert session["state"] == "ended"
    assert transaction.meter_stop_wh is not None
    assert session["energy_wh"] == transaction.meter_stop_wh - transaction.meter_start_wh > 0
    if cp.version == "2.0.1":
        assert session["offline_events"] > 0
    series = [p["energy_wh"] for p in session["meter_series"] if p["energy_wh"] is not None]
    assert series == sorted(series)  # replayed in order: the delivered energy never goes back


@pytest.mark.parametrize("station", VERSIONS, indirect=True)
async def test_reset_reboots_and_reconnects(api: httpx.AsyncClient, station: ChargePoint) -> None:
    cp = station
    before = (await api.get(f"/api/v1/chargers/{cp.id}")).json()
    boots = len(cp.sent("BootNotification"))
    reply = await api.post(f"/api/v1/chargers/{cp.id}/commands", json={"command": "reset", "hard": True})
    assert reply.status_code == 200 and reply.json()["status"] == "Accepted"
    await cp.wait_for(lambda: len(cp.sent("BootNotification")) > boots and cp.online, 15)
    await cp.wait_online(10)
    after = (await api.get(f"/api/v1/chargers/{cp.id}")).json()
    assert after["connection_state"] == "connected"
    assert after["booted_at"] > before["booted_at"]


@pytest.mark.parametrize("station", VERSIONS, indirect=True)
async def test_charging_profile_changes_the_metered_power(
    api: httpx.AsyncClient, station: ChargePoint
) -> None:
    cp = station
    await charging(cp)
    message = TX_MESSAGE[cp.version]
    await cp.wait_for(lambda: len(cp.sent(message)) >= 2, 10)
    session = await the_session(api, cp)
    assert session["power_w"] > 20_000  # a DC charger at full power
    reply = await api.post(
        f"/api/v1/chargers/{cp.id}/commands",
        json={
            "command": "set_power_limit",
            "connector_id": 1,
            "limit_w": 5_000,
            "profile_id": 9,
            "session_id": session["id"],
        },
    )
    assert reply.json()["status"] == "Accepted"
    await cp.wait_for(lambda: cp.connector(1).power_w() <= 5_000, 10)
    reported = len(cp.sent(message))
    await cp.wait_for(lambda: len(cp.sent(message)) >= reported + 2, 10)
    limited = await the_session(api, cp)
    assert 0 < limited["power_w"] <= 5_000
    assert limited["meter_series"][-1]["power_w"] <= 5_000
    cleared = await api.post(
        f"/api/v1/chargers/{cp.id}/commands", json={"command": "clear_power_limit", "profile_id": 9}
    )
    assert cleared.json()["status"] == "Accepted"
    await cp.wait_for(lambda: cp.connector(1).power_w() > 20_000, 10)
