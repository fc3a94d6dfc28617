"""Fixtures for the payer-agent and demo tests: satwatt (from tests/conftest.py) with fast settlement, a
simulated charge point connected to it, and cars whose payer agents pay from simnet nodes."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from chargepoint_sim import ChargePoint, ChargePointOptions, ChargerSpec, create_charge_point
from chargepoint_sim.payer import PayerAgent, PayerMode, PayerPolicy, PayerStats
from lightning.lnd import LndBackend
from lightning.lnd.config import LndConfig
from tests.conftest import RunningServer

# 100 sat/kWh in 50 Wh increments (5 sat each); a 150 kW DC charger draws an increment every ~1.2 s
TARIFF: dict[str, Any] = {
    "name": "payer-test",
    "price_msat_per_kwh": 100_000,
    "increment_wh": 50,
    "min_invoice_interval_s": 1,
    "allowance_wh": 30,
    "grace_s": 2,
    "stop_after_s": 3,
    "invoice_expiry_s": 600,
    "session_fee_msat": 1_000,
}
FAST_CP: dict[str, Any] = {
    "reconnect_min_s": 0.05,
    "reconnect_max_s": 0.5,
    "call_timeout_s": 5.0,
    "message_retry_s": 0.2,
    "charger": ChargerSpec.dc(150),
}


@pytest.fixture
def server_settings(server_settings: dict[str, Any]) -> dict[str, Any]:
    return server_settings | {"meter_sample_interval_s": 1, "settlement_tick_ms": 100, "simnet_cars": 3}


@dataclass
class Station:
    """A registered, connected simulated charge point selling under ``tariff``, whose connectors'
    statuses satwatt has logged."""

    cp: ChargePoint
    charger_id: str
    tariff: dict[str, Any]


async def add_station(
    server: RunningServer, api: httpx.AsyncClient, charger_id: str, protocol: str, **tariff: Any
) -> Station:
    password = secrets.token_urlsafe(16)
    response = await api.post("/api/v1/chargers", json={"id": charger_id, "password": password})
    assert response.status_code == 201, response.text
    created = (await api.post("/api/v1/tariffs", json=TARIFF | tariff)).json()
    patched = await api.patch(f"/api/v1/chargers/{charger_id}", json={"tariff_id": created["id"]})
    assert patched.status_code == 200, patched.text
    cp = create_charge_point(
        ChargePointOptions(
            id=charger_id, csms_url=server.ocpp_url, protocol=protocol, password=password, **FAST_CP
        )
    )
    await cp.start()
    await cp.wait_online(10)
    await statuses_logged(api, cp)
    return Station(cp, charger_id, created)


async def statuses_logged(api: httpx.AsyncClient, cp: ChargePoint, timeout_s: float = 20) -> None:
    """Wait (bounded) until satwatt has logged a status for each of the charge point's connectors: the
    charge point is online once its boot is accepted, and its StatusNotifications follow that."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        response = await api.get(f"/api/v1/chargers/{cp.id}")
        assert response.status_code == 200, response.text
        shown = {c["connector_id"]: c["status"] for c in response.json()["connectors"]}
        missing = sorted(cid for cid in cp.connectors if shown.get(cid) is None)
        if not missing:
            return
        if loop.time() >= deadline:
            raise AssertionError(
                f"satwatt had logged no status for connector(s) {missing} of {cp.id} {timeout_s} s after "
                f"it came online (satwatt shows {shown})"
            )
        await asyncio.sleep(0.05)


@pytest.fixture
async def stations(server: RunningServer, api: httpx.AsyncClient) -> AsyncIterator[Callable[..., Any]]:
    made: list[Station] = []

    async def make(charger_id: str, protocol: str, **tariff: Any) -> Station:
        station = await add_station(server, api, charger_id, protocol, **tariff)
        made.append(station)
        return station

    yield make
    for station in made:
        await station.cp.stop()


@contextlib.asynccontextmanager
async def car(
    server: RunningServer,
    node: str,
    *,
    policy: PayerPolicy | None = None,
    mode: PayerMode | None = None,
    **find: Any,
) -> AsyncIterator[tuple[PayerAgent, asyncio.Task[PayerStats]]]:
    """A car's payer agent running in the background (session token, or payer token + id tag)."""
    simnet = server.app.state.lightning.simnet
    backend = LndBackend(LndConfig.from_simnet(simnet, node), name=node)
    agent = PayerAgent(server.http_url, backend, policy=policy, mode=mode, name=node, **find)
    task = asyncio.create_task(agent.run())
    try:
        yield agent, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await backend.close()


async def until(
    agent: PayerAgent, predicate: Callable[[], bool], timeout_s: float = 20, what: str = ""
) -> None:
    """Wait (bounded) until ``predicate()`` holds, re-checked on each of the agent's events."""
    try:
        await agent.wait_for(predicate, timeout_s)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what or 'a condition'}") from None
