"""``lightning-simnet pay``: pay a BOLT11 invoice from one node of a running simnet.

A car's wallet for the command line: with ``csms serve`` running (its embedded simnet keeps its files in
``satwatt-data/simnet``), ``lightning-simnet pay --node car1 lnbcrt...`` pays a walk-up session's
invoice. It is an ordinary LND client of the simnet (TLS cert, the node's admin macaroon, gRPC), so the
payment takes the same path as a real car's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from lightning import LightningError, PaymentFailed, decode_payreq
from lightning.lnd import LndBackend, LndConfig, LndConfigError, RetryPolicy
from lightning.simnet.simnet import ADDRESS_FILE, Simnet

DEFAULT_DATA_DIR = Path("satwatt-data/simnet")  # csms serve's default CSMS_DATA_DIR, plus /simnet


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lightning-simnet pay",
        description="Pay a BOLT11 invoice (lnbcrt...) from one node of a running simnet (a standalone "
        "lightning-simnet, or the one csms serve embeds), as an LND client of it.",
    )
    p.add_argument("bolt11", metavar="BOLT11", help="the invoice, e.g. a walk-up session's first invoice")
    p.add_argument("--node", default="car1", help="the paying node (default: car1)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"the simnet's directory: its tls.cert, <node>/admin.macaroon and {ADDRESS_FILE} "
        f"(default: {DEFAULT_DATA_DIR}, where csms serve's simnet keeps them; CSMS_DATA_DIR/simnet "
        "in general)",
    )
    p.add_argument(
        "--rpcserver",
        metavar="HOST:PORT",
        default=None,
        help=f"the simnet's gRPC address (default: read from DATA_DIR/{ADDRESS_FILE})",
    )
    p.add_argument(
        "--fee-limit-msat",
        type=int,
        default=None,
        help="the most routing fee to pay (default: 3%% of the amount, at least 2000 msat)",
    )
    p.add_argument("--amount-msat", type=int, default=None, help="the amount, for an invoice that names none")
    p.add_argument("--timeout", type=int, default=30, help="seconds the payment may take (default: 30)")
    return p


class PayError(Exception):
    """The payment could not be made; the message says why (and what to do)."""


def _config(args: argparse.Namespace) -> LndConfig:
    files = Simnet(args.data_dir)  # only its paths: tls.cert, <node>/admin.macaroon, the address file
    data_dir = files.data_dir
    cert = files.tls_cert_path
    if not cert.is_file():
        raise PayError(
            f"no simnet in {data_dir} (no tls.cert): start csms serve or lightning-simnet, or give "
            "--data-dir (csms serve keeps its simnet in CSMS_DATA_DIR/simnet)"
        )
    macaroon = files.macaroon_path(args.node)
    if not macaroon.is_file():
        nodes = sorted(d.name for d in data_dir.iterdir() if files.macaroon_path(d.name).is_file())
        raise PayError(f"the simnet in {data_dir} has no node {args.node!r} (nodes: {', '.join(nodes)})")
    address = args.rpcserver
    if address is None:
        address_file = files.address_path
        if not address_file.is_file():
            raise PayError(f"{address_file} does not exist: is the simnet running? (or give --rpcserver)")
        address = address_file.read_text().strip()
    try:
        return LndConfig.from_paths(address, cert, macaroon)
    except LndConfigError as exc:
        raise PayError(str(exc)) from None


async def pay(args: argparse.Namespace) -> str:
    """Pay ``args.bolt11``; the line to print on success."""
    try:
        request = decode_payreq(args.bolt11)
    except LightningError as exc:
        raise PayError(f"not a BOLT11 invoice: {exc}") from None
    amount_msat = request.amount_msat or args.amount_msat
    if not amount_msat:
        raise PayError("the invoice names no amount: give --amount-msat")
    fee_limit = args.fee_limit_msat if args.fee_limit_msat is not None else max(amount_msat * 3 // 100, 2000)
    # a simnet that is not running is said after a few seconds, not after a long backoff
    backend = LndBackend(_config(args), name=args.node, retry=RetryPolicy(unavailable_timeout_s=5))
    try:
        result = await backend.pay_invoice(
            args.bolt11,
            fee_limit_msat=fee_limit,
            timeout_s=args.timeout,
            amount_msat=None if request.amount_msat else amount_msat,
        )
    except PaymentFailed as exc:
        raise PayError(f"payment failed: {exc.reason}") from None
    except LightningError as exc:
        address = backend.config.grpc_address
        raise PayError(f"{type(exc).__name__}: {exc} (is the simnet at {address} running?)") from None
    finally:
        await backend.close()
    preimage = result.preimage.hex() if result.preimage else "?"
    return (
        f"paid {result.amount_msat} msat from {args.node} (routing fee {result.fee_msat} msat); "
        f"payment hash {result.payment_hash.hex()}, preimage {preimage}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        print(asyncio.run(pay(args)))
    except PayError as exc:
        print(f"lightning-simnet pay: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
