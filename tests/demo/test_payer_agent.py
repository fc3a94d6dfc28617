"""The car's payer agent end to end: satwatt (REST, SSE, settlement, embedded simnet), a simulated charge
point over OCPP and the car's LND client, all over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, cast

import httpx
import pytest

from chargepoint_sim.payer import PayerAgent, PayerMode, PayerPolicy
from lightning import Backend
from lightning.backend import PaymentResult
from lightning.lnd import LndBackend
from lightning.lnd.config import LndConfig
from tests.conftest import RunningServer
from tests.demo.conftest import car, until

VERSIONS = ["1.6", "2.0.1"]


async def walk_up(server: RunningServer, charger_id: str) -> dict[str, Any]:
    async with server.api(None) as anonymous:
        response = await anonymous.post(
            "/api/v1/sessions", json={"charger_id": charger_id, "connector_id": 1}
        )
    assert response.status_code == 201, response.text
    return response.json()


async def session_of(api: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    return (await api.get(f"/api/v1/sessions/{session_id}")).json()


@pytest.mark.parametrize("version", VERSIONS)
async def test_good_payer_pays_a_whole_session_increment_by_increment(
    server: RunningServer, api: httpx.AsyncClient, stations: Callable[..., Any], version: str
) -> None:
    """The issue's full paid session, per protocol: walk-up, paid increment by increment, unplug, settled."""
    station = await stations(f"PAY-{version}", version)
    await station.cp.plug_in(1, ev="sedan", soc=0.3)
    created = await walk_up(server, station.charger_id)
    async with car(server, "car1", session_token=created["token"], session_id=created["id"]) as (agent, task):
        # the first invoice (with the session fee) is paid, satwatt starts the charger remotely
        await station.cp.wait_status(1, "Charging", timeout_s=15)
        await until(agent, lambda: agent.stats.invoices_paid >= 5, 30, "five paid invoices")
        assert agent.stats.suspensions == 0 and agent.refusals == []
        await station.cp.unplug(1)
        stats = await asyncio.wait_for(task, 20)
    session = await session_of(api, created["id"])
    assert stats.outcome == "settled" and session["state"] == "ended" and session["outcome"] == "settled"
    assert stats.invoices_refused == 0 and stats.suspensions == 0
    assert session["paid_msat"] == stats.paid_msat >= session["cost_msat"] > 0
    invoices = (await api.get(f"/api/v1/sessions/{created['id']}/invoices")).json()
    paid = [i for i in invoices if i["status"] == "paid"]
    assert len(paid) == stats.invoices_paid >= 5
    assert paid[0]["fee_msat"] == 1_000 and all(i["fee_msat"] == 0 for i in paid[1:])
    # the car never ran further ahead than the policy allows
    assert session["refundable_msat"] <= 2 * 50 * 100 + 75 * 100 + session["energy_wh"] * 5


async def test_refuses_an_over_priced_invoice_and_the_session_is_suspended(
    server: RunningServer, api: httpx.AsyncClient, stations: Callable[..., Any]
) -> None:
    station = await stations("PRICEY", "2.0.1")
    payer = (await api.post("/api/v1/payers", json={"name": "Bea", "id_tags": ["BEA-CARD"]})).json()
    # the operator raises the price above what the car accepts (new sessions use it)
    changed = await api.patch(f"/api/v1/tariffs/{station.tariff['id']}", json={"price_msat_per_kwh": 300_000})
    assert changed.status_code == 200, changed.text
    policy = PayerPolicy(max_price_msat_per_kwh=200_000)
    async with car(server, "car2", policy=policy, payer_token=payer["token"], id_tag="BEA-CARD") as (
        agent,
        _,
    ):
        await station.cp.plug_in(1, ev="sedan", soc=0.3)
        assert await station.cp.authorize(1, "BEA-CARD")
        await until(agent, lambda: agent.stats.invoices_refused >= 1, 20, "a refusal")
        (refusal,) = agent.refusals
        assert refusal.reason == "price_above_max" and refusal.price_msat_per_kwh == 300_000
        assert refusal.session_id == agent.session_id and refusal.amount_msat > 0
        await until(agent, lambda: agent.stats.suspensions >= 1, 20, "the suspension")
        assert (await session_of(api, agent.session_id or ""))["state"] in (
            "suspended",
            "awaiting_payment_final",
        )
        assert agent.stats.invoices_paid == 0 and agent.stats.paid_msat == 0
        await station.cp.wait_for(lambda: station.cp.connector(1).power_w() == 0, 10)


async def test_late_payer_is_suspended_and_resumes_when_it_pays(
    server: RunningServer, api: httpx.AsyncClient, stations: Callable[..., Any]
) -> None:
    # a late payment may leave a deficit, so resuming can take a second (late) payment: give it time
    station = await stations("LATE", "2.0.1", stop_after_s=30)
    await station.cp.plug_in(1, ev="sedan", soc=0.3)
    created = await walk_up(server, station.charger_id)
    late = PayerMode(delay_s=3.5)  # longer than grace_s (2 s) after the credit ran out
    find = {"session_token": created["token"], "session_id": created["id"]}
    async with car(server, "car1", mode=late, **find) as (agent, task):
        await until(agent, lambda: agent.stats.resumptions >= 1, 40, "a suspension and a resumption")
        assert agent.stats.suspensions >= 1 and not agent.stats.stopped
        await station.cp.wait_status(1, "Charging", timeout_s=10)
        await station.cp.unplug(1)
        stats = await asyncio.wait_for(task, 30)
    assert stats.outcome == "settled" and stats.invoices_refused == 0
    session = await session_of(api, created["id"])
    assert session["paid_msat"] >= session["cost_msat"] > 0


