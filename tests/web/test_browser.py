"""In a real headless Chromium: a driver charges from a sticker's URL and pays over the simnet, the
operator watches the session live on the dashboard and stops it from there, the driver gets the
receipt. Screenshots of both pages are kept as test artefacts (test-artifacts/, or
$SATWATT_TEST_ARTIFACTS)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.async_api import Dialog, expect

from tests.conftest import RunningServer
from tests.sessions_helpers import pay, payer_node
from tests.web.browser import artifact, chromium

pytestmark = pytest.mark.browser
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}


async def test_driver_charges_from_the_sticker_and_the_operator_stops_it_from_the_dashboard(
    server: RunningServer, stations: Callable[..., Any]
) -> None:
    # one invoice buys 2 kWh: the first payment covers the whole test's charge
    station = await stations("STICKER-1", "2.0.1", increment_wh=2000, session_fee_msat=1_000)
    await station.cp.plug_in(1, ev="sedan", soc=0.3)
    requested: list[str] = []
    async with chromium() as browser:
        phone = await browser.new_context(**PHONE)
        driver = await phone.new_page()
        driver.on("request", lambda request: requested.append(request.url))
        # the sticker's URL: the charger, its connector's state and the price
        await driver.goto(f"{server.http_url}/c/STICKER-1/1")
        await expect(driver.locator("#charger-online")).to_have_text("online")
        await expect(driver.locator("#price")).to_have_text("100")
        await driver.locator("#start").click()
        await driver.wait_for_url(re.compile(r"/s/[A-Za-z0-9_-]+$"))
        session_id = driver.url.rsplit("/", 1)[1]
        # the invoice as a QR code (a lightning: URI), with its text to copy
        await expect(driver.locator("#state")).to_have_attribute("data-state", "awaiting_payment")
        await expect(driver.locator("#invoice-qr")).to_be_visible()
        await driver.wait_for_function("() => document.getElementById('invoice-qr').naturalWidth > 0")
        bolt11 = await driver.locator("#bolt11").input_value()
        assert bolt11.startswith("lnbcrt")
        assert await driver.locator("#invoice-link").get_attribute("href") == f"lightning:{bolt11}"
        await driver.screenshot(path=artifact("driver-invoice.png"), full_page=True)
        # paid through the simnet: the page turns to charging, and the energy rises
        async with payer_node(server.app.state.lightning.simnet, "car1") as car:
            await pay(car, bolt11)
        await expect(driver.locator("#state")).to_have_attribute("data-state", "charging", timeout=20_000)
        await expect(driver.locator("#invoice-card")).to_be_hidden()
        await expect(driver.locator("#paid")).to_have_text("201")  # 2 kWh at 100 sat/kWh + the fee
        first = float(await driver.locator("#energy").inner_text())
        await driver.wait_for_function(
            "e => parseFloat(document.getElementById('energy').textContent) > e + 0.02",
            arg=first,
            timeout=20_000,
        )
        await expect(driver.locator("#chart polyline.energy")).to_have_count(1)
        await driver.screenshot(path=artifact("driver-charging.png"), full_page=True)

        # the operator logs in and sees the session live
        desk = await browser.new_context(viewport={"width": 1280, "height": 900})
        operator = await desk.new_page()
        operator.on("request", lambda request: requested.append(request.url))
        await operator.goto(f"{server.http_url}/dashboard")
        await operator.locator("#key").fill(server.api_key)
        await operator.locator("#login").click()
        row = operator.locator(f'tr[data-session="{session_id}"]')
        await expect(row.locator(".badge")).to_have_text("charging")
        await expect(operator.locator('tr[data-charger="STICKER-1"] .dot.on')).to_have_count(1)
        kwh = await row.locator("td.num").nth(1).inner_text()
        await expect(row.locator("td.num").nth(1)).not_to_have_text(kwh, timeout=15_000)  # live
        await expect(operator.locator("#total-paid")).to_have_text("201")
        await operator.screenshot(path=artifact("dashboard.png"), full_page=True)

        async def confirm(dialog: Dialog) -> None:
            await dialog.accept()

        operator.once("dialog", confirm)
        await row.get_by_role("button", name="Stop").click()
        await expect(operator.locator("#flash")).to_have_text(
            f"remote stop of session {session_id}: Accepted"
        )
        # the driver's page follows: the receipt with its ledger
        await expect(driver.locator("#receipt-card")).to_be_visible(timeout=30_000)
        await expect(driver.locator("#receipt-outcome")).to_have_text("settled")
        await expect(driver.locator("#state")).to_have_attribute("data-state", "ended")
        await expect(driver.locator("#stop-card")).to_be_hidden()
        await expect(driver.locator("#receipt-card tbody tr")).to_have_count(1)
        await driver.screenshot(path=artifact("driver-receipt.png"), full_page=True)
        await expect(row).to_have_count(0, timeout=10_000)  # gone from the active sessions
    # everything the pages used came from satwatt itself (no CDN, no web font, works offline)
    assert requested and all(url.startswith(server.http_url + "/") for url in requested), requested
