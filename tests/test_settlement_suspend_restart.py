"""A restart between a Suspend decision and its execution (issue 8: "one suspension carried out after a
restart wrote no `suspended` event, while the following `resumed` was written").

satwatt runs against a simnet the test owns, so satwatt can stop and start again while the node and the
charger's session carry on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ocpp.v16 import call as call16
from sqlalchemy import select

from csms.db.models import SessionEvent, SettlementAction
from lightning.simnet import Simnet
from tests.ocpp_clients import at, connect_charger
from tests.sessions_helpers import follow_events, pay, payer_node
from tests.test_ocpp16 import energy, register
from tests.test_settlement_flow import sell_at
from tests.test_settlement_restart import satwatt, settings_for


async def test_a_suspension_decided_before_a_restart_is_carried_out_and_logged_after_it(
    database_url: str, tmp_path: Path
) -> None:
    simnet = Simnet(tmp_path / "simnet", port=0)
    await simnet.start()
    data_dir = tmp_path / "satwatt"
    try:
        async with satwatt(settings_for(database_url, data_dir, simnet)) as first:
            api = first.api()
            await register(api, "CP-SR")
            await sell_at(api, "CP-SR", grace_s=600, stop_after_s=600)  # only the allowance cuts here
            payer = (await api.post("/api/v1/payers", json={"name": "Sam", "id_tags": ["SAM-CARD"]})).json()
            async with connect_charger(first.ocpp_url, "CP-SR", "1.6") as cp:
                cp.recorder.hold["SetChargingProfile"] = asyncio.Event()  # never answered on this connection
                start = await cp.call(
                    call16.StartTransaction(
                        connector_id=1, id_tag="SAM-CARD", meter_start=1000, timestamp=at(0)
                    )
                )
                tx = start.transaction_id
                sessions = (
                    await api.get("/api/v1/sessions", headers={"Authorization": f"Bearer {payer['token']}"})
                ).json()
                session_id = sessions[0]["id"]
                async with follow_events(first.http_url, session_id, payer["token"]) as events:
                    first_invoice = (await events.next("invoice")).data
                # 60 Wh drawn, nothing paid, allowance 50 Wh: Suspend is decided and sent, never answered
                await cp.call(
                    call16.MeterValues(
                        connector_id=1, transaction_id=tx, meter_value=[energy(1060, 7000, 10)]
                    )
                )
                await cp.recorder.wait_for("SetChargingProfile")
            await api.aclose()
        # satwatt stopped with the suspension decided but not carried out
        async with satwatt(settings_for(database_url, data_dir, simnet)) as again:
            async with again.app.state.service.db() as db:
                pending = list(
                    await db.scalars(
                        select(SettlementAction.kind).where(SettlementAction.status == "pending")
                    )
                )
                logged = list(await db.scalars(select(SessionEvent.kind)))
            assert "Suspend" in pending and "suspended" not in logged
            async with (
                connect_charger(again.ocpp_url, "CP-SR", "1.6") as cp,
                follow_events(again.http_url, session_id, payer["token"]) as events,
                payer_node(simnet, "car2") as car,
            ):
                # carried out after the restart, once the charger is back: the cut and its event
                assert (await events.next("suspended")).data["how"] == "charging profile"
                (profile,) = await cp.recorder.wait_for("SetChargingProfile", timeout=20)
                schedule = profile["csChargingProfiles"]["charging_schedule"]
                assert [p["limit"] for p in schedule["charging_schedule_period"]] == [0]
                await pay(car, first_invoice["bolt11"])
                await events.next("resumed")
                await cp.recorder.wait_for("ClearChargingProfile")
            async with again.app.state.service.db() as db:
                kinds = list(
                    await db.scalars(
                        select(SessionEvent.kind)
                        .where(SessionEvent.kind.in_(("suspended", "resumed")))
                        .order_by(SessionEvent.id)
                    )
                )
            assert kinds == ["suspended", "resumed"]
    finally:
        await simnet.stop()
