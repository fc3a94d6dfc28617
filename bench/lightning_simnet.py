"""Benchmark: invoices created and settled per second between simnet nodes over gRPC + TLS.

    .venv/bin/python bench/lightning_simnet.py              # simnet in a subprocess (default)
    .venv/bin/python bench/lightning_simnet.py --embedded   # simnet in this process's event loop
    .venv/bin/python bench/lightning_simnet.py -n 2000 -c 1 32 128 512

For each concurrency level (calls in flight at once, pipelined over each backend's one channel) it
measures, with the lnd backend that satwatt uses:
  1. create:  create_invoice (one AddInvoice) per second, by satwatt
  2. cycle:   create invoice (satwatt) -> car1 pays (SendPaymentV2 over its own channel) ->
              satwatt sees the settle on its SubscribeInvoices stream; cycles per second and the
              create-to-settle-seen latency
  3. autopay: create invoice (node "station") -> the simnet's auto-pay (car2 pays, in the node, after
              0 ms) -> the settle seen on station's stream: invoices issued and settled per second
              when the payer is not a gRPC client
Not part of the test suite. Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # no C-core INFO lines (GOAWAY at shutdown)
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning import InvoiceState  # noqa: E402
from lightning.lnd import LndBackend, LndConfig  # noqa: E402
from lightning.simnet import AutoPay, NodeSpec, Simnet  # noqa: E402

AMOUNT_MSAT = 3_000  # 30 Wh at 100 sat/kWh, the Distributed Charge increment
NODES = ("satwatt:1000000", "car1:100000000", "station:1000000", "car2:100000000")
AUTOPAY = AutoPay(payer="car2", payee="station", delay_s=0.0)


async def start_subprocess_simnet(
    data_dir: Path,
    nodes: tuple[str, ...] = ("satwatt:1000000", "car1:100000000"),
    extra: tuple[str, ...] = (),
) -> tuple[asyncio.subprocess.Process, str]:
    """``lightning-simnet`` as a subprocess with ``nodes`` (NAME:BALANCE_SAT) and ``extra`` flags;
    returns it and its address."""
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
        *extra,
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


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) of this process (None) or of process ``pid`` (Linux /proc)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU microseconds per operation of the client and of the simnet: steadier than rates on a
    shared machine (a rate is bounded by 1e6 / the busier process's figure on a core of its own)."""

    def __init__(self, simnet_pid: int | None) -> None:
        self.simnet_pid = simnet_pid

    def start(self) -> None:
        self.c0 = cpu_seconds(None)
        self.s0 = cpu_seconds(self.simnet_pid) if self.simnet_pid else 0.0

    def per_op_us(self, n: int) -> tuple[float, float | None]:
        client = (cpu_seconds(None) - self.c0) / n * 1e6
        if self.simnet_pid is None:
            return client, None
        return client, (cpu_seconds(self.simnet_pid) - self.s0) / n * 1e6


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
    seller: LndBackend, payer: LndBackend | None, n: int, concurrency: int
) -> tuple[float, list[float]]:
    """Full cycles; ``payer`` None: the simnet's auto-pay pays (the seller must be its payee)."""
    waiting: dict[bytes, asyncio.Future[float]] = {}
    early: dict[bytes, float] = {}
    loop = asyncio.get_running_loop()
    cursor = await seller.current_cursor()
    subscribed = asyncio.Event()

    async def consume() -> None:
        async for invoice in seller.invoice_updates(cursor):
            subscribed.set()
            if invoice.state is InvoiceState.SETTLED:
                fut = waiting.pop(invoice.payment_hash, None)
                if fut is None:
                    early[invoice.payment_hash] = time.perf_counter()  # auto-pay: before create returned
                elif not fut.done():
                    fut.set_result(time.perf_counter())

    consumer = asyncio.create_task(consume())
    # The stream is live once it delivered the warm-up invoice's add.
    warm = await seller.create_invoice(1, "warm-up")
    await asyncio.wait_for(subscribed.wait(), 30)
    if payer is not None:
        await payer.pay_invoice(warm.bolt11, 10_000, 30)
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            fut: asyncio.Future[float] = loop.create_future()
            invoice = await seller.create_invoice(AMOUNT_MSAT, f"cycle {i}", expiry_s=600)
            if invoice.payment_hash in early:
                fut.set_result(early.pop(invoice.payment_hash))
            else:
                waiting[invoice.payment_hash] = fut
            if payer is not None:
                await payer.pay_invoice(invoice.bolt11, fee_limit_msat=2_000, timeout_s=30)
            seen = await asyncio.wait_for(fut, 30)
            latencies.append(seen - t0)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    rate = n / (time.perf_counter() - started)
    consumer.cancel()
    return rate, latencies


