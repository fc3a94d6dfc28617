"""Benchmark: satwatt's settlement against the simnet, end to end over real sockets.

    .venv/bin/python bench/settlement.py                       # 8 sessions, 10 increments each, 20 resumes
    .venv/bin/python bench/settlement.py --sessions 16 --increments 20 --resumes 40 --json out.json

It starts the simnet (one payer node per session) and satwatt (`csms serve`, SQLite in a temporary
directory unless --database-url, CSMS_LIGHTNING_BACKEND=lnd pointed at the simnet over gRPC + TLS +
macaroon) as two processes, connects one minimal OCPP 1.6 charger per session from this process, and
measures:

1. invoice throughput: each charger reports energy step by step; every step uses up the prepaid
   increment, so satwatt issues the next invoice, the car pays it over gRPC (SendPaymentV2), and
   satwatt credits it from the node's invoice stream. Reported: invoices issued and settled per second.
2. resume latency: a session that does not pay is cut (SetChargingProfile with limit 0); the car then
   pays, and the time from the payment's success to the ClearChargingProfile arriving at the charger
   is measured (median and p99).

Not part of the test suite; everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import websockets  # noqa: E402
from lightning_simnet import start_subprocess_simnet  # noqa: E402  (beside this script)
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402

from lightning.lnd import LndBackend, LndConfig  # noqa: E402

API_KEY = "bench-key"
console = Console(stderr=True)


@dataclass
class Charger:
    """A minimal OCPP 1.6 charger: it records when satwatt's calls arrive and answers Accepted."""

    charger_id: str
    connection: Any = None
    received: dict[str, list[float]] = field(default_factory=dict)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    replies: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None
    clock: float = field(default_factory=time.time)

    async def connect(self, url: str) -> None:
        self.connection = await websockets.connect(f"{url}/{self.charger_id}", subprotocols=["ocpp1.6"])  # type: ignore[list-item]
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.connection:
            message = json.loads(raw)
            if message[0] == 2:
                action = message[2]
                async with self.arrived:
                    self.received.setdefault(action, []).append(time.perf_counter())
                    self.arrived.notify_all()
                payload: dict[str, Any] = {"status": "Accepted"}
                if action == "GetConfiguration":
                    payload = {"configurationKey": []}
                await self.connection.send(json.dumps([3, message[1], payload]))
            elif message[1] in self.replies:
                self.replies.pop(message[1]).set_result(message)

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        message_id = str(uuid.uuid4())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.replies[message_id] = future
        await self.connection.send(json.dumps([2, message_id, action, payload]))
        reply = await asyncio.wait_for(future, 30)
        assert reply[0] == 3, reply
        return reply[2]

    async def wait_count(self, action: str, count: int) -> float:
        async with asyncio.timeout(60), self.arrived:
            await self.arrived.wait_for(lambda: len(self.received.get(action, [])) >= count)
        return self.received[action][count - 1]

    async def meter(self, tx: int, register_wh: int) -> None:
        self.clock += 10  # a reading every 10 s of the charger's clock (distinct timestamps)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock))
        await self.call(
            "MeterValues",
            {
                "connectorId": 1,
                "transactionId": tx,
                "meterValue": [
                    {
                        "timestamp": now,
                        "sampledValue": [
                            {"value": str(register_wh), "unit": "Wh"},
                            {"value": "11000", "measurand": "Power.Active.Import"},
                        ],
                    }
                ],
            },
        )

    async def close(self) -> None:
        await self.connection.close()
        if self.reader is not None:
            self.reader.cancel()


