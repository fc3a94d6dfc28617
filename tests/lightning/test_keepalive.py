"""gRPC keepalive as LND enforces it (issue 8: GOAWAY ``too_many_pings``).

Time is compressed 30x: LND's policy scaled down (pings at least 1/6 s apart instead of 5 s, only
while a call is open) and a client pinging every second (30 s scaled the same way; gRPC's C-core
client never pings more often than once a second), so the ratio between what the client does and
what the node permits is the real one. A TCP proxy between them counts connections and the
client's writes: while the stream is idle the client writes only keepalive pings (and acks), so
the tests wait for a number of them, not for a span of time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lightning import InvoiceCursor
from lightning.keepalive import CLIENT_KEEPALIVE_S, LND_KEEPALIVE, KeepalivePolicy
from lightning.lnd import LndBackend, LndConfig
from lightning.simnet import Simnet

from .conftest import FAST_RETRY, NODES, wait_for

SCALE = 1 / 30
POLICY = LND_KEEPALIVE.scaled(SCALE)
CLIENT_S = CLIENT_KEEPALIVE_S * SCALE  # 1 s against a minimum of 1/6 s, as 30 s against 5 s
# What the simnet enforced before issue 8 (its option had a misspelt name, so gRPC's default of
# 5 minutes applied), scaled the same way: the client's pings every 30 s were strikes.
OLD_SIMNET = KeepalivePolicy(client_ping_min_wait_s=300, client_allow_ping_without_stream=True).scaled(SCALE)


class CountingProxy:
    """A TCP relay counting connections and the chunks the client sends on each."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.connections = 0
        self.client_writes = 0
        self.server: asyncio.Server | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            try:
                while data := await src.read(65536):
                    if count:
                        self.client_writes += 1
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        for coro in (pipe(reader, up_writer, True), pipe(up_reader, writer, False)):
            task = asyncio.get_running_loop().create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


@pytest.fixture
def policy() -> KeepalivePolicy:
    return POLICY


@pytest.fixture
async def fast_simnet(tmp_path: Path, policy: KeepalivePolicy) -> AsyncIterator[Simnet]:
    net = Simnet(tmp_path / "simnet", port=0, nodes=NODES, keepalive=policy)
    await net.start()
    try:
        yield net
    finally:
        await net.stop()


@pytest.fixture
async def proxy(fast_simnet: Simnet) -> AsyncIterator[CountingProxy]:
    relay = CountingProxy(fast_simnet.port)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()


def _backend(simnet: Simnet, proxy: CountingProxy, keepalive_s: float, policy: KeepalivePolicy) -> LndBackend:
    config = LndConfig.from_paths(
        f"127.0.0.1:{proxy.port}", simnet.tls_cert_path, simnet.macaroon_path("satwatt")
    )
    return LndBackend(config, retry=FAST_RETRY, keepalive_s=keepalive_s, keepalive_policy=policy)


async def _idle_stream(simnet: Simnet, proxy: CountingProxy, backend: LndBackend, pings: int) -> None:
    """Open the invoice stream, then let it sit idle until the client wrote ``pings`` times."""
    stream = backend.invoice_updates(InvoiceCursor(1, 1))
    first = asyncio.get_running_loop().create_task(anext(stream))
    try:
        await wait_for(lambda: simnet.invoice_subscribers("satwatt") == 1)
        before = proxy.client_writes
        # Bounded: `pings` keepalive intervals, plus slack for a loaded machine.
        await wait_for(lambda: proxy.client_writes - before >= pings or proxy.connections > 1, 30)
    finally:
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        await stream.aclose()


async def test_idle_stream_keeps_its_connection(fast_simnet: Simnet, proxy: CountingProxy) -> None:
    backend = _backend(fast_simnet, proxy, CLIENT_S, POLICY)
    try:
        await backend.create_invoice(1_000, "first")  # the node has an invoice and a settle index 0
        await _idle_stream(fast_simnet, proxy, backend, pings=6)
        # Six keepalive pings on an idle stream (the node sends away at the third strike): no
        # GOAWAY, the same one connection.
        assert proxy.connections == 1
        assert backend.health.reconnects == 0
        await backend.create_invoice(1_000, "after the idle period")  # the channel still works
        assert proxy.connections == 1
    finally:
        await backend.close()


@pytest.mark.parametrize("policy", [OLD_SIMNET])
async def test_the_old_simnet_policy_sent_the_client_away(fast_simnet: Simnet, proxy: CountingProxy) -> None:
    """The control: the same client and the same wait see GOAWAY too_many_pings when the node
    permits less than the client does (issue 8 as it was)."""
    backend = _backend(fast_simnet, proxy, CLIENT_S, POLICY)
    try:
        await backend.create_invoice(1_000, "first")
        await _idle_stream(fast_simnet, proxy, backend, pings=20)
        assert proxy.connections > 1  # the node closed the connection; the client had to reconnect
    finally:
        await backend.close()


def test_client_refuses_a_keepalive_the_node_would_punish() -> None:
    with pytest.raises(ValueError, match="too_many_pings"):
        LND_KEEPALIVE.client_options(keepalive_s=1.0)
    options = dict(LND_KEEPALIVE.client_options())
    assert options["grpc.keepalive_time_ms"] >= 5_000
    assert options["grpc.keepalive_permit_without_calls"] == 0  # LND: no pings without a call


def test_simnet_enforces_lnd_s_policy() -> None:
    options = dict(LND_KEEPALIVE.server_options())
    assert options == {
        "grpc.http2.min_ping_interval_without_data_ms": 5_000,
        "grpc.keepalive_permit_without_calls": 0,
        "grpc.http2.max_ping_strikes": 2,
        "grpc.keepalive_time_ms": 60_000,
        "grpc.keepalive_timeout_ms": 20_000,
    }
