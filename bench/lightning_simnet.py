"""Benchmark: invoices created and settled per second between two simnet nodes over gRPC + TLS.

    .venv/bin/python bench/lightning_simnet.py              # simnet in a subprocess (default)
    .venv/bin/python bench/lightning_simnet.py --embedded   # simnet in this process's event loop
    .venv/bin/python bench/lightning_simnet.py -n 1000 -c 1 8 32

For each concurrency level it measures, with the lnd backend (satwatt) and a payer backend (car1):
  1. create:  AddInvoice (+ the LookupInvoice the backend does) per second
  2. cycle:   create invoice -> car1 pays (SendPaymentV2) -> satwatt sees the settle on its
              SubscribeInvoices stream; cycles per second and the create-to-settle-seen latency
Not part of the test suite. Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # no C-core INFO lines (GOAWAY at shutdown)
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning import InvoiceCursor, InvoiceState  # noqa: E402
from lightning.lnd import LndBackend, LndConfig  # noqa: E402
from lightning.simnet import NodeSpec, Simnet  # noqa: E402

AMOUNT_MSAT = 3_000  # 30 Wh at 100 sat/kWh, the Distributed Charge increment


async def start_subprocess_simnet(
    data_dir: Path, nodes: tuple[str, ...] = ("satwatt:1000000", "car1:100000000")
) -> tuple[asyncio.subprocess.Process, str]:
    """``lightning-simnet`` as a subprocess with ``nodes`` (NAME:BALANCE_SAT); returns it and its address."""
    node_args = [arg for node in nodes for arg in ("--node", node)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lightning.simnet",
        "--data-dir",
        str(data_dir),
        "--port",
        "0",
        "--admin-port",
        "-1",
        *node_args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    address = ""
    async with asyncio.timeout(30):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise RuntimeError("simnet exited before it was ready")
            if line.startswith("grpc"):
                address = line.split()[-1]
            if line.startswith("ready"):
                return proc, address


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_create(seller: LndBackend, n: int, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await seller.create_invoice(AMOUNT_MSAT, f"bench {i}", expiry_s=600)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - started)


async def bench_cycle(
    seller: LndBackend, payer: LndBackend, n: int, concurrency: int
) -> tuple[float, list[float]]:
    waiting: dict[bytes, asyncio.Future[float]] = {}
    cursor = InvoiceCursor()
    invoices = [await seller.create_invoice(1, "warm-up")]
    await payer.pay_invoice(invoices[0].bolt11, 10_000, 30)

    async def consume() -> None:
        async for invoice in seller.invoice_updates(cursor):
            if invoice.state is InvoiceState.SETTLED:
                fut = waiting.pop(invoice.payment_hash, None)
                if fut is not None and not fut.done():
                    fut.set_result(time.perf_counter())

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.2)  # let the subscription open (a benchmark, not a test)
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    loop = asyncio.get_running_loop()

    async def one(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            invoice = await seller.create_invoice(AMOUNT_MSAT, f"cycle {i}", expiry_s=600)
            fut: asyncio.Future[float] = loop.create_future()
            waiting[invoice.payment_hash] = fut
            await payer.pay_invoice(invoice.bolt11, fee_limit_msat=2_000, timeout_s=30)
            seen = await asyncio.wait_for(fut, 30)
            latencies.append(seen - t0)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    rate = n / (time.perf_counter() - started)
    consumer.cancel()
    return rate, latencies


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=400, help="invoices per measurement")
    parser.add_argument("-c", type=int, nargs="+", default=[1, 8, 32], help="concurrency levels")
    parser.add_argument("--embedded", action="store_true", help="run the simnet in this process")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="simnet-bench-") as tmp:
        data_dir = Path(tmp)
        proc = None
        simnet = None
        if args.embedded:
            simnet = Simnet(
                data_dir, port=0, nodes=[NodeSpec("satwatt", 1_000_000), NodeSpec("car1", 100_000_000)]
            )
            await simnet.start()
            address = simnet.address
        else:
            proc, address = await start_subprocess_simnet(data_dir)
        cert = data_dir / "tls.cert"
        seller = LndBackend(LndConfig.from_paths(address, cert, data_dir / "satwatt" / "admin.macaroon"))
        payer = LndBackend(LndConfig.from_paths(address, cert, data_dir / "car1" / "admin.macaroon"))
        mode = (
            "embedded (one event loop)"
            if args.embedded
            else "subprocess (simnet and client in two processes)"
        )
        print(f"simnet {mode}, gRPC+TLS on {address}, {args.n} invoices of {AMOUNT_MSAT} msat per row")
        print(f"{'concurrency':>11} {'create/s':>9} {'cycle/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        try:
            for concurrency in args.c:
                create_rate = await bench_create(seller, args.n, concurrency)
                cycle_rate, lat = await bench_cycle(seller, payer, args.n, concurrency)
                print(
                    f"{concurrency:>11} {create_rate:>9.0f} {cycle_rate:>8.0f} "
                    f"{statistics.median(lat) * 1000:>8.1f} {percentile(lat, 0.99) * 1000:>8.1f}"
                )
        finally:
            await seller.close()
            await payer.close()
            if simnet is not None:
                await simnet.stop()
            if proc is not None:
                proc.terminate()
                await proc.wait()
    print("cycle = create invoice (satwatt) -> pay (car1, SendPaymentV2) -> settle seen on SubscribeInvoices")


if __name__ == "__main__":
    asyncio.run(main())
