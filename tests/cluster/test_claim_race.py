"""Two processes' registries on one real NATS, in this test's event loop: a release request that reaches
the first process while its claim is still loading the charger (before its connection is registered)
must leave the charger with the newer connection's process alone, not with both."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from csms.cluster.link import ClusterLink
from csms.cluster.registry import REPLACED, ClusterRegistry
from csms.ocpp.registry import ChargerConnection
from tests.cluster.processes import NATS_URL, delete_buckets, nats_reachable


class Closable:
    """The websocket and the RPC endpoint of a connection, as far as the registry closes them."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.rpc_closed = False

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        if code is None:  # the RPC endpoint's close()
            self.rpc_closed = True
        else:
            self.reason = reason


def connection(charger_id: str, closable: Closable) -> ChargerConnection:
    return ChargerConnection(
        charger_id, "2.0.1", adapter=None, rpc=closable, socket=closable, remote_address=None
    )  # type: ignore[arg-type]


@pytest.fixture
async def registries() -> AsyncIterator[tuple[ClusterRegistry, ClusterRegistry]]:
    if not nats_reachable():
        pytest.skip(f"cluster mode needs NATS with JetStream at {NATS_URL} (`.ci/run` starts it)")
    name = "t" + secrets.token_hex(5)
    links = [ClusterLink(NATS_URL, name, 3), ClusterLink(NATS_URL, name, 3)]
    made = []
    try:
        for link in links:
            await link.start()
            registry = ClusterRegistry(link, 5)
            await registry.ownership.start()
            made.append(registry)
        yield made[0], made[1]
    finally:
        for registry in made:
            await registry.ownership.stop()
        for link in links:
            await link.stop()
        await delete_buckets(name)


async def test_a_release_during_the_claims_load_closes_the_older_connection_and_forgets_it(
    registries: tuple[ClusterRegistry, ClusterRegistry],
) -> None:
    first, second = registries
    loading, loaded = asyncio.Event(), asyncio.Event()
    calls: list[tuple[str, str]] = []

    async def slow_load(charger_id: str) -> None:  # the first process loads the charger's sessions...
        calls.append(("claimed", charger_id))
        loading.set()
        await loaded.wait()

    async def forget(charger_id: str) -> None:
        calls.append(("released", charger_id))

    async def nothing(charger_id: str) -> None:
        return None

    first.on_claimed, first.on_released = slow_load, forget
    second.on_claimed, second.on_released = nothing, nothing
    older, newer = Closable(), Closable()
    registering = asyncio.create_task(first.register(connection("CP-race", older)))
    async with asyncio.timeout(10):
        await loading.wait()
        # ...when the charger's newer connection reaches the second process, which takes it over
        assert await second.register(connection("CP-race", newer))
        assert calls == [("claimed", "CP-race")]  # the release left forgetting to the claim under way
        loaded.set()
        assert await registering is False
    assert older.reason == REPLACED and older.rpc_closed  # closed, not registered
    assert first.get("CP-race") is None and not first.ownership.holds("CP-race")
    assert calls == [("claimed", "CP-race"), ("released", "CP-race")]  # what it loaded, forgotten once
    assert second.get("CP-race") is not None and second.ownership.holds("CP-race")
    assert newer.reason is None
    owner: Any = await first.ownership.owner("CP-race")
    assert owner is not None and owner.process_id == second.process_id
