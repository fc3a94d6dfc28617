"""Auto-pay: a designated payer node pays every invoice of the payee node, through the normal path."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from csms.lightning_node import open_lightning
from csms.settings import SettingsError, load_settings
from lightning import InvoiceState, PaymentStatus
from lightning.factory import start_lightning
from lightning.lnd import LndBackend, LndConfig
from lightning.simnet import AutoPay, FeePolicy, Simnet

from .conftest import FAST_RETRY, NODES, wait_for

REPO = Path(__file__).resolve().parents[2]
DELAY_S = 0.2


@pytest.fixture
async def autopay_simnet(tmp_path: Path) -> AsyncIterator[Simnet]:
    net = Simnet(tmp_path / "simnet", port=0, nodes=NODES, autopay=AutoPay("car1", "satwatt", DELAY_S))
    await net.start()
    try:
        yield net
    finally:
        await net.stop()


@pytest.fixture
async def backends(autopay_simnet: Simnet) -> AsyncIterator[dict[str, LndBackend]]:
    made = {
        name: LndBackend(LndConfig.from_simnet(autopay_simnet, name), retry=FAST_RETRY)
        for name in ("satwatt", "car1", "car2")
    }
    yield made
    for backend in made.values():
        await backend.close()


async def test_every_invoice_of_the_payee_is_paid_after_the_delay(
    autopay_simnet: Simnet, backends: dict[str, LndBackend]
) -> None:
    seller, car1 = backends["satwatt"], backends["car1"]
    before = {n: autopay_simnet.balance_msat(n) for n in ("satwatt", "car1")}
    cursor = await seller.current_cursor()
    stream = seller.invoice_updates(cursor)
    loop = asyncio.get_running_loop()
    try:
        other = await backends["car2"].create_invoice(5_000, "not satwatt's")
        created_at = loop.time()
        invoices = [await seller.create_invoice(3_000 + i, f"30 Wh #{i}") for i in range(5)]
        settled: dict[bytes, int] = {}
        async with asyncio.timeout(10):
            async for invoice in stream:
                if invoice.state is InvoiceState.SETTLED:
                    settled[invoice.payment_hash] = invoice.amount_paid_msat
                if len(settled) == len(invoices):
                    break
        assert loop.time() - created_at >= DELAY_S  # paid no sooner than the delay (call_later)
    finally:
        await stream.aclose()
    assert settled == {inv.payment_hash: inv.amount_msat for inv in invoices}
    paid = sum(inv.amount_msat for inv in invoices)
    fees = sum(FeePolicy().fee_for(inv.amount_msat) for inv in invoices)
    assert autopay_simnet.balance_msat("satwatt") == before["satwatt"] + paid
    assert autopay_simnet.balance_msat("car1") == before["car1"] - paid - fees
    # car1's payment is an ordinary one: its node knows it (paying again just follows it).
    result = await car1.pay_invoice(invoices[0].bolt11, fee_limit_msat=2_000)
    assert result.status is PaymentStatus.SUCCEEDED and result.amount_msat == invoices[0].amount_msat
    # Only the payee's invoices: car2's was created first and is still open.
    assert (await backends["car2"].lookup_invoice(other.payment_hash)).state is InvoiceState.OPEN
    net = autopay_simnet.network
    assert net is not None and net.autopay_stats.started == len(invoices)


async def test_hold_invoices_are_held_and_zero_amount_ones_skipped(
    autopay_simnet: Simnet, backends: dict[str, LndBackend]
) -> None:
    seller = backends["satwatt"]
    preimage = bytes(range(32))
    hold = await seller.create_hold_invoice(hashlib.sha256(preimage).digest(), 4_000, "hold")
    states = []
    async for invoice in seller.watch_invoice(hold.payment_hash):
        states.append(invoice.state)
        if invoice.state is InvoiceState.ACCEPTED:
            await seller.settle_hold_invoice(preimage)
    assert states == [InvoiceState.OPEN, InvoiceState.ACCEPTED, InvoiceState.SETTLED]
    net = autopay_simnet.network
    assert net is not None
    await seller.create_invoice(0, "any amount")
    await wait_for(lambda: net.autopay_stats.skipped == 1)
    assert net.autopay_stats.started == 1


async def test_bad_autopay_nodes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="auto-pay payer 'nobody' is not a node"):
        await Simnet(tmp_path / "a", port=0, nodes=NODES, autopay=AutoPay("nobody", "satwatt")).start()
    with pytest.raises(ValueError, match="two different nodes"):
        await Simnet(tmp_path / "b", port=0, nodes=NODES, autopay=AutoPay("car1", "car1")).start()
    args = ["--data-dir", str(tmp_path / "c"), "--port", "0", "--admin-port", "-1"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lightning.simnet",
        *args,
        "--autopay-ms",
        "5",
        "--autopay-payer",
        "nobody",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, stderr = await proc.communicate()
    assert proc.returncode == 2
    assert "auto-pay payer 'nobody' is not a node" in stderr.decode() and "Traceback" not in stderr.decode()


async def test_embedded_simnet_of_csms_takes_the_setting(tmp_path: Path) -> None:
    runtime = await start_lightning("simnet", data_dir=tmp_path, simnet_port=0, simnet_autopay_ms=0)
    try:
        assert runtime.simnet is not None and runtime.simnet.autopay == AutoPay("car1", "satwatt", 0.0)
        invoice = await runtime.backend.create_invoice(2_000, "embedded")
        async for seen in runtime.backend.watch_invoice(invoice.payment_hash):
            if seen.state.is_final:
                assert seen.state is InvoiceState.SETTLED
        assert "car1 pays every invoice of satwatt after 0 ms" in runtime.describe()
    finally:
        await runtime.close()
    settings = load_settings(simnet_autopay_ms=25, data_dir=tmp_path / "csms", simnet_port=0)
    node = await open_lightning(settings)  # what csms serve does with CSMS_SIMNET_AUTOPAY_MS
    try:
        assert node.simnet is not None and node.simnet.autopay == AutoPay("car1", "satwatt", 0.025)
        assert any("car1 pays every invoice after 25 ms" in line for line in node.description)
    finally:
        await node.close()
    with pytest.raises(SettingsError, match="CSMS_SIMNET_CARS >= 1"):
        load_settings(simnet_autopay_ms=25, simnet_cars=0, data_dir=tmp_path)