class Events:
    """A session's server-sent events, as a queue per kind."""

    def __init__(self, client: httpx.AsyncClient, session_id: str, token: str) -> None:
        self.queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.task = asyncio.create_task(self._follow(client, session_id, token))

    def queue(self, kind: str) -> asyncio.Queue[dict[str, Any]]:
        return self.queues.setdefault(kind, asyncio.Queue())

    async def _follow(self, client: httpx.AsyncClient, session_id: str, token: str) -> None:
        async with client.stream(
            "GET",
            f"/api/v1/sessions/{session_id}/events",
            headers={"Authorization": f"Bearer {token}"},
            timeout=None,
        ) as response:
            kind = ""
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    await self.queue(kind).put(json.loads(line[5:]))

    async def next(self, kind: str) -> dict[str, Any]:
        return await asyncio.wait_for(self.queue(kind).get(), 60)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start_simnet(data_dir: Path, cars: int) -> tuple[asyncio.subprocess.Process, str]:
    nodes = ("satwatt:1000000", *(f"car{i}:100000000" for i in range(1, cars + 1)))
    return await start_subprocess_simnet(data_dir, nodes)


async def start_satwatt(
    data_dir: Path, simnet_dir: Path, address: str, database_url: str | None
) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    env = {
        **os.environ,
        "CSMS_DATA_DIR": str(data_dir),
        "CSMS_PORT": str(port),
        "CSMS_API_KEY": API_KEY,
        "CSMS_LIGHTNING_BACKEND": "lnd",
        "CSMS_LND_GRPC": address,
        "CSMS_LND_TLS_CERT": str(simnet_dir / "tls.cert"),
        "CSMS_LND_MACAROON": str(simnet_dir / "satwatt" / "admin.macaroon"),
        "CSMS_SETTLEMENT_TICK_MS": "50",
        "CSMS_ALLOW_UNKNOWN_CHARGERS": "true",
        "CSMS_LOG_LEVEL": "WARNING",
        "CSMS_AUTO_MIGRATE": "true",
    }
    if database_url:
        env["CSMS_DATABASE_URL"] = database_url
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "csms",
        "serve",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(60), httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return process, port
            except httpx.TransportError:
                if process.returncode is not None:
                    raise RuntimeError("csms serve exited during start-up") from None
            await asyncio.sleep(0.1)


