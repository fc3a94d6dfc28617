"""The exposure bound while the Lightning node is down (issue 8): a paying fleet, the node unreachable
for a while, and every session's unpaid energy stays within the tariff's allowance plus one check period
of power; every suspension and resumption carried out is in the session's log.

Everything runs over real sockets: satwatt (embedded simnet, reached over gRPC + TLS), simulated charge
points over OCPP 1.6J and 2.0.1, and cars whose payer agents pay from their own simnet nodes. The outage
closes the simnet's port: neither satwatt nor the cars can reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from chargepoint_sim import ChargePoint, ChargePointOptions, ChargerSpec, create_charge_point
from chargepoint_sim.payer import PayerAgent, PayerStats
from csms.db.models import ChargingSession, LightningInvoice, SessionEvent
from csms.settlement.engine import SettlementEngine
from lightning.lnd import LndBackend
from lightning.lnd.config import LndConfig
from tests.conftest import RunningServer

CARS = 4
POWER_KW = 50  # 13.9 Wh/s: the allowance lasts about 1.4 s unpaid
TICK_MS = 100
SAMPLE_S = 0.01  # how often the test looks at the energy delivered and paid
OUTAGE_S = 8.0  # several allowances' worth of energy, longer than the grace period
TARIFF: dict[str, Any] = {
    "name": "outage",
    "price_msat_per_kwh": 100_000,
    "increment_wh": 20,
    "min_invoice_interval_s": 1,  # 50 kW * 1 s = 14 Wh < 20 Wh: invoices of 20 Wh
    "allowance_wh": 20,
    "grace_s": 60,  # the allowance, not the grace period, is the rule that cuts here
    "stop_after_s": 600,  # suspended through the outage, not stopped
    "invoice_expiry_s": 600,
    "session_fee_msat": 1_000,
}


def wh(power_w: float, seconds: float) -> int:
    return math.ceil(power_w * seconds / 3600)


# Bound on every session's unpaid energy (Wh the charger metered minus Wh satwatt has credited):
#   allowance_wh                       the policy suspends once projected delivery > paid + allowance;
#   + one check period at full power   the policy is checked on every tick (and every sample), so
#                                      delivery can pass the allowance by up to a tick's energy before
#                                      the Suspend decision, and the decision is carried out within the
#                                      next check period (a database commit and one OCPP call);
#   + 1 Wh                             the meter register is whole Wh (floored), the projection whole Wh.
# No increment is added: the allowance rule counts delivered against paid Wh, whatever is invoiced.
BOUND_WH = TARIFF["allowance_wh"] + wh(POWER_KW * 1000, 2 * TICK_MS / 1000) + 1


@pytest.fixture
def server_settings(server_settings: dict[str, Any]) -> dict[str, Any]:
    return server_settings | {
        "meter_sample_interval_s": 1,
        "settlement_tick_ms": TICK_MS,
        "simnet_cars": CARS,
    }


@dataclass
class Sold:
    """One car at one charger: the walk-up session, its payer agent, the largest unpaid energy seen."""

    cp: ChargePoint
    session_id: str
    number: int
    agent: PayerAgent
    task: asyncio.Task[PayerStats]
    peak_unpaid_wh: float = 0.0
    samples: list[tuple[float, float]] = field(default_factory=list)

    def delivered_wh(self) -> float:
        conn = self.cp.connector(1)
        tx = conn.tx or conn.last_tx
        return 0.0 if tx is None else conn.energy_wh() - tx.meter_start_wh


async def session_number(server: RunningServer, session_id: str) -> int:
    async with server.app.state.service.db() as db:
        number = await db.scalar(select(ChargingSession.number).where(ChargingSession.id == session_id))
    assert number is not None
    return int(number)


@contextlib.asynccontextmanager
async def fleet(server: RunningServer, api: httpx.AsyncClient) -> AsyncIterator[list[Sold]]:
    """CARS chargers (odd 1.6J, even 2.0.1), each selling a walk-up session to a paying car."""
    tariff = (await api.post("/api/v1/tariffs", json=TARIFF)).json()
    simnet = server.app.state.lightning.simnet
    sold: list[Sold] = []
    backends: list[LndBackend] = []
    try:
        for i in range(1, CARS + 1):
            charger_id = f"OUT-{i}"
            password = secrets.token_urlsafe(16)
            created = await api.post("/api/v1/chargers", json={"id": charger_id, "password": password})
            assert created.status_code == 201, created.text
            await api.patch(f"/api/v1/chargers/{charger_id}", json={"tariff_id": tariff["id"]})
            cp = create_charge_point(
                ChargePointOptions(
                    id=charger_id,
                    csms_url=server.ocpp_url,
                    protocol="1.6" if i % 2 else "2.0.1",
                    password=password,
                    reconnect_min_s=0.05,
                    reconnect_max_s=0.5,
                    call_timeout_s=5.0,
                    message_retry_s=0.2,
                    charger=ChargerSpec.dc(POWER_KW),
                )
            )
            await cp.start()
            await cp.wait_online(10)
            await cp.plug_in(1, ev="sedan", soc=0.2)
            walk_up = (
                await api.post("/api/v1/sessions", json={"charger_id": charger_id, "connector_id": 1})
            ).json()
            backend = LndBackend(LndConfig.from_simnet(simnet, f"car{i}"), name=f"car{i}")
            backends.append(backend)
            agent = PayerAgent(
                server.http_url,
                backend,
                name=f"car{i}",
                session_token=walk_up["token"],
                session_id=walk_up["id"],
            )
            task = asyncio.create_task(agent.run())
            number = await session_number(server, walk_up["id"])
            sold.append(Sold(cp, walk_up["id"], number, agent, task))
        yield sold
    finally:
        for s in sold:
            s.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await s.task
            await s.cp.stop()
        for backend in backends:
            await backend.close()


async def watch_unpaid(engine: SettlementEngine, sold: list[Sold], stop: asyncio.Event) -> None:
    """The largest (metered - credited) energy of each session, looked at every SAMPLE_S; the energy
    of one look's period is added, so the figure is never below the true peak between two looks."""
    margin = POWER_KW * 1000 * SAMPLE_S / 3600
    while not stop.is_set():
        for s in sold:
            view = engine.view(s.number)
            if view is None or view[0].transaction_started_at is None:
                continue
            unpaid = s.delivered_wh() - view[0].paid_wh
            s.peak_unpaid_wh = max(s.peak_unpaid_wh, unpaid + margin)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_S)


