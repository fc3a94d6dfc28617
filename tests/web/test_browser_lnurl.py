"""In headless Chromium: the connector page's LNURL-pay QR, a phone wallet (tests/lnurl/wallet.py) prepays
from it, the session page charging with its stop-and-withdraw QR and a top-up by a plain invoice, and
after the stop the receipt's withdraw QR, which the wallet takes the change with, once."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from tests.conftest import RunningServer
from tests.lnurl.wallet import LnurlRefused, Wallet
from tests.sessions_helpers import pay, payer_node
from tests.web.browser import artifact, chromium
from tests.web.test_browser import PHONE

pytestmark = pytest.mark.browser


async def test_prepay_from_the_sticker_charge_and_withdraw_from_the_receipt(
    server: RunningServer, stations: Callable[..., Any]
) -> None:
    station = await stations("LNURL-1", "1.6", prepay_min_msat=1_000_000, prepay_max_msat=2_000_000)
    await station.cp.plug_in(1, ev="sedan", soc=0.3)
    simnet = server.app.state.lightning.simnet
    async with (
        chromium() as browser,
        payer_node(simnet, "car1") as node,
        httpx.AsyncClient(timeout=60) as http,
    ):
        wallet = Wallet(node, http)
        phone = await browser.new_context(**PHONE)
        page = await phone.new_page()
        await page.goto(f"{server.http_url}/c/LNURL-1/1")
        await expect(page.locator("#lnurl-qr")).to_be_visible()
        await page.wait_for_function("() => document.getElementById('lnurl-qr').naturalWidth > 0")
        href = await page.locator("#lnurl-link").get_attribute("href")
        assert href is not None and re.fullmatch(r"lightning:LNURL1[0-9A-Z]+", href)
        await page.screenshot(path=artifact("driver-lnurl-pay.png"), full_page=True)
        # the wallet scans it and prepays 1,000 sat; its success action opens the session page
        offer = await wallet.scan(href)
        paid = await wallet.pay(offer, 1_000_000)
        assert paid.success_action is not None
        await page.goto(paid.success_action["url"])
        await page.wait_for_url(re.compile(r"/s/[A-Za-z0-9_-]+$"))  # the k1 is not left in the URL
        await expect(page.locator("#state")).to_have_attribute("data-state", "charging", timeout=20_000)
        await expect(page.locator("#stop-lnurl-qr")).to_be_visible()
        await page.wait_for_function("() => document.getElementById('stop-lnurl-qr').naturalWidth > 0")
        await page.wait_for_function(
            "() => parseFloat(document.getElementById('energy').textContent) > 0", timeout=20_000
        )
        await page.screenshot(path=artifact("driver-prepaid-charging.png"), full_page=True)
        # a top-up by a plain invoice (a wallet without LNURL): the page shows it, the wallet pays it
        await page.locator("#topup-sat").fill("1000")
        await page.locator("#topup-invoice").click()
        await expect(page.locator("#invoice-card")).to_be_visible()
        await expect(page.locator("#invoice-energy")).to_contain_text("(top-up)")
        await expect(page.locator("#invoice-amount")).to_have_text("1,000")
        await pay(node, await page.locator("#bolt11").input_value())
        await expect(page.locator("#invoice-card")).to_be_hidden(timeout=20_000)
        await expect(page.locator("#paid")).to_have_text("2,000")
        # stopped from the page: the receipt offers the change as an LNURL-withdraw QR
        await page.locator("#stop").click()
        await expect(page.locator("#receipt-card")).to_be_visible(timeout=30_000)
        await expect(page.locator("#withdraw-qr")).to_be_visible()
        await page.wait_for_function("() => document.getElementById('withdraw-qr').naturalWidth > 0")
        await page.screenshot(path=artifact("driver-receipt-withdraw.png"), full_page=True)
        withdraw_href = await page.locator("#withdraw-link").get_attribute("href")
        assert withdraw_href is not None
        withdraw = await wallet.scan(withdraw_href)
        assert withdraw["tag"] == "withdrawRequest" and 1_000_000 < withdraw["maxWithdrawable"] < 2_000_000
        received = await wallet.withdraw(withdraw)
        assert received.amount_paid_msat == withdraw["maxWithdrawable"]
        with pytest.raises(LnurlRefused, match="already withdrawn"):
            await wallet.scan(withdraw_href)
        # the receipt on the screen shows the refund as it is paid, without a reload
        await expect(page.locator("#receipt-refunded")).to_be_visible(timeout=20_000)
        await expect(page.locator("#withdraw-qr")).to_have_count(0)
        await page.reload()
        await expect(page.locator("#receipt-refunded")).to_be_visible()
        await expect(page.locator("#withdraw-qr")).to_have_count(0)
