"""Paying from a phone wallet over the simnet, all over real sockets: LNURL-pay starts a prepaid charge,
LNURL-withdraw stops it and pays back the change exactly once; a receipt's withdraw for an invoice-stream
session's surplus; bad input gets an LNURL error and moves nothing."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import bolt11
import httpx
import pytest
from sqlalchemy import select

from csms import lnurl
from csms.db.engine import create_engine, create_session_factory
from csms.db.models import ChargingSession, Refund, SessionEvent
from csms.settlement.refunds import WITHDRAW_WINDOW
from csms.web import qr
from csms.web.stickers import plan
from lightning.errors import InvalidRequest
from lightning.simnet import Simnet
from tests.conftest import RunningServer
from tests.lnurl.wallet import LnurlRefused, Wallet
from tests.ocpp_clients import connect_charger
from tests.sessions_helpers import follow_events, pay, payer_node
from tests.test_ocpp16 import register
from tests.test_settlement_flow import Meter, sell_at, start_remote
from tests.test_settlement_restart import satwatt, settings_for

PREPAY = {"prepay_min_msat": 1_000_000, "prepay_max_msat": 10_000_000}


@contextlib.asynccontextmanager
async def wallet_of(server: RunningServer, node: str = "car1") -> AsyncIterator[Wallet]:
    simnet = server.app.state.lightning.simnet
    async with payer_node(simnet, node) as backend, httpx.AsyncClient(timeout=60) as http:
        yield Wallet(backend, http)


def sticker(server: RunningServer, charger_id: str, connector: int = 1) -> str:
    """What the sticker's QR code says (LUD-01)."""
    return lnurl.lightning_uri(f"{server.http_url}/lnurlp/{charger_id}/{connector}")


async def refunds_of(server: RunningServer) -> list[Refund]:
    async with server.app.state.service.db() as db:
        return list(await db.scalars(select(Refund).order_by(Refund.created_at)))