async def events_of(server: RunningServer, number: int) -> list[SessionEvent]:
    async with server.app.state.service.db() as db:
        rows = await db.scalars(
            select(SessionEvent).where(SessionEvent.session_number == number).order_by(SessionEvent.id)
        )
        return list(rows)


async def invoices_creating(server: RunningServer, number: int) -> int:
    """Invoices decided that have not reached the node yet."""
    async with server.app.state.service.db() as db:
        rows = await db.scalars(
            select(LightningInvoice.key).where(
                LightningInvoice.session_number == number, LightningInvoice.status == "creating"
            )
        )
        return len(list(rows))


async def each(sold: list[Sold], predicate: Any, timeout_s: float, what: str) -> None:
    """Bounded wait until ``predicate(s)`` holds for every car, re-checked on each charger's and each
    agent's changes."""
    try:
        async with asyncio.timeout(timeout_s):
            for s in sold:
                if not predicate(s):
                    waits = [
                        asyncio.ensure_future(s.cp.wait_for(lambda s=s: predicate(s), timeout_s)),
                        asyncio.ensure_future(s.agent.wait_for(lambda s=s: predicate(s), timeout_s)),
                    ]
                    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    for waiting in pending:
                        waiting.cancel()
                    for finished in done:
                        finished.result()
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}") from None


async def test_exposure_bound_holds_while_the_node_is_down(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    engine: SettlementEngine = server.app.state.settlement
    simnet = server.app.state.lightning.simnet
    async with fleet(server, api) as sold:
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_unpaid(engine, sold, stop))
        # every car pays its way for a while
        for s in sold:
            await s.cp.wait_status(1, "Charging", timeout_s=20)
        await each(sold, lambda s: s.agent.stats.invoices_paid >= 3, 30, "three paid invoices each")
        await simnet.begin_outage()
        try:
            # nobody can pay, satwatt cannot issue invoices: every session is cut once its allowance runs
            # out, whether its next invoice is unpaid or never reached the node
            await each(sold, lambda s: s.cp.connector(1).power_w() == 0, 10, "every charger cut")
            await asyncio.sleep(OUTAGE_S)  # the outage lasts (not a wait for a result)
            during = {s.number: [e.kind for e in await events_of(server, s.number)] for s in sold}
            never_issued = {s.number: await invoices_creating(server, s.number) for s in sold}
        finally:
            await simnet.end_outage()
        # the node is back: invoices are issued, paid, and every session charges again
        await each(sold, lambda s: s.cp.connector(1).power_w() > 0, 60, "every charger resumed")
        await each(sold, lambda s: s.agent.stats.invoices_paid >= 6, 30, "more paid invoices each")
        stop.set()
        await watcher
        for s in sold:
            await s.cp.unplug(1)
        stats = [await asyncio.wait_for(s.task, 30) for s in sold]

    peaks = {s.session_id: round(s.peak_unpaid_wh, 1) for s in sold}
    print(f"\nlargest unpaid energy per session (bound {BOUND_WH} Wh): {sorted(peaks.values())}")
    assert all(peak <= BOUND_WH for peak in peaks.values()), (peaks, BOUND_WH)
    # sessions whose next invoice never reached the node were cut like those whose invoice went unpaid
    print(f"sessions with an invoice stuck before the node during the outage: {never_issued}")
    assert any(never_issued.values()), never_issued
    for s, st in zip(sold, stats, strict=True):
        assert st.outcome == "settled", (s.session_id, st)
        kinds = [e.kind for e in await events_of(server, s.number)]
        cuts = [k for k in kinds if k in ("suspended", "resumed")]
        # every suspension carried out is logged before its resumption, and each has one
        assert cuts and cuts == ["suspended", "resumed"] * (len(cuts) // 2), (s.session_id, kinds)
        # the cut during the outage was logged while the node was still down
        assert "suspended" in during[s.number], (s.session_id, during[s.number])
        assert st.suspensions == cuts.count("suspended"), (s.session_id, st)
