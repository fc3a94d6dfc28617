"""Fixtures of the simulator tests: a test central system and fast charge points."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from chargepoint_sim import ChargePoint, ChargePointOptions, create_charge_point
from tests.sim.csms_double import CsmsDouble, DoubleConfig

FAST: dict[str, Any] = {
    "reconnect_min_s": 0.05,
    "reconnect_max_s": 0.5,
    "reboot_delay_s": 0.05,
    "boot_retry_default_s": 0.2,
    "call_timeout_s": 5.0,
    "message_retry_s": 0.1,
    "validate_outbound": True,
}


@pytest.fixture
def double_config() -> DoubleConfig:
    return DoubleConfig()


@pytest.fixture
async def csms(double_config: DoubleConfig) -> AsyncIterator[CsmsDouble]:
    double = await CsmsDouble(double_config).start()
    yield double
    await double.stop()


MakeCp = Callable[..., ChargePoint]


@pytest.fixture
async def make_cp(csms: CsmsDouble) -> AsyncIterator[MakeCp]:
    made: list[ChargePoint] = []

    def make(protocol: str = "2.0.1", cp_id: str = "CP1", **kw: Any) -> ChargePoint:
        opts = {**FAST, **kw}
        cp = create_charge_point(ChargePointOptions(id=cp_id, csms_url=csms.url, protocol=protocol, **opts))
        made.append(cp)
        return cp

    yield make
    for cp in made:
        await cp.stop()


@pytest.fixture
def csms_thread_url() -> Iterator[str]:
    """A test central system running in its own thread and loop (for CLI commands that call asyncio.run)."""
    import asyncio
    import threading

    ready = threading.Event()
    holder: dict[str, Any] = {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        holder["loop"] = loop

        async def main() -> None:
            double = await CsmsDouble().start()
            holder["url"] = double.url
            holder["stop"] = asyncio.Event()
            ready.set()
            await holder["stop"].wait()
            await double.stop()

        loop.run_until_complete(main())
        loop.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(5)
    yield holder["url"]
    holder["loop"].call_soon_threadsafe(holder["stop"].set)
    t.join(10)
