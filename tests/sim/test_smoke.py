from __future__ import annotations

import pytest

from tests.sim.conftest import MakeCp
from tests.sim.csms_double import CsmsDouble


@pytest.mark.parametrize("protocol", ["1.6", "2.0.1"])
async def test_boot_and_charge(csms: CsmsDouble, make_cp: MakeCp, protocol: str) -> None:
    cp = make_cp(protocol, clock_scale=60, meter_interval_s=30)
    await cp.start()
    await cp.wait_online(5)
    await cp.plug_in(1, "sedan", soc=0.3)
    assert await cp.authorize(1, "TAG1")
    await cp.wait_status(1, "Charging", 5)
    action = "MeterValues" if protocol == "1.6" else "TransactionEvent"
    await csms.wait_count(action, 3, timeout_s=5)
    await cp.unplug(1)
    await cp.wait_outbox_empty(5)
    for m in csms.received:
        print(m.action, m.payload)