@pytest.mark.parametrize("version", VERSIONS)
async def test_non_payer_is_throttled_then_stopped(
    server: RunningServer, api: httpx.AsyncClient, stations: Callable[..., Any], version: str
) -> None:
    """The issue's non-payer: it stops paying after 100 Wh, is cut (limit 0), then stopped."""
    station = await stations(f"CUT-{version}", version)
    payer = (await api.post("/api/v1/payers", json={"name": "Cy", "id_tags": ["CY-CARD"]})).json()
    stops = PayerMode(stop_after_wh=100)
    async with car(server, "car3", mode=stops, payer_token=payer["token"], id_tag="CY-CARD") as (agent, _):
        await station.cp.plug_in(1, ev="sedan", soc=0.3)
        assert await station.cp.authorize(1, "CY-CARD")
        await until(agent, lambda: agent.stats.suspensions >= 1, 20, "the suspension")
        await station.cp.wait_for(lambda: station.cp.connector(1).power_w() == 0, 10)
        await until(agent, lambda: agent.stats.stopped, 20, "satwatt stopping the session")
        await station.cp.wait_for(lambda: station.cp.transaction(1) is None, 15)
        await until(
            agent, lambda: any(kind == "invoice" and d["kind"] == "final" for kind, d in agent.events), 10
        )
        session = await session_of(api, agent.session_id or "")
    assert agent.stats.invoices_paid >= 1 and agent.stats.invoices_skipped >= 1 and agent.refusals == []
    assert session["state"] == "awaiting_payment_final" and session["unpaid_msat"] > 0
    assert session["stop_reason"] is not None


class ObservedAgent(PayerAgent):
    """The agent, telling when it has stopped following the session (after `closed`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.followed = asyncio.Event()

    async def _follow(self, client: httpx.AsyncClient, session_id: str) -> None:
        try:
            await super()._follow(client, session_id)
        finally:
            self.followed.set()


class LateReportingNode:
    """The car's node, reporting a payment made after the charge ended only once the agent has stopped
    following the session: the node has paid (satwatt saw the invoice settle and closed the session),
    the agent hears of it late, as when its payment stream lags the payee's settlement."""

    def __init__(self, inner: LndBackend) -> None:
        self.inner = inner
        self.agent: ObservedAgent | None = None
        self.held = 0

    async def pay_invoice(
        self, bolt11: str, fee_limit_msat: int, timeout_s: int = 60, amount_msat: int | None = None
    ) -> PaymentResult:
        result = await self.inner.pay_invoice(bolt11, fee_limit_msat, timeout_s, amount_msat)
        agent = self.agent
        if agent is not None and agent._known.ended:
            self.held += 1
            async with asyncio.timeout(30):  # (not wait_for: it may swallow a cancellation)
                await agent.followed.wait()
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_payment_in_flight_at_closed_is_finished_and_counted(
    server: RunningServer, api: httpx.AsyncClient, stations: Callable[..., Any]
) -> None:
    """Issue 8: final invoices paid at the node were missing from the agent's stats, because the agent
    returned on `closed` and cancelled the payment still in flight."""
    station = await stations("FINAL", "2.0.1")
    payer = (await api.post("/api/v1/payers", json={"name": "Di", "id_tags": ["DI-CARD"]})).json()
    simnet = server.app.state.lightning.simnet
    node = LateReportingNode(LndBackend(LndConfig.from_simnet(simnet, "car1"), name="car1"))
    # a car that never pays ahead: the energy of the charge is left for the final invoice
    policy = PayerPolicy(max_ahead_wh=0, tolerance_wh=0, tolerance_fraction=0.0)
    agent = ObservedAgent(
        server.http_url, cast(Backend, node), payer_token=payer["token"], id_tag="DI-CARD", policy=policy
    )
    node.agent = agent
    task = asyncio.create_task(agent.run())
    try:
        await station.cp.plug_in(1, ev="sedan", soc=0.3)
        assert await station.cp.authorize(1, "DI-CARD")
        await until(agent, lambda: agent.stats.delivered_wh >= 10, 20, "some energy")
        await station.cp.unplug(1)
        stats = await asyncio.wait_for(task, 60)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await node.inner.close()
    assert node.held >= 1  # the final invoice's payment was still in flight when `closed` arrived
    invoices = (await api.get(f"/api/v1/sessions/{agent.session_id}/invoices")).json()
    paid = [i for i in invoices if i["status"] == "paid"]
    assert any(i["kind"] == "final" for i in paid)
    assert stats.invoices_paid == len(paid) and stats.payments_in_doubt == 0
    assert stats.paid_msat == sum(i["amount_msat"] for i in paid)
