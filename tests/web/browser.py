"""Headless Chromium for the browser tests: Debian's ``chromium`` driven through Playwright's Python API
(never ``playwright install``: nothing is downloaded), with a fresh profile on each launch."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

#: Flags that work as root in a container: no sandbox, no GPU, nothing phoning home.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(os.environ.get("SATWATT_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))


def chromium_path() -> str | None:
    return os.environ.get("SATWATT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> str:
    """The browser's path; without one the test is skipped (scripts/test.sh installs it), or fails when
    SATWATT_REQUIRE_BROWSER=1 (CI)."""
    path = chromium_path()
    if path is None:
        message = "no chromium on this machine (scripts/test.sh installs Debian's chromium as root)"
        if os.environ.get("SATWATT_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Chromium, headless; Playwright gives each launch a new, empty profile directory (removed after)."""
    executable = require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
