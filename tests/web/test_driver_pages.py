"""The driver's pages over HTTP: the connector page behind a sticker, starting a walk-up session, the
session page and what it serves (state, invoice QR, event stream, receipt), and bad input."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import httpx

from lightning.errors import PaymentFailed
from tests.conftest import RunningServer
from tests.sessions_helpers import pay, payer_node


async def start(client: httpx.AsyncClient, charger_id: str, connector: int = 1) -> str:
    """Press the start button; returns the session page's path."""
    response = await client.post(f"/c/{charger_id}/{connector}")
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert re.fullmatch(r"/s/[A-Za-z0-9_-]+", location)
    return location


async def test_connector_page_shows_charger_state_and_price(
    browser_client: httpx.AsyncClient, stations: Callable[..., Any]
) -> None:
    await stations("WEB-1", "2.0.1", price_msat_per_kwh=120_000, session_fee_msat=2_500)
    page = await browser_client.get("/c/WEB-1/1")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert 'id="charger-id">WEB-1<' in html and 'id="charger-online" class="ok">online<' in html
    assert 'id="price">120<' in html and 'id="fee">2.5<' in html
    assert 'id="connector-state">Available<' in html
    assert 'id="start" type="submit" >' in html or 'id="start" type="submit">' in html  # not disabled
    assert (
        page.headers["cache-control"] == "no-store"
        and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    )


async def test_bad_addresses_get_clear_pages(
    browser_client: httpx.AsyncClient, stations: Callable[..., Any]
) -> None:
    await stations("WEB-2", "1.6")
    for path, text in [
        ("/c/NOPE/1", "There is no charger NOPE here."),
        ("/c/WEB-2/0", "This address names no charger and connector."),
        ("/c/WEB-2/x", "This address names no charger and connector."),
        ("/c/WEB-2/7", "Charger WEB-2 has no connector 7 (its connectors: 1)."),
        ("/c/bad%20id/1", "This address names no charger and connector."),
    ]:
        page = await browser_client.get(path)
        assert page.status_code == 404, path
        assert text in page.text and "<html" in page.text, path
    posted = await browser_client.post("/c/NOPE/1")
    assert posted.status_code == 404 and "There is no charger NOPE here." in posted.text


async def test_start_keeps_the_token_in_a_cookie_and_the_page_is_the_drivers_alone(
    server: RunningServer,
    browser_client: httpx.AsyncClient,
    api: httpx.AsyncClient,
    stations: Callable[..., Any],
) -> None:
    await stations("WEB-3", "2.0.1")
    response = await browser_client.post("/c/WEB-3/1")
    assert response.status_code == 303
    path = response.headers["location"]
    session_id = path.rsplit("/", 1)[1]
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("sw_session=st_") and f"Path={path}" in cookie
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    assert token not in path
    page = await browser_client.get(path)
    assert page.status_code == 200 and token not in page.text
    assert 'data-state="awaiting_payment"' in page.text
    state = (await browser_client.get(f"{path}/state")).json()
    invoice = state["invoice"]
    assert state["state"] == "awaiting_payment" and invoice["bolt11"].startswith("lnbcrt")
    assert invoice["bolt11"] in page.text  # the invoice to pay, and its QR code
    qr = await browser_client.get(invoice["qr"])
    assert qr.status_code == 200 and qr.headers["content-type"] == "image/svg+xml"
    assert qr.text.startswith("<svg") and "<path" in qr.text
    # the same session through the API: the walk-up it made is the one shown
    assert (await api.get(f"/api/v1/sessions/{session_id}")).json()["state"] == "awaiting_payment"
    # the connector is now busy for everyone else
    busy = await httpx.AsyncClient(base_url=server.http_url).post("/c/WEB-3/1")
    assert busy.status_code == 409 and "has a session in progress" in busy.text
    # another browser (no cookie, or a wrong token) sees none of it
    async with httpx.AsyncClient(base_url=server.http_url) as stranger:
        denied = await stranger.get(path)
        assert denied.status_code == 403 and "holds no token for this session" in denied.text
        assert invoice["bolt11"] not in denied.text
        assert (await stranger.get(f"{path}/state")).status_code == 403
        assert (await stranger.get(invoice["qr"])).status_code == 403
        assert (await stranger.get(f"{path}/events")).status_code == 403
        wrong = await stranger.post(f"{path}/token", data={"token": "st_" + "x" * 32})
        assert wrong.status_code == 403 and "That token does not open this session." in wrong.text
        # the driver's token opens it on another device (form post, never in the URL)
        opened = await stranger.post(f"{path}/token", data={"token": token})
        assert opened.status_code == 303 and opened.headers["location"] == path
        assert (await stranger.get(path)).status_code == 200
    # a stop without the page's form token is refused; with it, the unpaid session is called off
    refused = await browser_client.post(f"{path}/stop", data={"csrf": "forged"})
    assert refused.status_code == 403
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert csrf is not None
    stopped = await browser_client.post(f"{path}/stop", data={"csrf": csrf.group(1)})
    assert stopped.status_code == 303
    assert (await api.get(f"/api/v1/sessions/{session_id}")).json()["state"] == "ended"


