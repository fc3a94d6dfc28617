"""Shared fixtures: a database (SQLite always, PostgreSQL when CSMS_TEST_DATABASE_URL is set) and a
running satwatt server on a free port, reached over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from csms.app import create_app
from csms.db.migrate import upgrade_to_head
from csms.db.models import Base
from csms.security import ApiKey
from csms.server_config import uvicorn_config
from csms.settings import Settings

PG_URL = os.environ.get("CSMS_TEST_DATABASE_URL")
DATABASES = ["sqlite", *(["postgresql"] if PG_URL else [])]


async def _pg_admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@contextlib.contextmanager
def fresh_pg_database(prefix: str) -> Iterator[str]:
    """A new, migrated PostgreSQL database beside CSMS_TEST_DATABASE_URL's, dropped afterwards."""
    assert PG_URL is not None
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    base, _, _ = PG_URL.rpartition("/")
    asyncio.run(_pg_admin(PG_URL, f'CREATE DATABASE "{name}"'))
    url = f"{base}/{name}"
    upgrade_to_head(url)
    try:
        yield url
    finally:
        asyncio.run(_pg_admin(PG_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """A throwaway PostgreSQL database for this test run, migrated once."""
    if not PG_URL:
        yield None
        return
    with fresh_pg_database("satwatt_test") as url:
        yield url


async def _truncate(url: str) -> None:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture(params=DATABASES)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path, pg_database: str | None) -> str:
    """A migrated, empty database: a new SQLite file, or the run's PostgreSQL database emptied."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        await asyncio.to_thread(upgrade_to_head, url)
        return url
    assert pg_database is not None
    await _truncate(pg_database)
    return pg_database


@dataclass
class RunningServer:
    settings: Settings
    app: Any
    api_key: str
    port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ocpp_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    def api(self, key: str | None = "operator") -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.api_key if key == 'operator' else key}"} if key else {}
        return httpx.AsyncClient(base_url=self.http_url, headers=headers, timeout=30)


class ReadyServer(uvicorn.Server):
    """uvicorn's server with an event set once it listens (tests wait on it, not on a timer)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.set()


async def start_server(
    settings: Settings, api_key: str | ApiKey
) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    """satwatt served as ``csms serve`` serves it (TLS included), on a free port of 127.0.0.1; the key
    plain, or as ``csms serve`` loads it (an ApiKey)."""
    app = create_app(settings, ApiKey.from_plain(api_key) if isinstance(api_key, str) else api_key)
    config = uvicorn_config(app, settings, host="127.0.0.1", port=0, ws_ping_interval=None, log_level="info")
    server = ReadyServer(config)
    task = asyncio.create_task(server.serve(sockets=None))
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait([task, ready], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if not server.ready.is_set():
        ready.cancel()
        if task.done():
            task.result()
        raise RuntimeError("satwatt did not start listening")
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, port


@pytest.fixture
def server_settings(database_url: str, tmp_path: Path) -> dict[str, Any]:
    """Settings for the test server; tests may change them before asking for ``server``."""
    return {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "auto_migrate": True,
        "meter_sample_interval_s": 10,
        "ocpp_call_timeout_s": 5,
        "ocpp_max_message_bytes": 8192,
        "simnet_port": 0,
        "simnet_cars": 2,
        "settlement_tick_ms": 100,
        # most tests register chargers without a password; tests/test_charger_security.py tests the
        # default (CSMS_REQUIRE_CHARGER_PASSWORD on)
        "require_charger_password": False,
    }


@pytest.fixture
async def server(server_settings: dict[str, Any]) -> AsyncIterator[RunningServer]:
    settings = Settings(**server_settings)
    key = "test-key-" + secrets.token_hex(8)
    uv_server, task, port = await start_server(settings, key)
    try:
        yield RunningServer(settings, uv_server.config.app, key, port)
    finally:
        uv_server.should_exit = True
        await asyncio.wait_for(task, 20)


@pytest.fixture
async def api(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with server.api() as client:
        yield client
