"""Connections that never finish their handshake are closed after CSMS_HANDSHAKE_TIMEOUT_S, and one
address may hold at most CSMS_MAX_PENDING_CONNECTIONS_PER_ADDRESS of them (issue 8)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ocpp.v201 import call as call201

from csms.connection_guard import HandshakeGuard
from csms.settings import Settings
from tests.conftest import RunningServer, start_server
from tests.ocpp_clients import connect_charger


@contextlib.asynccontextmanager
async def satwatt(database_url: str, tmp_path: Path, **settings: Any) -> AsyncIterator[RunningServer]:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "simnet_port": 0,
        "simnet_cars": 0,
        "allow_unknown_chargers": True,
    }
    server, task, port = await start_server(Settings(**(values | settings)), "guard-key")
    try:
        yield RunningServer(server.config.app.state.settings, server.config.app, "guard-key", port)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def guard_of(server: RunningServer) -> HandshakeGuard:
    guard = server.app.state.handshake_guard
    assert isinstance(guard, HandshakeGuard)
    return guard


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection (bounded: the test fails, not hangs)."""
    return await asyncio.wait_for(reader.read(), 60)


async def test_500_unfinished_handshakes_are_closed(database_url: str, tmp_path: Path) -> None:
    async with satwatt(
        database_url, tmp_path, handshake_timeout_s=1, max_pending_connections_per_address=0
    ) as server:
        connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            for n in range(500):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                if n % 2:  # half send part of a websocket upgrade request, half nothing at all
                    writer.write(b"GET /ocpp/CP-slow HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
                    await writer.drain()
                connections.append((reader, writer))
            received = await asyncio.gather(*(closed_by_server(reader) for reader, _ in connections))
        finally:
            for _, writer in connections:
                writer.close()
        assert received == [b""] * 500  # closed without an answer: there was no request to answer
        guard = guard_of(server)
        assert guard.timed_out == 500 and guard.pending() == 0
        # the server still serves: a charger connects and is answered
        async with connect_charger(server.ocpp_url, "CP-after", "2.0.1") as cp:
            assert (await cp.call(call201.Heartbeat())).current_time


async def test_an_admitted_charger_is_not_timed_out(database_url: str, tmp_path: Path) -> None:
    """The timeout covers the handshake only: a charger admitted before it stays connected after it."""
    async with satwatt(database_url, tmp_path, handshake_timeout_s=1) as server:
        async with connect_charger(server.ocpp_url, "CP-stays", "2.0.1") as cp:
            assert guard_of(server).pending() == 0
            # an unfinished handshake opened now is closed by the timeout; the charger is still served
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                assert await closed_by_server(reader) == b""
            finally:
                writer.close()
            assert (await cp.call(call201.Heartbeat())).current_time
        assert guard_of(server).timed_out == 1


async def test_pending_connections_are_bounded_per_address(database_url: str, tmp_path: Path) -> None:
    async with satwatt(
        database_url, tmp_path, handshake_timeout_s=60, max_pending_connections_per_address=5
    ) as server:
        guard = guard_of(server)
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(5)]
        try:
            # a sixth unfinished connection from the same address is answered 429 and closed at once
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            refused = await closed_by_server(reader)
            writer.close()
            assert refused.startswith(b"HTTP/1.1 429 ")
            assert b"too many unfinished connections" in refused
            assert guard.refused == 1 and guard.pending("127.0.0.1") == 5
            # one idle connection finishes a request: it no longer counts, and a charger gets in
            first_reader, first_writer = idle[0]
            first_writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await first_writer.drain()
            assert (await asyncio.wait_for(first_reader.readline(), 30)).startswith(b"HTTP/1.1 200")
            assert guard.pending("127.0.0.1") == 4
            async with connect_charger(server.ocpp_url, "CP-bounded", "2.0.1") as cp:
                assert (await cp.call(call201.Heartbeat())).current_time
                # established websockets do not count: many chargers may share one (NAT) address
                assert guard.pending("127.0.0.1") == 4
        finally:
            for _, idle_writer in idle:
                idle_writer.close()


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("handshake_timeout_s", 0, "CSMS_HANDSHAKE_TIMEOUT_S"),
        ("max_pending_connections_per_address", -1, "CSMS_MAX_PENDING_CONNECTIONS_PER_ADDRESS"),
    ],
)
def test_guard_settings_are_checked(setting: str, value: int, message: str) -> None:
    from csms.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match=message):
        load_settings(**{setting: value})
