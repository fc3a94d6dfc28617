"""kill -9 under a paying fleet (issue 8), bounded in time: nothing lost, nothing credited twice.

    .venv/bin/python bench/kill9.py --chargers 6 --kills 10 --duration 90 [--seed 1] [--json out.json]

It starts a simnet in this process on a free port (the Lightning node, which therefore survives every
death of satwatt), and `csms serve` as a subprocess (bench/satwatt_server.py: SQLite in a fresh data
directory, or `--database-url` for PostgreSQL) with CSMS_LIGHTNING_BACKEND=lnd pointing at the simnet
over gRPC + TLS + macaroon. Simulated DC chargers (chargepoint_sim, odd 1.6J, even 2.0.1) sell walk-up
sessions again and again to cars whose payer agents (chargepoint_sim.payer.PayerAgent) pay from their
own simnet nodes. While they do, satwatt is killed with SIGKILL `--kills` times at random moments (seeded)
and started again on the same data. Then the cars unplug, every session is brought to its end, and:

* every invoice of satwatt's node that is SETTLED is credited (status paid) in exactly one session's
  ledger, and every invoice paid in a ledger is SETTLED at the node
  (`GET /api/v1/sessions/{id}/ledger?reconcile=true`: no mismatches);
* no payment hash appears twice; no invoice exists at the node that no ledger knows;
* no session's energy is below what its charger metered and had acknowledged (StopTransaction /
  TransactionEvent Ended answered).

It prints restarts, sessions, invoices reconciled and every discrepancy, and exits 1 on one (2 when the
run itself failed: satwatt did not come back, a session never closed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.satwatt_server import (
    CHARGER_PASSWORD,
    SatwattServer,
    free_port,
    migrate,
    operator,
    register_chargers,
)
from chargepoint_sim import ChargePoint, ChargePointOptions, ChargerSpec, create_charge_point
from chargepoint_sim.payer import PayerAgent
from lightning.lnd import LndBackend
from lightning.lnd.config import LndConfig
from lightning.simnet import NodeSpec, Simnet

log = logging.getLogger("kill9")

# small increments and allowance, so a run of a minute or two has many invoices per session
TARIFF = {
    "price_msat_per_kwh": 100_000,
    "increment_wh": 20,
    "min_invoice_interval_s": 1,
    "allowance_wh": 20,
    "grace_s": 30,
    "stop_after_s": 600,
    "invoice_expiry_s": 600,
    "session_fee_msat": 1_000,
}


@dataclass
class Sale:
    """One walk-up session as the charger and the car saw it."""

    charger_id: str
    session_id: str
    metered_wh: int | None = None  # meterStop - meterStart, once the charger's stop was acknowledged
    outcome: str | None = None
    paid_by_car: int = 0


@dataclass
class Run:
    sales: list[Sale] = field(default_factory=list)
    restarts: int = 0
    errors: list[str] = field(default_factory=list)


async def walk_up(server: SatwattServer, charger_id: str, deadline: float) -> dict[str, Any]:
    """POST /api/v1/sessions, retried while satwatt is down or the charger not yet back."""
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as client:
        while True:
            try:
                reply = await client.post(
                    "/api/v1/sessions", json={"charger_id": charger_id, "connector_id": 1}
                )
                if reply.status_code == 201:
                    return dict(reply.json())
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{charger_id}: no walk-up session")
            await asyncio.sleep(0.3)


async def charger_loop(
    server: SatwattServer,
    simnet: Simnet,
    cp: ChargePoint,
    car: str,
    run: Run,
    stop_at: float,
    rng: random.Random,
) -> None:
    """Sell, charge for a few seconds, unplug, wait for the session to close; again until ``stop_at``."""
    backend = LndBackend(LndConfig.from_simnet(simnet, car), name=car)
    try:
        while time.monotonic() < stop_at:
            await cp.plug_in(1, ev="sedan", soc=0.2)
            created = await walk_up(server, cp.options.id, stop_at + 120)
            sale = Sale(cp.options.id, created["id"])
            run.sales.append(sale)
            agent = PayerAgent(
                server.http, backend, name=car, session_token=created["token"], session_id=created["id"]
            )
            task = asyncio.create_task(agent.run())
            try:
                with contextlib.suppress(TimeoutError):
                    await cp.wait_status(1, "Charging", timeout_s=30)
                await asyncio.sleep(rng.uniform(3, 8))  # the car charges (not a wait for a result)
                await cp.unplug(1)
                tx = cp.connector(1).last_tx
                stats = await asyncio.wait_for(asyncio.shield(task), 180)
                sale.outcome, sale.paid_by_car = stats.outcome, stats.paid_msat
                if tx is not None and tx.meter_stop_wh is not None:
                    sale.metered_wh = tx.meter_stop_wh - tx.meter_start_wh
            except TimeoutError:
                run.errors.append(f"session {sale.session_id} at {sale.charger_id} never closed")
                task.cancel()
                return
    finally:
        await backend.close()


async def killer(server: SatwattServer, run: Run, kills: int, stop_at: float, rng: random.Random) -> None:
    """SIGKILL satwatt ``kills`` times at random moments before ``stop_at``, restarting it each time."""
    start = time.monotonic()
    moments = sorted(rng.uniform(start + 3, stop_at) for _ in range(kills))
    for moment in moments:
        await asyncio.sleep(max(0.0, moment - time.monotonic()))
        await server.kill()
        await server.start(timeout_s=90)
        run.restarts += 1
        log.info("killed and restarted satwatt (%d/%d)", run.restarts, kills)


async def reconcile(server: SatwattServer, simnet: Simnet, run: Run) -> dict[str, Any]:
    discrepancies: list[str] = []
    paid_hashes: Counter[str] = Counter()
    all_hashes: Counter[str] = Counter()
    invoices = settled_in_ledgers = 0
    async with operator(server.http) as client:
        for sale in run.sales:
            reply = await client.get(
                f"/api/v1/sessions/{sale.session_id}/ledger", params={"reconcile": "true"}
            )
            if reply.status_code != 200:
                discrepancies.append(f"{sale.session_id}: ledger answered {reply.status_code}")
                continue
            ledger = reply.json()
            for key in ledger["mismatches"]:
                discrepancies.append(
                    f"{sale.session_id}: invoice {key} paid in satwatt != SETTLED at the node"
                )
            for entry in ledger["invoices"]:
                invoices += 1
                all_hashes[entry["payment_hash"]] += 1
                if entry["status"] == "paid":
                    paid_hashes[entry["payment_hash"]] += 1
                    settled_in_ledgers += 1
                if entry["bolt11"] and str(entry["node_state"]).startswith("unknown"):
                    discrepancies.append(f"{sale.session_id}: invoice {entry['key']}: {entry['node_state']}")
            session = ledger["session"]
            if sale.metered_wh is not None and (session.get("energy_wh") or 0) < sale.metered_wh:
                discrepancies.append(
                    f"{sale.session_id}: energy {session.get('energy_wh')} Wh < {sale.metered_wh} Wh metered"
                )
            if sale.outcome is None:
                discrepancies.append(f"{sale.session_id}: never closed (state {session.get('state')})")
    discrepancies += [f"payment hash {h} in {n} invoices" for h, n in all_hashes.items() if n > 1]
    seller = LndBackend(LndConfig.from_simnet(simnet, "satwatt"), name="satwatt")
    try:
        node_invoices, _, _ = await seller.list_invoices()
    finally:
        await seller.close()
    settled_at_node = {i.payment_hash_hex for i in node_invoices if i.state.value == "SETTLED"}
    for payment_hash in settled_at_node:
        if paid_hashes[payment_hash] != 1:
            discrepancies.append(
                f"settled at the node, credited {paid_hashes[payment_hash]} times: {payment_hash}"
            )
    unknown = {i.payment_hash_hex for i in node_invoices} - set(all_hashes)
    discrepancies += [f"invoice at the node that no ledger knows: {h}" for h in sorted(unknown)]
    return {
        "sessions": len(run.sales),
        "sessions_closed": sum(s.outcome is not None for s in run.sales),
        "outcomes": dict(Counter(s.outcome for s in run.sales)),
        "invoices_in_ledgers": invoices,
        "invoices_settled_at_node": len(settled_at_node),
        "invoices_reconciled": settled_in_ledgers,
        "energy_checked_sessions": sum(s.metered_wh is not None for s in run.sales),
        "discrepancies": discrepancies,
    }


async def main(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    run = Run()
    with tempfile.TemporaryDirectory(prefix="satwatt-kill9-") as tmp:
        work = Path(tmp)
        cars = [f"car{i}" for i in range(1, args.chargers + 1)]
        simnet = Simnet(
            work / "simnet", port=0, nodes=(NodeSpec("satwatt", 1_000_000), *(NodeSpec(c) for c in cars))
        )
        await simnet.start()
        if args.database_url:
            await migrate(args.database_url)
        server = SatwattServer(
            work / "satwatt",
            free_port(),
            args.database_url,
            env_extra={
                "CSMS_LIGHTNING_BACKEND": "lnd",
                "CSMS_LND_GRPC": simnet.address,
                "CSMS_LND_TLS_CERT": str(simnet.tls_cert_path),
                "CSMS_LND_MACAROON": str(simnet.macaroon_path("satwatt", "admin")),
                "CSMS_SETTLEMENT_TICK_MS": "100",
                "CSMS_METER_SAMPLE_INTERVAL_S": "1",
            },
        )
        chargers: list[ChargePoint] = []
        started = time.monotonic()
        try:
            await server.start()
            ids = [f"K9-{i}" for i in range(1, args.chargers + 1)]
            async with operator(server.http) as client:
                await register_chargers(client, ids)
                tariff = (await client.post("/api/v1/tariffs", json={"name": "kill9", **TARIFF})).json()
                for charger_id in ids:
                    await client.patch(f"/api/v1/chargers/{charger_id}", json={"tariff_id": tariff["id"]})
            for i, charger_id in enumerate(ids, 1):
                cp = create_charge_point(
                    ChargePointOptions(
                        id=charger_id,
                        csms_url=server.ocpp,
                        protocol="1.6" if i % 2 else "2.0.1",
                        password=CHARGER_PASSWORD,
                        reconnect_min_s=0.1,
                        reconnect_max_s=1.0,
                        call_timeout_s=10.0,
                        message_retry_s=0.5,
                        message_attempts=100,  # keep a StopTransaction until satwatt is back
                        charger=ChargerSpec.dc(50),
                    )
                )
                await cp.start()
                chargers.append(cp)
            for cp in chargers:
                await cp.wait_online(30)
            stop_at = time.monotonic() + args.duration
            loops = [
                asyncio.create_task(charger_loop(server, simnet, cp, car, run, stop_at, rng))
                for cp, car in zip(chargers, cars, strict=True)
            ]
            await killer(server, run, args.kills, stop_at, rng)
            await asyncio.gather(*loops)
            figures = await reconcile(server, simnet, run)
        except Exception as exc:  # the run itself failed: say why and where satwatt's log is
            print(f"kill9: run failed: {type(exc).__name__}: {exc}\n{server.log_tail()}", file=sys.stderr)
            return 2
        finally:
            for cp in chargers:
                with contextlib.suppress(Exception):
                    await cp.stop()
            await server.stop()
            await simnet.stop()
    figures = {
        "database": "postgresql" if args.database_url else "sqlite",
        "chargers": args.chargers,
        "kills": args.kills,
        "restarts": run.restarts,
        "duration_s": args.duration,
        "wall_s": round(time.monotonic() - started, 1),
        "seed": args.seed,
        **figures,
    }
    figures["discrepancies"] += run.errors
    print(
        f"kill9: {figures['restarts']} restarts, {figures['sessions']} sessions "
        f"({figures['sessions_closed']} closed: {figures['outcomes']}), "
        f"{figures['invoices_reconciled']} invoices reconciled "
        f"({figures['invoices_settled_at_node']} settled at the node, "
        f"{figures['invoices_in_ledgers']} issued), "
        f"energy checked on {figures['energy_checked_sessions']} sessions, "
        f"{len(figures['discrepancies'])} discrepancies"
    )
    for line in figures["discrepancies"]:
        print(f"  DISCREPANCY {line}")
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(figures, indent=2) + "\n")
    return 1 if figures["discrepancies"] else 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chargers", type=int, default=6)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--duration", type=float, default=90.0, help="seconds of selling and killing")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", default=None, help="PostgreSQL (asyncpg URL); default SQLite")
    parser.add_argument("--json", default=None, help="write the figures here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main(parse())))