async def test_event_stream_and_receipt_of_a_paid_session(
    server: RunningServer, browser_client: httpx.AsyncClient, stations: Callable[..., Any]
) -> None:
    """The page's event stream (cookie only) carries the session from the first invoice to `closed`;
    every invoice it announces is paid from a simnet node; the receipt then lists them all as paid. An
    invoice announced just before the car is unplugged may be canceled at the end before the payer gets
    to it: its payment then fails at the node (nothing moves) and the receipt shows it canceled."""
    station = await stations("WEB-4", "1.6")
    await station.cp.plug_in(1, ev="sedan", soc=0.3)
    path = await start(browser_client, "WEB-4")
    kinds: list[str] = []
    refused: list[str] = []  # the reasons of payments the node refused
    async with (
        payer_node(server.app.state.lightning.simnet, "car1") as car,
        asyncio.timeout(60),
        browser_client.stream("GET", f"{path}/events") as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = ""
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:]
                kinds.append(kind)
            elif line.startswith("data: ") and kind == "closed":
                # the stream goes on after it only while there is change to withdraw (until 'refunded')
                break
            elif line.startswith("data: ") and kind == "invoice":
                try:
                    await pay(car, json.loads(line[6:])["bolt11"])
                except PaymentFailed as exc:
                    refused.append(exc.reason)
            elif (
                line.startswith("data: ")
                and kind == "meter"
                and json.loads(line[6:])["energy_wh"] >= 150
                and station.cp.transaction(1) is not None
            ):
                await station.cp.unplug(1)
    assert kinds[:2] == ["invoice", "paid"] and "started" in kinds and kinds[-1] == "closed"
    receipt = await browser_client.get(f"{path}/receipt")
    assert receipt.status_code == 200 and 'id="receipt-card"' in receipt.text
    assert 'id="receipt-outcome">settled<' in receipt.text
    rows = re.findall(r"<tr><td>(\d+)</td><td>(\w+)", receipt.text)
    assert len(rows) == kinds.count("invoice")
    assert refused in ([], ["FAILURE_REASON_INCORRECT_PAYMENT_DETAILS"])  # at most the last, canceled
    assert receipt.text.count("<td>paid</td>") == len(rows) - len(refused)
    assert receipt.text.count("<td>canceled</td>") == len(refused)


async def test_an_offline_charger_cannot_be_started_and_says_so(
    browser_client: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    assert (await api.post("/api/v1/chargers", json={"id": "AWAY-1"})).status_code == 201
    page = await browser_client.get("/c/AWAY-1/1")
    assert page.status_code == 200
    assert 'id="charger-online" class="bad">offline<' in page.text
    assert 'id="connector-state">not reported yet<' in page.text and 'id="price">100<' in page.text
    assert "disabled" in page.text and "The charger is offline" in page.text
    refused = await browser_client.post("/c/AWAY-1/1")
    assert refused.status_code == 409 and "charger AWAY-1 is not connected" in refused.text
    assert "set-cookie" not in refused.headers
