"""``python -m lightning.simnet`` / ``lightning-simnet``: run the simnet standalone.

Prints where the TLS cert and each node's macaroons are, an lndconnect URI per node, and (unless
``--admin-port -1``) the URL of a small JSON admin API on 127.0.0.1 for fault injection:

  GET  /faults              current fault settings
  POST /faults  {...}       change some (e.g. {"payment_latency_s": 2, "payment_failure_rate": 0.1})
  POST /outage  {"seconds": 5}   close the gRPC port for that long (state is kept)
  POST /unavailable {"on": true} answer every RPC with UNAVAILABLE
  POST /starting-up {"on": true} answer every RPC with LND's "starting up" error
  POST /mine    {"blocks": 6}    advance the block height (held HTLCs near expiry get canceled)
  GET  /nodes               names, pubkeys, balances
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.simnet.network import DEFAULT_NODES, AutoPay, Faults, FeePolicy, NodeSpec
from lightning.simnet.simnet import Simnet

log = logging.getLogger("lightning.simnet")


def _node(text: str) -> NodeSpec:
    name, _, balance = text.partition(":")
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise argparse.ArgumentTypeError(f"bad node name {name!r}")
    try:
        return NodeSpec(name, int(balance)) if balance else NodeSpec(name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad balance in {text!r}") from exc


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where it says something: not for options without a default (None,
    False) nor where the help already names the default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action) or text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lightning-simnet",
        description=(
            "A simulated Lightning network speaking LND's gRPC API (Lightning, Invoices, Router, "
            "State) on one TLS port; the macaroon presented selects the node. Invoices are signed "
            "regtest BOLT11 (lnbcrt...). State persists in DATA_DIR/simnet.db."
        ),
        epilog="Pay an invoice from a node of a running simnet (this one, or the one csms serve "
        "embeds): lightning-simnet pay [--node car1] BOLT11 (see lightning-simnet pay --help).",
        formatter_class=_DefaultsHelp,
    )
    p.add_argument(
        "--data-dir", type=Path, default=Path("satwatt-data/simnet"), help="state, cert, macaroons"
    )
    p.add_argument("--host", default="127.0.0.1", help="gRPC listen address")
    p.add_argument("--port", type=int, default=10009, help="gRPC TLS port (0 = a free port)")
    p.add_argument(
        "--node",
        action="append",
        type=_node,
        metavar="NAME[:BALANCE_SAT]",
        help="a node and its starting channel balance (repeatable; default: "
        + " ".join(spec.name for spec in DEFAULT_NODES)
        + ")",
    )
    p.add_argument("--hops", type=int, default=1, help="intermediate hops charged between two nodes")
    p.add_argument("--base-fee-msat", type=int, default=1000, help="base fee per hop")
    p.add_argument("--fee-ppm", type=int, default=1, help="proportional fee per hop (ppm)")
    p.add_argument("--rpc-latency", type=float, default=0.0, help="seconds added to every RPC")
    p.add_argument("--payment-latency", type=float, default=0.0, help="seconds a payment takes")
    p.add_argument("--failure-rate", type=float, default=0.0, help="fraction of payments that fail")
    p.add_argument(
        "--failure-reason", default="FAILURE_REASON_NO_ROUTE", help="LND failure reason of injected failures"
    )
    p.add_argument("--startup-delay", type=float, default=0.0, help="seconds of LND's 'starting up' phase")
    p.add_argument("--seed", type=int, default=None, help="seed of the failure injection RNG")
    p.add_argument(
        "--autopay-ms",
        type=_non_negative_int,
        default=None,
        metavar="MS",
        help="auto-pay: the payer node pays every invoice of the payee node MS milliseconds after "
        "its creation, through the normal payment path (off unless given; for fleet benchmarks)",
    )
    p.add_argument("--autopay-payer", default="car1", help="auto-pay: the paying node")
    p.add_argument("--autopay-payee", default="satwatt", help="auto-pay: the node whose invoices get paid")
    p.add_argument(
        "--admin-port", type=int, default=0, help="JSON admin API port on 127.0.0.1 (0 = free port, -1 = off)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


class AdminApi:
    """A deliberately tiny HTTP/1.1 JSON API (stdlib only), bound to 127.0.0.1."""

    def __init__(self, simnet: Simnet) -> None:
        self.simnet = simnet
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, port: int) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode("latin-1").strip()
            method, path, _ = ([*request_line.split(" ", 2), "", ""])[:3]
            length = 0
            while True:
                header = (await reader.readline()).decode("latin-1").strip()
                if not header:
                    break
                key, _, value = header.partition(":")
                if key.lower() == "content-length":
                    length = int(value.strip() or 0)
            body = await reader.readexactly(length) if length else b""
            status, payload = await self.route(method, path.split("?")[0], body)
        except Exception as exc:
            status, payload = 400, {"error": str(exc)}
        data = json.dumps(payload).encode()
        writer.write(
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
            + data
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def route(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        args: dict[str, Any] = json.loads(body) if body else {}
        sn = self.simnet
        if method == "GET" and path == "/faults":
            return 200, sn.faults.as_dict()
        if method == "POST" and path == "/faults":
            known = {f.name for f in dataclasses.fields(Faults)}
            unknown = set(args) - known
            if unknown:
                return 400, {"error": f"unknown fault settings: {sorted(unknown)}", "known": sorted(known)}
            for key, value in args.items():
                if key == "unavailable":
                    sn.set_unavailable(bool(value))
                elif key == "starting_up":
                    sn.set_starting_up(bool(value))
                else:
                    setattr(sn.faults, key, type(getattr(sn.faults, key))(value))
            return 200, sn.faults.as_dict()
        if method == "POST" and path == "/outage":
            await sn.outage(float(args.get("seconds", 5)))
            return 200, {"outage_s": float(args.get("seconds", 5))}
        if method == "POST" and path == "/unavailable":
            sn.set_unavailable(bool(args.get("on", True)))
            return 200, sn.faults.as_dict()
        if method == "POST" and path == "/starting-up":
            sn.set_starting_up(bool(args.get("on", True)))
            return 200, sn.faults.as_dict()
        if method == "POST" and path == "/mine":
            return 200, {"block_height": sn.mine_blocks(int(args.get("blocks", 1)))}
        if method == "GET" and path == "/nodes":
            return 200, [
                {"name": f.name, "pubkey": f.pubkey, "balance_msat": sn.balance_msat(f.name)}
                for f in sn.node_files()
            ]
        return 404, {"error": f"no route {method} {path}"}


async def run(args: argparse.Namespace) -> None:
    faults = Faults(
        rpc_latency_s=args.rpc_latency,
        payment_latency_s=args.payment_latency,
        payment_failure_rate=args.failure_rate,
        payment_failure_reason=args.failure_reason,
        starting_up=args.startup_delay > 0,
    )
    simnet = Simnet(
        args.data_dir,
        host=args.host,
        port=args.port,
        nodes=args.node or DEFAULT_NODES,
        fees=FeePolicy(hops=args.hops, base_fee_msat=args.base_fee_msat, fee_rate_ppm=args.fee_ppm),
        faults=faults,
        seed=args.seed,
        autopay=(
            AutoPay(payer=args.autopay_payer, payee=args.autopay_payee, delay_s=args.autopay_ms / 1000)
            if args.autopay_ms is not None
            else None
        ),
    )
    await simnet.start()
    admin = AdminApi(simnet)
    out = sys.stdout
    print(simnet.summary(), file=out)
    if args.admin_port >= 0:
        await admin.start(args.admin_port)
        print(f"admin     http://127.0.0.1:{admin.port}", file=out)
    print("ready", file=out, flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if args.startup_delay > 0:

        async def finish_startup() -> None:
            await asyncio.sleep(args.startup_delay)
            simnet.set_starting_up(False)
            log.info("simnet start-up phase over")

        startup = loop.create_task(finish_startup())
    try:
        await stop.wait()
    finally:
        if args.startup_delay > 0:
            startup.cancel()
        await admin.stop()
        await simnet.stop()


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["pay"]:  # lightning-simnet pay [--node car1] BOLT11
        from lightning.simnet.pay import main as pay_main

        pay_main(arguments[1:])
        return
    args = build_parser().parse_args(arguments)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(run(args))
    except ValueError as exc:  # a setting the simnet refused, e.g. an auto-pay node it does not have
        print(f"lightning-simnet: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