async def session_json(api: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    response = await api.get(f"/api/v1/sessions/{session_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def wait_for(predicate: Any, timeout: float = 20) -> Any:
    """The predicate's first true value, polled until ``timeout`` (a bounded wait on a condition)."""
    async with asyncio.timeout(timeout):
        while True:
            value = await predicate()
            if value:
                return value
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_prepay_5000_charge_2000_withdraw_3000_exactly_once(
    server: RunningServer, api: httpx.AsyncClient, version: str
) -> None:
    charger_id = f"CP-lnurl-{version}"
    await register(api, charger_id)
    await sell_at(api, charger_id, price_msat_per_kwh=1_000_000, **PREPAY)  # 1,000 sat/kWh
    async with connect_charger(server.ocpp_url, charger_id, version) as cp, wallet_of(server) as wallet:
        offer = await wallet.scan(sticker(server, charger_id))
        assert offer["tag"] == "payRequest"
        assert (offer["minSendable"], offer["maxSendable"]) == (1_000_000, 10_000_000)
        paid = await wallet.pay(offer, 5_000_000)
        assert paid.success_action is not None
        url = paid.success_action["url"]
        session_id = urlsplit(url).path.split("/")[2]
        k1 = parse_qs(urlsplit(url).query)["k1"][0]
        tx = await start_remote(cp, version)  # the payment started the charger
        token = "st_" + k1  # the success action's k1 opens the session (page and API)
        async with follow_events(server.http_url, session_id, token) as events:
            meter = Meter(cp, version, tx)
            await meter.send(1_000)
            await meter.send(2_000)  # 2 kWh: 2,000 sat
            await events.next("meter")
        # someone else scanning the sticker while it charges gets an error, not a withdraw
        with pytest.raises(LnurlRefused, match="in use"):
            await wallet.scan(sticker(server, charger_id))
        with pytest.raises(LnurlRefused, match="in use"):
            await wallet.scan(sticker(server, charger_id), k1="0" * 64)
        # the driver scans the sticker again with their k1: the charge stops, the change is offered
        scanning = asyncio.create_task(wallet.scan(sticker(server, charger_id), k1=k1))
        if version == "1.6":
            await cp.recorder.wait_for("RemoteStopTransaction")
        else:
            await cp.recorder.wait_for("RequestStopTransaction")
        await meter.stop(2_000)
        withdraw = await scanning
        assert withdraw["tag"] == "withdrawRequest" and withdraw["k1"] == k1
        assert withdraw["minWithdrawable"] == withdraw["maxWithdrawable"] == 3_000_000
        received = await wallet.withdraw(withdraw)
        assert received.amount_paid_msat == 3_000_000
        # a wallet that retries (same invoice, or a new one) gets an error, and nothing moves
        with pytest.raises(LnurlRefused, match="already"):
            await wallet.submit(withdraw, received.bolt11)
        second = await wallet.node.create_invoice(3_000_000, "again", 3600)
        with pytest.raises(LnurlRefused, match="already withdrawn"):
            await wallet.submit(withdraw, second.bolt11)
        with pytest.raises(LnurlRefused, match="already withdrawn"):
            await wallet.scan(lnurl.lightning_uri(f"{server.http_url}/lnurlw/{session_id}"), k1=k1)
        assert (await wallet.node.lookup_invoice(second.payment_hash)).amount_paid_msat == 0
        (refund,) = await refunds_of(server)
        assert (refund.status, refund.amount_msat) == ("paid", 3_000_000)
        ended = await wait_for(lambda: _closed(api, session_id))
        assert ended["cost_msat"] == 2_000_000 and ended["paid_msat"] == 5_000_000
        assert ended["refunded_msat"] == 3_000_000 and ended["refundable_msat"] == 0
        ledger = (await api.get(f"/api/v1/sessions/{session_id}/ledger")).json()
        assert [r["amount_msat"] for r in ledger["refunds"]] == [3_000_000]
        assert ledger["invoices"][0]["kind"] == "prepay"


async def _closed(api: httpx.AsyncClient, session_id: str) -> dict[str, Any] | None:
    body = await session_json(api, session_id)
    return body if body["state"] == "ended" and body["outcome"] else None


async def test_invoice_stream_surplus_is_withdrawn_from_the_receipt(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    charger_id = "CP-receipt"
    await register(api, charger_id)
    await sell_at(api, charger_id)
    simnet = server.app.state.lightning.simnet
    async with connect_charger(server.ocpp_url, charger_id, "1.6") as cp, payer_node(simnet) as car:
        created = (
            await httpx.AsyncClient(base_url=server.http_url).post(
                "/api/v1/sessions", json={"charger_id": charger_id, "connector_id": 1}
            )
        ).json()
        async with follow_events(server.http_url, created["id"], created["token"]) as events:
            await pay(car, created["invoice"]["bolt11"])  # 100 Wh prepaid (10 sat)
            await events.next("paid")
            tx = await start_remote(cp, "1.6")
            meter = Meter(cp, "1.6", tx)
            await meter.stop(40)  # 40 Wh used: 6 sat surplus
            closed = await events.next("closed")
        assert closed.data["refundable_msat"] == 6_000
    engine = server.app.state.settlement
    k1 = engine.withdraw_k1(created["id"])
    async with wallet_of(server, "car2") as wallet:
        receipt_lnurl = lnurl.lightning_uri(f"{server.http_url}/lnurlw/{created['id']}?k1={k1}")
        with pytest.raises(LnurlRefused, match="wrong k1"):
            await wallet.scan(lnurl.lightning_uri(f"{server.http_url}/lnurlw/{created['id']}?k1={'1' * 64}"))
        offer = await wallet.scan(receipt_lnurl)
        assert offer["maxWithdrawable"] == 6_000
        # bad input: wrong amount, an expired invoice, garbage; each an LNURL error, nothing moves
        wrong = await wallet.node.create_invoice(7_000, "", 3600)
        with pytest.raises(LnurlRefused, match="6000 msat"):
            await wallet.submit(offer, wrong.bolt11)
        expiring = await wallet.node.create_invoice(6_000, "", 1)
        with pytest.raises(LnurlRefused, match="expired"):
            await wallet.submit(offer, expiring.bolt11)
        with pytest.raises(LnurlRefused, match="not a valid invoice"):
            await wallet.submit(offer, "lnbcrt1garbage")
        assert await refunds_of(server) == []
        # two withdraws racing: one is paid, the other refused
        first = await wallet.node.create_invoice(6_000, "", 3600)
        other = await wallet.node.create_invoice(6_000, "", 3600)
        results = await asyncio.gather(
            wallet.submit(offer, first.bolt11), wallet.submit(offer, other.bolt11), return_exceptions=True
        )
        assert sorted(type(r).__name__ for r in results) == ["LnurlRefused", "NoneType"]
        paid_hashes = [
            i.payment_hash
            for i in (
                await asyncio.gather(*(wallet.node.lookup_invoice(x.payment_hash) for x in (first, other)))
            )
            if i.amount_paid_msat == 6_000
        ]
        assert len(paid_hashes) == 1
        (refund,) = [r for r in await refunds_of(server) if r.status != "failed"]
        assert refund.payment_hash == paid_hashes[0].hex() and refund.amount_msat == 6_000
        body = await session_json(api, created["id"])
        assert body["refunded_msat"] == 6_000 and body["refundable_msat"] == 0
        assert (
            body["paid_msat"] - body["refunded_msat"] - body["refundable_msat"] + body["unpaid_msat"]
            == (body["cost_msat"])
        )


async def test_lnurl_pay_bad_input(server: RunningServer, api: httpx.AsyncClient) -> None:
    charger_id = "CP-lnurl-bad"
    await register(api, charger_id)
    await sell_at(api, charger_id, **PREPAY)
    async with wallet_of(server) as wallet:
        with pytest.raises(LnurlRefused, match="offline"):
            await wallet.scan(sticker(server, charger_id))
        with pytest.raises(LnurlRefused, match="no such charger"):
            await wallet.scan(sticker(server, "NOPE"))
        async with connect_charger(server.ocpp_url, charger_id, "1.6"):
            offer = await wallet.scan(sticker(server, charger_id))
            callback = offer["callback"]
            for amount in ("999999", "10000001", "-5", "abc", ""):
                with pytest.raises(LnurlRefused, match="amount"):
                    await wallet.get(f"{callback}?amount={amount}")
            # LUD-17: the same contract under lnurlp://
            assert (await wallet.scan(lnurl.lud17(f"{server.http_url}/lnurlp/{charger_id}/1", "p")))[
                "callback"
            ] == callback
        sessions = (await api.get("/api/v1/sessions", params={"charger_id": charger_id})).json()
        assert sessions == []


async def surplus_session(
    http_url: str, ocpp_url: str, api: httpx.AsyncClient, charger_id: str, simnet: Simnet
) -> dict[str, Any]:
    """An invoice-stream session that ended with 6 sat paid and not used (on the satwatt at
    ``http_url``): the walk-up's answer, with its id and token."""
    await register(api, charger_id)
    await sell_at(api, charger_id)
    async with (
        connect_charger(ocpp_url, charger_id, "1.6") as cp,
        payer_node(simnet) as car,
        httpx.AsyncClient(base_url=http_url) as driver,
    ):
        created: dict[str, Any] = (
            await driver.post("/api/v1/sessions", json={"charger_id": charger_id, "connector_id": 1})
        ).json()
        async with follow_events(http_url, created["id"], created["token"]) as events:
            await pay(car, created["invoice"]["bolt11"])
            await events.next("paid")
            tx = await start_remote(cp, "1.6")
            await Meter(cp, "1.6", tx).stop(40)
            assert (await events.next("closed")).data["refundable_msat"] == 6_000
    return created


async def _ended_with_surplus(
    server: RunningServer, api: httpx.AsyncClient, charger_id: str, simnet: Simnet | None = None
) -> str:
    """An invoice-stream session that ended with 6 sat paid and not used; its id."""
    simnet = simnet or server.app.state.lightning.simnet
    created = await surplus_session(server.http_url, server.ocpp_url, api, charger_id, simnet)
    return str(created["id"])


@pytest.mark.parametrize("paid_before_the_crash", [True, False])
async def test_a_refund_recorded_before_a_crash_is_paid_once_at_restart(
    server: RunningServer, api: httpx.AsyncClient, paid_before_the_crash: bool
) -> None:
    """kill -9 between paying and recording: the row says ``paying`` (recorded before the payment), the
    node has (or has not) paid. What start-up does with it (RefundDesk.resume) pays the wallet once."""
    session_id = await _ended_with_surplus(server, api, f"CP-crash-{paid_before_the_crash}")
    desk = server.app.state.refunds
    backend = server.app.state.lightning.backend
    simnet = server.app.state.lightning.simnet
    async with wallet_of(server, "car2") as wallet:
        invoice = await wallet.node.create_invoice(6_000, "", 3600)
        async with server.app.state.service.db() as db:
            number = await db.scalar(select(ChargingSession.number).where(ChargingSession.id == session_id))
        # what RefundDesk.withdraw records before it pays, then the payment reaches the node...
        async with server.app.state.service.db.begin() as db:
            db.add(
                Refund(
                    key=f"{session_id}/refund/1",
                    session_number=number,
                    active_for=number,
                    amount_msat=6_000,
                    bolt11=invoice.bolt11,
                    payment_hash=invoice.payment_hash.hex(),
                    fee_limit_msat=10_000,
                    status="paying",
                )
            )
        if paid_before_the_crash:
            await backend.pay_invoice(invoice.bolt11, fee_limit_msat=10_000, timeout_s=30)
        # ... and the process dies before recording it. At restart:
        await desk.resume()
        (refund,) = await wait_for(lambda: _refunds_with_status(server, "paid"))
        assert refund.amount_msat == 6_000
        assert (await wallet.node.lookup_invoice(invoice.payment_hash)).amount_paid_msat == 6_000
        made = simnet.network.payments["satwatt"].values()
        assert [p.payment_hash for p in made].count(invoice.payment_hash) == 1
        # and the wallet cannot have it twice
        k1 = server.app.state.settlement.withdraw_k1(session_id)
        with pytest.raises(LnurlRefused, match="already withdrawn"):
            await wallet.scan(lnurl.lightning_uri(f"{server.http_url}/lnurlw/{session_id}?k1={k1}"))


async def _refunds_with_status(server: RunningServer, status: str) -> list[Refund]:
    return [r for r in await refunds_of(server) if r.status == status]


async def test_a_used_up_prepayment_suspends_and_a_top_up_resumes(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    charger_id = "CP-topup"
    await register(api, charger_id)
    await sell_at(api, charger_id, price_msat_per_kwh=1_000_000, **PREPAY)  # 1,000 sat/kWh
    async with connect_charger(server.ocpp_url, charger_id, "1.6") as cp, wallet_of(server) as wallet:
        paid = await wallet.pay(await wallet.scan(sticker(server, charger_id)), 1_000_000)  # 1 kWh
        assert paid.success_action is not None
        url = urlsplit(paid.success_action["url"])
        session_id, k1 = url.path.split("/")[2], parse_qs(url.query)["k1"][0]
        tx = await start_remote(cp, "1.6")
        async with follow_events(server.http_url, session_id, "st_" + k1) as events:
            meter = Meter(cp, "1.6", tx)
            await meter.send(1_000)  # all of it: the power is cut, as for an invoice stream left unpaid
            suspended = await events.next("suspended")
            assert suspended.data["reason"] == "prepayment_used"
            assert cp.recorder.of("SetChargingProfile")
            # a top-up from the session page's LNURL-pay (anyone without the k1 is refused)
            with pytest.raises(LnurlRefused, match="wrong k1"):
                await wallet.get(f"{server.http_url}/lnurl/topup/{session_id}?k1={'2' * 64}")
            top_up = await wallet.get(f"{server.http_url}/lnurl/topup/{session_id}?k1={k1}")
            assert top_up["tag"] == "payRequest"
            with pytest.raises(LnurlRefused, match="amount"):
                await wallet.get(f"{top_up['callback']}&amount=5")
            await wallet.pay(top_up, 2_000_000)
            await events.next("resumed")
            await meter.send(1_500)
            await meter.stop(1_500)  # 1.5 kWh of 3 kWh prepaid
            closed = (await events.next("closed")).data
        assert closed["cost_msat"] == 1_500_000 and closed["paid_msat"] == 3_000_000
        assert closed["refundable_msat"] == 1_500_000
        offer = await wallet.scan(lnurl.lightning_uri(f"{server.http_url}/lnurlw/{session_id}?k1={k1}"))
        assert (await wallet.withdraw(offer)).amount_paid_msat == 1_500_000
        with pytest.raises(LnurlRefused, match="no top-up"):
            await wallet.get(f"{server.http_url}/lnurl/topup/{session_id}?k1={k1}")


async def test_a_top_up_by_a_plain_invoice_from_the_api(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    """A wallet without LNURL tops up through ``POST /api/v1/sessions/{id}/top-ups`` with the session's
    token: a plain invoice (a memo, no description hash) whose payment resumes the session; bad input gets
    a problem and no invoice."""
    charger_id = "CP-topup-api"
    await register(api, charger_id)
    await sell_at(api, charger_id, price_msat_per_kwh=1_000_000, **PREPAY)  # 1,000 sat/kWh
    async with (
        connect_charger(server.ocpp_url, charger_id, "1.6") as cp,
        wallet_of(server) as wallet,
        httpx.AsyncClient(base_url=server.http_url) as anonymous,
    ):
        paid = await wallet.pay(await wallet.scan(sticker(server, charger_id)), 1_000_000)  # 1 kWh
        assert paid.success_action is not None
        url = urlsplit(paid.success_action["url"])
        session_id, k1 = url.path.split("/")[2], parse_qs(url.query)["k1"][0]
        driver = {"Authorization": f"Bearer st_{k1}"}
        top_ups = f"/api/v1/sessions/{session_id}/top-ups"
        tx = await start_remote(cp, "1.6")
        async with follow_events(server.http_url, session_id, "st_" + k1) as events:
            meter = Meter(cp, "1.6", tx)
            await meter.send(1_000)
            assert (await events.next("suspended")).data["reason"] == "prepayment_used"
            # bad input: each a problem naming what is wrong, and no invoice made
            listing = f"/api/v1/sessions/{session_id}/invoices"
            before = len((await anonymous.get(listing, headers=driver)).json())
            out_of_range = await anonymous.post(top_ups, json={"amount_msat": 5}, headers=driver)
            assert out_of_range.status_code == 422
            assert "between 1000000 and 10000000 msat" in out_of_range.json()["detail"]
            not_a_number = await anonymous.post(top_ups, json={"amount_msat": "lots"}, headers=driver)
            assert not_a_number.status_code == 422
            assert not_a_number.json()["errors"][0]["field"] == "amount_msat"
            nobody = await anonymous.post(top_ups, json={"amount_msat": 2_000_000})
            assert nobody.status_code == 401
            assert len((await anonymous.get(listing, headers=driver)).json()) == before
            # the top-up: 2,000 sat, a plain invoice described by a memo
            created = await anonymous.post(top_ups, json={"amount_msat": 2_000_000}, headers=driver)
            assert created.status_code == 201, created.text
            invoice = created.json()
            assert invoice["kind"] == "prepay" and invoice["amount_msat"] == 2_000_000
            assert invoice["status"] == "open" and invoice["energy_wh"] == 2_000
            decoded = bolt11.decode(invoice["bolt11"])
            assert decoded.amount_msat == 2_000_000 and decoded.description_hash is None
            assert decoded.description == f"satwatt {charger_id}/1: 2000 Wh at 1000 sat/kWh (prepaid)"
            await pay(wallet.node, invoice["bolt11"])
            assert (await events.next("paid")).data["key"] == invoice["key"]
            await events.next("resumed")
            await meter.stop(1_500)  # 1.5 kWh of 3 kWh prepaid
            closed = (await events.next("closed")).data
        assert closed["paid_msat"] == 3_000_000 and closed["refundable_msat"] == 1_500_000
        ended = await anonymous.post(top_ups, json={"amount_msat": 2_000_000}, headers=driver)
        assert ended.status_code == 409 and "ended" in ended.json()["detail"]
        # an invoice-stream session takes no top-up: it is paid invoice by invoice
        walk_up = (
            await anonymous.post("/api/v1/sessions", json={"charger_id": charger_id, "connector_id": 1})
        ).json()
        refused = await anonymous.post(
            f"/api/v1/sessions/{walk_up['id']}/top-ups",
            json={"amount_msat": 2_000_000},
            headers={"Authorization": f"Bearer {walk_up['token']}"},
        )
        assert refused.status_code == 409 and "only a prepaid session" in refused.json()["detail"]
        other = await anonymous.post(
            top_ups, json={"amount_msat": 2_000_000}, headers={"Authorization": f"Bearer {walk_up['token']}"}
        )
        assert other.status_code == 403  # another session's token


async def test_the_session_pages_top_up_form_refuses_bad_input(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    """The page's plain-invoice top-up (``POST /s/{id}/topup``): a forged form, a non-number and an amount
    outside the tariff's bounds each get an error page saying so, and no invoice is made."""
    charger_id = "CP-topup-page"
    await register(api, charger_id)
    await sell_at(api, charger_id, price_msat_per_kwh=1_000_000, **PREPAY)
    async with (
        connect_charger(server.ocpp_url, charger_id, "1.6") as cp,
        wallet_of(server) as wallet,
        httpx.AsyncClient(base_url=server.http_url, follow_redirects=True) as browser,
    ):
        paid = await wallet.pay(await wallet.scan(sticker(server, charger_id)), 1_000_000)
        assert paid.success_action is not None
        page = await browser.get(paid.success_action["url"])  # keeps the session's cookie
        await start_remote(cp, "1.6")
        session_id = urlsplit(paid.success_action["url"]).path.split("/")[2]
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert csrf is not None and 'id="topup-form"' in page.text
        assert 'min="1000" max="10000"' in page.text  # the tariff's bounds, in sats
        form = f"/s/{session_id}/topup"
        cases = [
            ({"csrf": "forged", "sat": "2000"}, 403, "The form is stale"),
            ({"csrf": csrf[1], "sat": "lots"}, 422, "whole number of sats"),
            ({"csrf": csrf[1], "sat": "-5"}, 422, "whole number of sats"),
            ({"csrf": csrf[1], "sat": "999"}, 422, "between 1000000 and 10000000 msat"),
            ({"csrf": csrf[1], "sat": "10001"}, 422, "between 1000000 and 10000000 msat"),
        ]
        for data, status, text in cases:
            refused = await browser.post(form, data=data)
            assert refused.status_code == status and text in refused.text, (data, refused.text)
        shown = await browser.get(f"/s/{session_id}/state")
        assert shown.json()["invoice"] is None  # the first prepayment is paid; no top-up invoice was made
        accepted = await browser.post(form, data={"csrf": csrf[1], "sat": "2000"})
        assert accepted.status_code == 200 and "(top-up)" in accepted.text  # back on the page, with it
        invoice = (await browser.get(f"/s/{session_id}/state")).json()["invoice"]
        assert invoice["kind"] == "prepay" and invoice["amount_msat"] == 2_000_000


async def test_a_refund_paid_by_a_process_that_died_before_recording_it_is_recorded_at_restart(
    database_url: str, tmp_path: Path
) -> None:
    """The refund row is committed (``paying``), the node pays it, the process dies before recording the
    outcome (no shutdown runs: the row stays ``paying``). The next satwatt finds the payment by its hash
    at start-up: recorded once, paid once, and the wallet cannot withdraw again."""
    simnet = Simnet(tmp_path / "simnet", port=0)
    await simnet.start()
    data_dir = tmp_path / "satwatt"
    try:
        async with satwatt(settings_for(database_url, data_dir, simnet)) as first:
            session_id = await _ended_with_surplus(first, first.api(), "CP-K9", simnet)
            async with first.app.state.service.db() as db:
                number = await db.scalar(
                    select(ChargingSession.number).where(ChargingSession.id == session_id)
                )
            k1 = first.app.state.settlement.withdraw_k1(session_id)
        async with payer_node(simnet, "car2") as wallet_node, payer_node(simnet, "satwatt") as seller:
            invoice = await wallet_node.create_invoice(6_000, "", 3600)
            # what the dead process left: the row recorded before paying, and the payment made
            engine = create_engine(settings_for(database_url, data_dir, simnet).resolved_database_url)
            async with create_session_factory(engine).begin() as db:
                db.add(
                    Refund(
                        key=f"{session_id}/refund/1",
                        session_number=number,
                        active_for=number,
                        amount_msat=6_000,
                        bolt11=invoice.bolt11,
                        payment_hash=invoice.payment_hash.hex(),
                        fee_limit_msat=10_000,
                        status="paying",
                    )
                )
            await engine.dispose()
            await seller.pay_invoice(invoice.bolt11, fee_limit_msat=10_000, timeout_s=30)
            async with satwatt(settings_for(database_url, data_dir, simnet)) as again:
                (refund,) = await wait_for(lambda: _refunds_with_status(again, "paid"))
                assert refund.amount_msat == 6_000 and refund.fee_msat is not None
                async with again.app.state.service.db() as db:  # recorded with the refund, not after it
                    logged = list(
                        await db.scalars(
                            select(SessionEvent).where(
                                SessionEvent.session_number == number, SessionEvent.kind == "refunded"
                            )
                        )
                    )
                assert [(e.data["key"], e.data["amount_msat"]) for e in logged] == [(refund.key, 6_000)]
                assert (await wallet_node.lookup_invoice(invoice.payment_hash)).amount_paid_msat == 6_000
                assert simnet.network is not None
                made = simnet.network.payments["satwatt"].values()
                assert [p.payment_hash for p in made].count(invoice.payment_hash) == 1
                async with httpx.AsyncClient(timeout=30) as http:
                    wallet = Wallet(wallet_node, http)
                    with pytest.raises(LnurlRefused, match="already withdrawn"):
                        await wallet.scan(
                            lnurl.lightning_uri(f"{again.http_url}/lnurlw/{session_id}?k1={k1}")
                        )
    finally:
        await simnet.stop()


async def test_an_invoice_someone_else_paid_and_a_payment_to_an_expired_prepayment_move_nothing(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    session_id = await _ended_with_surplus(server, api, "CP-paid-elsewhere")
    k1 = server.app.state.settlement.withdraw_k1(session_id)
    async with (
        wallet_of(server, "car2") as wallet,
        payer_node(server.app.state.lightning.simnet, "car1") as other,
    ):
        offer = await wallet.scan(lnurl.lightning_uri(f"{server.http_url}/lnurlw/{session_id}?k1={k1}"))
        invoice = await wallet.node.create_invoice(6_000, "", 3600)
        await pay(other, invoice.bolt11)  # already paid (by someone else) when it is submitted
        with pytest.raises(LnurlRefused, match="payment failed"):
            await wallet.submit(offer, invoice.bolt11)
        (failed,) = await refunds_of(server)
        assert failed.status == "failed" and failed.active_for is None
        assert (await session_json(api, session_id))["refundable_msat"] == 6_000  # still owed, nothing moved
        received = await wallet.withdraw(offer)  # a fresh invoice takes it
        assert received.amount_paid_msat == 6_000

    charger_id = "CP-expired-prepay"
    await register(api, charger_id)
    await sell_at(api, charger_id, invoice_expiry_s=1, **PREPAY)
    async with connect_charger(server.ocpp_url, charger_id, "1.6") as cp, wallet_of(server) as wallet:
        offer = await wallet.scan(sticker(server, charger_id))
        answer = await wallet.get(f"{offer['callback']}?amount=1000000")
        await asyncio.sleep(1.5)  # past the invoice's 1 s expiry (the node's own rule)
        with pytest.raises(InvalidRequest, match="expired"):  # the node refuses it: nothing moves
            await wallet.node.pay_invoice(answer["pr"], fee_limit_msat=10_000, timeout_s=10)
        (session,) = (await api.get("/api/v1/sessions", params={"charger_id": charger_id})).json()
        closed = await wait_for(lambda: _closed(api, session["id"]))
        assert closed["outcome"] == "not_started" and closed["paid_msat"] == 0
        assert cp.recorder.of("RemoteStartTransaction") == []


async def test_a_withdraw_link_past_its_window_is_refused_and_moves_nothing(
    server: RunningServer, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expired k1: the receipt's link, used more than 30 days after the session ended, gets an LNURL
    error at both steps, and nothing is paid."""
    session_id = await _ended_with_surplus(server, api, "CP-late")
    k1 = server.app.state.settlement.withdraw_k1(session_id)
    link = lnurl.lightning_uri(f"{server.http_url}/lnurlw/{session_id}?k1={k1}")
    async with wallet_of(server, "car2") as wallet:
        offer = await wallet.scan(link)  # fetched in time...
        later = datetime.now(UTC) + WITHDRAW_WINDOW + timedelta(days=1)
        monkeypatch.setattr(server.app.state.refunds, "clock", lambda: later)  # ...used 31 days on
        with pytest.raises(LnurlRefused, match="this withdraw link has expired"):
            await wallet.scan(link)
        invoice = await wallet.node.create_invoice(6_000, "", 3600)
        with pytest.raises(LnurlRefused, match="this withdraw link has expired"):
            await wallet.submit(offer, invoice.bolt11)
        assert await refunds_of(server) == []
        assert (await wallet.node.lookup_invoice(invoice.payment_hash)).amount_paid_msat == 0


@pytest.mark.parametrize("charger_id", ["CP-sticker", "CP#7+x"])  # '#' and '+' are quoted in URLs
async def test_the_printed_sticker_opens_the_page_in_a_camera_and_pays_in_a_wallet(
    server: RunningServer, api: httpx.AsyncClient, charger_id: str
) -> None:
    """The sticker's QR code is the driver page with the LNURL-pay as LUD-01's https fallback; the wallet
    pays from it and the charge starts."""
    path = quote(charger_id, safe="")
    await register(api, charger_id)
    await sell_at(api, path, **PREPAY)
    (sticker_,) = [
        s
        for s in await plan(server.settings.model_copy(update={"public_url": server.http_url}))
        if s.charger_id == charger_id
    ]
    assert sticker_.qr_data.startswith(f"{server.http_url}/c/{path}/1?lightning=LNURL1")
    assert qr.matrix(sticker_.qr_data)  # it fits a QR code
    async with connect_charger(server.ocpp_url, path, "1.6") as cp, wallet_of(server) as wallet:
        page = await wallet.http.get(sticker_.qr_data)  # a phone's camera: the connector page
        assert page.status_code == 200 and 'id="lnurl-qr"' in page.text
        assert f'src="/c/{path}/1/lnurl.svg"' in page.text
        assert (await wallet.http.get(f"{server.http_url}/c/{path}/1/lnurl.svg")).status_code == 200
        offer = await wallet.scan(sticker_.qr_data)  # a wallet: LNURL-pay
        assert offer["tag"] == "payRequest"
        assert offer["callback"] == f"{server.http_url}/lnurlp/{path}/1/callback"
        paid = await wallet.pay(offer, 1_000_000)
        assert paid.success_action is not None
        await cp.recorder.wait_for("RemoteStartTransaction", timeout=20)