async def open_session(
    client: httpx.AsyncClient, ocpp_url: str, car: LndBackend, index: int, tariff_id: str
) -> tuple[Charger, Events, int, dict[str, Any]]:
    charger = Charger(f"BENCH-{index:03d}")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    await client.post("/api/v1/chargers", json={"id": charger.charger_id}, headers=headers)
    await client.patch(
        f"/api/v1/chargers/{charger.charger_id}", json={"tariff_id": tariff_id}, headers=headers
    )
    await charger.connect(ocpp_url)
    await charger.call("BootNotification", {"chargePointVendor": "bench", "chargePointModel": "b"})
    walk_up = (
        await client.post("/api/v1/sessions", json={"charger_id": charger.charger_id, "connector_id": 1})
    ).json()
    events = Events(client, walk_up["id"], walk_up["token"])
    await car.pay_invoice(walk_up["invoice"]["bolt11"], fee_limit_msat=10_000, timeout_s=30)
    await charger.wait_count("RemoteStartTransaction", 1)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    start = await charger.call(
        "StartTransaction",
        {"connectorId": 1, "idTag": walk_up["id_tag"] or "x", "meterStart": 0, "timestamp": now},
    )
    return charger, events, start["transactionId"], walk_up


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="satwatt-bench-") as tmp:
        simnet_dir = Path(tmp) / "simnet"
        simnet, address = await start_simnet(simnet_dir, args.sessions)
        satwatt, port = await start_satwatt(Path(tmp) / "satwatt", simnet_dir, address, args.database_url)
        cars = [
            LndBackend(
                LndConfig.from_paths(
                    address, simnet_dir / "tls.cert", simnet_dir / f"car{i + 1}" / "admin.macaroon"
                ),
                name=f"car{i + 1}",
            )
            for i in range(args.sessions)
        ]
        ocpp_url = f"ws://127.0.0.1:{port}/ocpp"
        results: dict[str, Any] = {
            "sessions": args.sessions,
            "increments": args.increments,
            "database": "postgresql" if args.database_url else "sqlite",
        }
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                tariff = (
                    await client.post(
                        "/api/v1/tariffs",
                        headers={"Authorization": f"Bearer {API_KEY}"},
                        json={
                            "name": "bench",
                            "increment_wh": 100,
                            "allowance_wh": 20,
                            "grace_s": 3600,
                            "stop_after_s": 3600,
                            "min_invoice_interval_s": 1,
                        },
                    )
                ).json()
                opened = await asyncio.gather(
                    *(open_session(client, ocpp_url, cars[i], i, tariff["id"]) for i in range(args.sessions))
                )
                # 1. invoice throughput
                total = args.sessions * args.increments
                with Progress(console=console, transient=True) as progress:
                    bar = progress.add_task("invoices issued and settled", total=total)

                    async def stream(i: int) -> None:
                        charger, events, tx, _ = opened[i]
                        for step in range(1, args.increments + 1):
                            await charger.meter(tx, step * 100)
                            invoice = await events.next("invoice")
                            await cars[i].pay_invoice(invoice["bolt11"], fee_limit_msat=10_000, timeout_s=30)
                            await events.next("paid")
                            progress.advance(bar)

                    for _charger, events, _tx, _walk_up in opened:  # drain the first invoice's events
                        await events.next("invoice")
                        await events.next("paid")
                    started = time.perf_counter()
                    await asyncio.gather(*(stream(i) for i in range(args.sessions)))
                    elapsed = time.perf_counter() - started
                results["invoices"] = total
                results["invoices_per_s"] = round(total / elapsed, 1)
                results["throughput_elapsed_s"] = round(elapsed, 2)
                # 2. resume latency: cut a session that does not pay, then pay and time the resume
                latencies: list[float] = []
                per_session = max(1, args.resumes // args.sessions)

                async def resumes(i: int) -> None:
                    charger, events, tx, _ = opened[i]
                    register = args.increments * 100
                    for round_ in range(1, per_session + 1):
                        register += 100
                        await charger.meter(tx, register)  # uses the credit: the next invoice comes
                        invoice = await events.next("invoice")
                        register += 30
                        await charger.meter(tx, register)  # beyond the allowance, unpaid: cut
                        await charger.wait_count("SetChargingProfile", round_)
                        await cars[i].pay_invoice(invoice["bolt11"], fee_limit_msat=10_000, timeout_s=30)
                        paid_at = time.perf_counter()
                        resumed_at = await charger.wait_count("ClearChargingProfile", round_)
                        latencies.append((resumed_at - paid_at) * 1000)
                        await events.next("paid")

                await asyncio.gather(*(resumes(i) for i in range(args.sessions)))
                latencies.sort()
                results["resumes"] = len(latencies)
                results["resume_ms_median"] = round(statistics.median(latencies), 1)
                results["resume_ms_p99"] = round(
                    latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1
                )
                results["resume_ms_max"] = round(latencies[-1], 1)
                for charger, events, _, _ in opened:
                    events.task.cancel()
                    await charger.close()
        finally:
            for car in cars:
                await car.close()
            for process in (satwatt, simnet):
                process.terminate()
                await process.wait()
        return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sessions", type=int, default=8, help="concurrent paid sessions (one car node each)"
    )
    parser.add_argument("--increments", type=int, default=10, help="invoices paid per session in part 1")
    parser.add_argument("--resumes", type=int, default=24, help="suspend/pay/resume cycles in part 2, in all")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--database-url",
        help="an empty database to use instead of a temporary SQLite file "
        "(e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/bench)",
    )
    args = parser.parse_args()
    results = asyncio.run(run(args))
    console.print(f"sessions                     {results['sessions']} ({results['database']})")
    console.print(
        f"invoices issued and settled  {results['invoices']} in {results['throughput_elapsed_s']} s "
        f"= {results['invoices_per_s']} /s"
    )
    console.print(
        f"payment -> resume command    median {results['resume_ms_median']} ms, "
        f"p99 {results['resume_ms_p99']} ms, max {results['resume_ms_max']} ms "
        f"({results['resumes']} resumes)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
