"""Fixtures for the web pages' tests: satwatt with fast settlement and simulated charge points (from
tests/demo/conftest.py), and an HTTP client that behaves like a browser (cookies, no redirects)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import RunningServer
from tests.demo.conftest import server_settings, stations  # noqa: F401  (fixtures used here)


@pytest.fixture
async def browser_client(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """No Authorization header: what a phone's browser sends (cookies only)."""
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
        yield client
