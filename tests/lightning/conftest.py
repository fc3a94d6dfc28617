"""Fixtures: a real simnet (gRPC + TLS on a free port) and lnd backends connected to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from lightning.lnd import LndBackend, LndConfig, RetryPolicy
from lightning.simnet import Faults, NodeSpec, Simnet

FAST_RETRY = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=0.3, unavailable_timeout_s=5.0)
NODES = (
    NodeSpec("satwatt", 1_000_000),
    NodeSpec("car1", 1_000_000),
    NodeSpec("car2", 10),
    NodeSpec("wallet"),
)


async def wait_for(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds (polling), failing the test after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            result = predicate()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.01)


@pytest.fixture
def simnet_dir(tmp_path: Path) -> Path:
    return tmp_path / "simnet"


@pytest.fixture
async def simnet(simnet_dir: Path) -> AsyncIterator[Simnet]:
    net = Simnet(simnet_dir, port=0, nodes=NODES, faults=Faults(), seed=1)
    await net.start()
    try:
        yield net
    finally:
        await net.stop()


@pytest.fixture
async def make_backend(simnet: Simnet) -> AsyncIterator[Callable[..., LndBackend]]:
    created: list[LndBackend] = []

    def make(node: str = "satwatt", kind: str = "admin", retry: RetryPolicy = FAST_RETRY) -> LndBackend:
        backend = LndBackend(LndConfig.from_simnet(simnet, node, kind), retry=retry, call_timeout_s=5)
        created.append(backend)
        return backend

    yield make
    for backend in created:
        await backend.close()


@pytest.fixture
def seller(make_backend: Callable[..., LndBackend]) -> LndBackend:
    return make_backend("satwatt")


@pytest.fixture
def car1(make_backend: Callable[..., LndBackend]) -> LndBackend:
    return make_backend("car1")