def _record(
    kind: str, concurrency: int, rate: float, lat: list[float] | None, cpu: tuple[float, float | None]
) -> dict[str, float | int | str | None]:
    return {
        "kind": kind,
        "concurrency": concurrency,
        "per_s": round(rate, 1),
        "p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
        "p99_ms": round(percentile(lat, 0.99) * 1000, 1) if lat else None,
        "client_cpu_us_per_op": round(cpu[0]),
        "simnet_cpu_us_per_op": round(cpu[1]) if cpu[1] is not None else None,
    }


def _row(
    kind: str, concurrency: int, rate: float, lat: list[float] | None, cpu: tuple[float, float | None]
) -> str:
    if lat:
        tail = f"{statistics.median(lat) * 1000:>8.1f} {percentile(lat, 0.99) * 1000:>8.1f}"
    else:
        tail = f"{'':>8} {'':>8}"
    client_us, simnet_us = cpu
    simnet = f"{simnet_us:>10.0f}" if simnet_us is not None else f"{'(same)':>10}"
    return f"{kind:>8} {concurrency:>11} {rate:>8.0f} {tail} {client_us:>10.0f} {simnet}"


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=1000, help="invoices per measurement")
    parser.add_argument("-c", type=int, nargs="+", default=[1, 32, 128], help="concurrency levels")
    parser.add_argument("--embedded", action="store_true", help="run the simnet in this process")
    parser.add_argument(
        "--only",
        choices=("create", "cycle", "autopay"),
        nargs="+",
        default=["create", "cycle", "autopay"],
        help="which measurements to run",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    records: list[dict[str, float | int | str | None]] = []
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="simnet-bench-") as tmp:
        data_dir = Path(tmp)
        proc = None
        simnet = None
        if args.embedded:
            nodes = [NodeSpec(name, int(sat)) for name, sat in (n.split(":") for n in NODES)]
            simnet = Simnet(data_dir, port=0, nodes=nodes, autopay=AUTOPAY)
            await simnet.start()
            address = simnet.address
        else:
            autopay_flags = (
                "--autopay-ms",
                "0",
                "--autopay-payer",
                AUTOPAY.payer,
                "--autopay-payee",
                AUTOPAY.payee,
            )
            proc, address = await start_subprocess_simnet(data_dir, NODES, autopay_flags)
        cert = data_dir / "tls.cert"

        def backend(node: str) -> LndBackend:
            return LndBackend(LndConfig.from_paths(address, cert, data_dir / node / "admin.macaroon"))

        seller, payer, station = backend("satwatt"), backend("car1"), backend(AUTOPAY.payee)
        mode = (
            "embedded (one event loop)"
            if args.embedded
            else "subprocess (simnet and client in two processes)"
        )
        print(f"simnet {mode}, gRPC+TLS on {address}, {args.n} invoices of {AMOUNT_MSAT} msat per row")
        print(
            f"{'kind':>8} {'concurrency':>11} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'client us':>10} {'simnet us':>10}"
        )
        meter = CpuMeter(proc.pid if proc is not None else None)
        try:
            for concurrency in args.c:
                if "create" in args.only:
                    meter.start()
                    rate = await bench_create(seller, args.n, concurrency)
                    cpu = meter.per_op_us(args.n)
                    print(_row("create", concurrency, rate, None, cpu))
                    records.append(_record("create", concurrency, rate, None, cpu))
                if "cycle" in args.only:
                    meter.start()
                    rate, lat = await bench_cycle(seller, payer, args.n, concurrency)
                    cpu = meter.per_op_us(args.n)
                    print(_row("cycle", concurrency, rate, lat, cpu))
                    records.append(_record("cycle", concurrency, rate, lat, cpu))
                if "autopay" in args.only:
                    meter.start()
                    rate, lat = await bench_cycle(station, None, args.n, concurrency)
                    cpu = meter.per_op_us(args.n)
                    print(_row("autopay", concurrency, rate, lat, cpu))
                    records.append(_record("autopay", concurrency, rate, lat, cpu))
        finally:
            for b in (seller, payer, station):
                await b.close()
            if simnet is not None:
                await simnet.stop()
            if proc is not None:
                proc.terminate()
                await proc.wait()
    if args.json is not None:
        result = {
            "benchmark": "bench/lightning_simnet.py",
            "mode": "embedded" if args.embedded else "subprocess",
            "invoices_per_row": args.n,
            "amount_msat": AMOUNT_MSAT,
            "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "cpus": os.cpu_count(),
            "rows": records,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print("create  = create_invoice (one AddInvoice); latency of a cycle: create -> settle seen")
    print("client us / simnet us = CPU microseconds per operation in each process (embedded: one process)")
    print("cycle   = create (satwatt) -> car1 pays over gRPC (SendPaymentV2) -> settle seen on the stream")
    print("autopay = create (station) -> the simnet's car2 pays it in the node -> settle seen on the stream")


if __name__ == "__main__":
    asyncio.run(main())
