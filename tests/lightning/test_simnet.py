"""The simnet itself: persistence across restarts, files it writes, LND details, the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning import InvoiceCursor, InvoiceState, PaymentStatus
from lightning.lnd import LndBackend, LndConfig
from lightning.simnet import Simnet
from lightning.simnet import macaroons as mac

from .conftest import FAST_RETRY, NODES, wait_for

REPO = Path(__file__).resolve().parents[2]


async def test_files_written(simnet: Simnet) -> None:
    assert simnet.tls_cert_path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert simnet.port > 0
    for node in ("satwatt", "car1", "car2", "wallet"):
        for kind in ("admin", "invoice", "readonly"):
            path = simnet.macaroon_path(node, kind)
            raw = path.read_bytes()
            assert raw[0] == 2  # binary V2 macaroon, like LND's files
            name, perms, _ = mac.identify(raw)
            assert name == node and perms == mac.MACAROON_KINDS[kind]
            assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert "offchain:write" not in mac.INVOICE_PERMS


async def test_state_survives_restart(simnet_dir: Path) -> None:
    async with Simnet(simnet_dir, port=0, nodes=NODES) as first:
        port = first.port
        seller = LndBackend(LndConfig.from_simnet(first, "satwatt"), retry=FAST_RETRY)
        payer = LndBackend(LndConfig.from_simnet(first, "car1"), retry=FAST_RETRY)
        paid = await seller.create_invoice(10_000, "paid")
        result = await payer.pay_invoice(paid.bolt11, 5_000, 5)
        open_invoice = await seller.create_invoice(20_000, "open")
        balances = {n: first.balance_msat(n) for n in ("satwatt", "car1")}
        pubkey = first.pubkey("satwatt")
        macaroon = first.macaroon_path("satwatt").read_bytes()
        await seller.close()
        await payer.close()

    async with Simnet(simnet_dir, port=port, nodes=NODES) as second:
        assert second.macaroon_path("satwatt").read_bytes() == macaroon
        assert second.pubkey("satwatt") == pubkey
        assert {n: second.balance_msat(n) for n in balances} == balances
        seller = LndBackend(LndConfig.from_simnet(second, "satwatt"), retry=FAST_RETRY)
        payer = LndBackend(LndConfig.from_simnet(second, "car1"), retry=FAST_RETRY)
        try:
            again = await seller.lookup_invoice(paid.payment_hash)
            assert again.state is InvoiceState.SETTLED and again.settle_index == 1
            assert again.preimage == result.preimage and again.bolt11 == paid.bolt11
            assert (await seller.lookup_invoice(open_invoice.payment_hash)).state is InvoiceState.OPEN
            # The payer's payment record persisted too: paying again is "already paid".
            assert (await payer.pay_invoice(paid.bolt11, 5_000, 5)) == result
            # Indexes continue where they were.
            nxt = await seller.create_invoice(1_000)
            assert nxt.add_index == 3
            await payer.pay_invoice(open_invoice.bolt11, 5_000, 5)
            assert (await seller.lookup_invoice(open_invoice.payment_hash)).settle_index == 2
            events = []
            async for invoice in seller.invoice_updates(InvoiceCursor(1, 1)):
                events.append((invoice.add_index, invoice.state))
                if len(events) == 2:
                    break
            assert events == [(3, InvoiceState.OPEN), (2, InvoiceState.SETTLED)]
        finally:
            await seller.close()
            await payer.close()


async def test_held_payment_survives_restart(simnet_dir: Path) -> None:
    import hashlib
    import secrets

    preimage = secrets.token_bytes(32)
    payment_hash = hashlib.sha256(preimage).digest()
    async with Simnet(simnet_dir, port=0, nodes=NODES) as first:
        port = first.port
        seller = LndBackend(LndConfig.from_simnet(first, "satwatt"), retry=FAST_RETRY)
        hold = await seller.create_hold_invoice(payment_hash, 50_000)
        held = await first.pay_direct("car1", hold.bolt11)
        assert held.status == 1  # IN_FLIGHT, HTLC held
        await seller.close()
    async with Simnet(simnet_dir, port=port, nodes=NODES) as second:
        seller = LndBackend(LndConfig.from_simnet(second, "satwatt"), retry=FAST_RETRY)
        payer = LndBackend(LndConfig.from_simnet(second, "car1"), retry=FAST_RETRY)
        try:
            assert (await seller.lookup_invoice(payment_hash)).state is InvoiceState.ACCEPTED
            tracking = asyncio.create_task(payer.pay_invoice(hold.bolt11, 5_000, 5))
            await wait_for(lambda: payer.health.last_success_at is not None)
            await seller.settle_hold_invoice(preimage)
            result = await asyncio.wait_for(tracking, 5)
            assert result.status is PaymentStatus.SUCCEEDED and result.preimage == preimage
        finally:
            await seller.close()
            await payer.close()


async def test_port_in_use_is_a_clear_error(simnet: Simnet, tmp_path: Path) -> None:
    other = Simnet(tmp_path / "other", port=simnet.port, nodes=NODES)
    with pytest.raises(OSError, match="cannot listen"):
        await other.start()
    assert other.network is None  # cleaned up


def test_cli_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lightning.simnet", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    for flag in ("--data-dir", "--port", "--node", "--payment-latency", "--failure-rate", "--admin-port"):
        assert flag in out


@pytest.mark.skipif(os.name != "posix", reason="uses a subprocess with signals")
async def test_cli_runs_and_prints_paths(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lightning.simnet",
        "--data-dir",
        str(tmp_path / "sn"),
        "--port",
        "0",
        "--admin-port",
        "0",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(20):
            while not any(line.startswith("ready") for line in lines):
                line = (await proc.stdout.readline()).decode()
                assert line, "".join(lines)
                lines.append(line)
        text = "".join(lines)
        assert str(tmp_path / "sn" / "tls.cert") in text
        assert str(tmp_path / "sn" / "satwatt" / "admin.macaroon") in text
        assert "lndconnect://" in text
        grpc_line = next(line for line in lines if line.startswith("grpc"))
        address = grpc_line.split()[-1]
        admin_line = next(line for line in lines if line.startswith("admin"))
        admin_url = admin_line.split()[-1]

        backend = LndBackend(
            LndConfig.from_paths(
                address, tmp_path / "sn" / "tls.cert", tmp_path / "sn" / "car1" / "admin.macaroon"
            )
        )
        try:
            assert (await backend.get_info()).alias == "car1"
        finally:
            await backend.close()

        import httpx

        async with httpx.AsyncClient(base_url=admin_url) as client:
            faults = (await client.get("/faults")).json()
            assert faults["payment_latency_s"] == 0
            updated = (await client.post("/faults", json={"payment_latency_s": 0.5})).json()
            assert updated["payment_latency_s"] == 0.5
            assert (await client.post("/faults", json={"nope": 1})).status_code == 400
            nodes = (await client.get("/nodes")).json()
            assert {n["name"] for n in nodes} >= {"satwatt", "car1"}
            assert (await client.post("/mine", json={"blocks": 6})).json()["block_height"] == 1006
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
