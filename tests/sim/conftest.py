"""Fixtures of the simulator tests: a test central system and fast charge points."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
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
