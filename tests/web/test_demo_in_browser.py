"""The issue's "done when": while `csms demo` runs, a new user opens the dashboard and a driver page in a
browser and sees live sessions (the demo's wallet pays what the driver page shows)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.web.browser import chromium

pytestmark = pytest.mark.browser


async def banner(process: asyncio.subprocess.Process) -> str:
    """The demo's banner, read until its last line."""
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(60):
        while not any("Stop early with Ctrl-C" in line for line in lines):
            line = (await process.stdout.readline()).decode()
            assert line, "the demo exited early:\n" + "".join(lines)
            lines.append(line)
    return "".join(lines)


async def test_a_new_user_watches_the_demo_in_a_browser(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "csms", "demo", "--duration", "60", "--port", "0", "--no-live",
        "--data-dir", str(tmp_path / "demo"),
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        text = await banner(process)
        dashboard = re.search(r"Dashboard\s+(http://\S+/dashboard)", text)
        driver_url = re.search(r"Driver page\s+(http://\S+/c/DEMO-1/2)", text)
        key = re.search(r"operator key: (sw_demo_\S+)\)", text)
        assert dashboard and driver_url and key, text
        async with chromium() as browser:
            phone = await browser.new_page(viewport={"width": 390, "height": 844})
            await phone.goto(driver_url.group(1))
            await expect(phone.locator("#charger-online")).to_have_text("online")
            await phone.locator("#start").click()
            await expect(phone.locator("#invoice-qr")).to_be_visible()
            # the demo's wallet pays; the page turns to charging and the energy rises
            await expect(phone.locator("#state")).to_have_attribute("data-state", "charging", timeout=30_000)
            first = float(await phone.locator("#energy").inner_text())
            await phone.wait_for_function(
                "e => parseFloat(document.getElementById('energy').textContent) > e",
                arg=first,
                timeout=20_000,
            )
            desk = await browser.new_page(viewport={"width": 1280, "height": 900})
            await desk.goto(dashboard.group(1))
            await desk.locator("#key").fill(key.group(1))
            await desk.locator("#login").click()
            # the demo's cars and the visitor: several live sessions, and sats paid today
            await expect(
                desk.locator("#sessions tbody tr[data-session] .state-charging").first
            ).to_be_visible(timeout=20_000)
            await expect(desk.locator('#sessions tr:has-text("DEMO-1/2")')).to_have_count(1)
            await expect(desk.locator("#total-paid")).not_to_have_text("0")
            await expect(desk.locator("tr[data-charger] .dot.on")).to_have_count(4)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 30)
        if process.returncode is None:
            process.kill()
            await process.wait()
