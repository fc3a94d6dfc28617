"""Energy that cannot be true is never billed (issue 8), end to end over real websockets and databases:
an implausible reading is answered as usual, kept as received with its reason, shown in the meter series
and the session's events, counted in /metrics, and moves neither energy_wh nor settlement."""

from __future__ import annotations

from typing import Any

import httpx
from ocpp.v16 import call as call16

from csms.charging.plausibility import (
    FASTER_THAN_MAX_POWER,
    FROM_THE_FUTURE,
    REGISTER_DECREASED,
    REGISTER_OUT_OF_RANGE,
)
from csms.settings import Settings
from tests.conftest import RunningServer
from tests.ocpp_clients import at, connect_charger
from tests.sessions_helpers import follow_events, pay, payer_node
from tests.test_live_state import serving
from tests.test_ocpp16 import energy, register
from tests.test_ocpp201 import event, meter
from tests.test_settlement_flow import sell_at


def register_16(value: str, timestamp: str, unit: str = "Wh") -> dict[str, Any]:
    sampled = {"value": value, "measurand": "Energy.Active.Import.Register", "unit": unit}
    return {"timestamp": timestamp, "sampledValue": [sampled]}


async def only_session(api: httpx.AsyncClient, charger_id: str) -> dict[str, Any]:
    (session,) = (await api.get("/api/v1/sessions", params={"charger_id": charger_id})).json()
    return (await api.get(f"/api/v1/sessions/{session['id']}")).json()


async def anomaly_counts(api: httpx.AsyncClient) -> dict[str, int]:
    text = (await api.get("/metrics")).text
    prefix = 'satwatt_meter_anomalies_total{reason="'
    return {
        line.removeprefix(prefix).split('"')[0]: int(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


async def test_the_issue_16_transaction_ends_on_its_plausible_readings(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    """meterStart 1000, samples 2000, 1500, 1200, 5000, "1000000000", 6000, 3.0 kWh a minute apart,
    meterStop 500: 5000 Wh delivered (6000 - 1000), every other reading flagged with its reason."""
    await register(api, "CP-issue")
    async with connect_charger(server.ocpp_url, "CP-issue", "1.6") as cp:
        start = await cp.call(
            call16.StartTransaction(connector_id=1, id_tag="T", meter_start=1000, timestamp=at(0))
        )
        tx = start.transaction_id
        samples = [("2000", "Wh"), ("1500", "Wh"), ("1200", "Wh"), ("5000", "Wh")]
        samples += [("1000000000", "Wh"), ("6000", "Wh"), ("3.0", "kWh")]
        for minute, (value, unit) in enumerate(samples, start=1):
            reply = await cp.call(
                call16.MeterValues(
                    connector_id=1, transaction_id=tx, meter_value=[register_16(value, at(60 * minute), unit)]
                )
            )
            assert reply is not None  # MeterValues.conf: the message itself was valid
        detail = await only_session(api, "CP-issue")
        async with follow_events(server.http_url, detail["id"], server.api_key) as events:
            stop = await cp.call(call16.StopTransaction(meter_stop=500, timestamp=at(480), transaction_id=tx))
            assert stop is not None
            ended = await events.next("ended")
    detail = await only_session(api, "CP-issue")
    assert detail["state"] == "ended" and ended.data["energy_wh"] == 5000
    assert detail["energy_wh"] == 5000 and detail["meter_start_wh"] == 1000
    assert detail["meter_stop_wh"] is None  # 500 is below the start: not taken (kept in the event)
    series = [(p["register_wh"], p["energy_wh"], p["anomaly"]) for p in detail["meter_series"]]
    assert series == [
        (2000, 1000, None),
        (1500, None, REGISTER_DECREASED),
        (1200, None, REGISTER_DECREASED),
        (5000, 4000, None),
        (1_000_000_000, None, FASTER_THAN_MAX_POWER),
        (6000, 5000, None),
        (3000, None, REGISTER_DECREASED),
    ]
    anomalies = [(e.data["reading"], e.data["register_wh"], e.data["reason"]) for e in events.of("anomaly")]
    assert anomalies == [
        ("sample", 1500, REGISTER_DECREASED),
        ("sample", 1200, REGISTER_DECREASED),
        ("sample", 1_000_000_000, FASTER_THAN_MAX_POWER),
        ("sample", 3000, REGISTER_DECREASED),
        ("meterStop", 500, REGISTER_DECREASED),
    ]
    counts = await anomaly_counts(api)
    assert counts[REGISTER_DECREASED] == 4 and counts[FASTER_THAN_MAX_POWER] == 1
    assert counts[FROM_THE_FUTURE] == counts[REGISTER_OUT_OF_RANGE] == 0


async def test_an_implausible_16_meter_stop_repeated_in_its_transaction_data_is_flagged_once(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    """A StopTransaction whose meterStop is also its Transaction.End sample: below the previous reading,
    the register is flagged once, as that sample (not again as the meterStop), and not taken."""
    await register(api, "CP-low-stop16")
    async with connect_charger(server.ocpp_url, "CP-low-stop16", "1.6") as cp:
        start = await cp.call(
            call16.StartTransaction(connector_id=1, id_tag="T", meter_start=1000, timestamp=at(0))
        )
        tx = start.transaction_id
        await cp.call(
            call16.MeterValues(connector_id=1, transaction_id=tx, meter_value=[register_16("1500", at(60))])
        )
        end = register_16("1.2", at(120), "kWh")
        end["sampledValue"][0]["context"] = "Transaction.End"
        stop = call16.StopTransaction(
            meter_stop=1200, timestamp=at(120), transaction_id=tx, transaction_data=[end]
        )
        assert await cp.call(stop) is not None
    detail = await only_session(api, "CP-low-stop16")
    assert detail["state"] == "ended" and detail["energy_wh"] == 500
    assert detail["meter_stop_wh"] is None
    flagged = [(p["register_wh"], p["anomaly"]) for p in detail["meter_series"] if p["anomaly"]]
    assert flagged == [(1200, REGISTER_DECREASED)]
    assert (await anomaly_counts(api))[REGISTER_DECREASED] == 1


async def test_a_201_register_of_10_to_the_18_wh_is_not_energy(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    await register(api, "CP-huge")
    async with connect_charger(server.ocpp_url, "CP-huge", "2.0.1") as cp:
        begin = [meter(1000, 0, 0, "Transaction.Begin")]
        await cp.call(event("Started", 0, 0, tx="HUGE", trigger="Authorized", id_token="T", values=begin))
        await cp.call(event("Updated", 1, 60, tx="HUGE", values=[meter(10**18, 11_000, 60)]))
        await cp.call(event("Updated", 2, 120, tx="HUGE", values=[meter(1500, 11_000, 120)]))
        ended = await cp.call(
            event("Ended", 3, 180, tx="HUGE", stopped="EVDisconnected", values=[meter(2000, 0, 180)])
        )
        assert ended is not None
    detail = await only_session(api, "CP-huge")
    assert detail["energy_wh"] == 1000 and detail["meter_start_wh"] == 1000
    flagged = [(p["register_wh"], p["anomaly"]) for p in detail["meter_series"] if p["anomaly"]]
    assert flagged == [(10**18, REGISTER_OUT_OF_RANGE)]
    assert (await anomaly_counts(api))[REGISTER_OUT_OF_RANGE] == 1


async def test_an_implausible_201_stop_reading_is_flagged_once_and_not_the_meter_stop(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    """The Ended event's final register is one of its sampled values: below the previous reading, it is
    flagged once (as a sample, not again as a stop reading) and the session has no meter_stop_wh."""
    await register(api, "CP-low-stop")
    async with connect_charger(server.ocpp_url, "CP-low-stop", "2.0.1") as cp:
        begin = [meter(1000, 0, 0, "Transaction.Begin")]
        await cp.call(event("Started", 0, 0, tx="LOW", trigger="Authorized", id_token="T", values=begin))
        await cp.call(event("Updated", 1, 60, tx="LOW", values=[meter(1500, 11_000, 60)]))
        end = [meter(1200, 0, 120, "Transaction.End")]
        assert await cp.call(event("Ended", 2, 120, tx="LOW", stopped="EVDisconnected", values=end))
    detail = await only_session(api, "CP-low-stop")
    assert detail["state"] == "ended" and detail["energy_wh"] == 500
    assert detail["meter_stop_wh"] is None
    flagged = [(p["register_wh"], p["anomaly"]) for p in detail["meter_series"] if p["anomaly"]]
    assert flagged == [(1200, REGISTER_DECREASED)]
    assert (await anomaly_counts(api))[REGISTER_DECREASED] == 1


async def test_a_negative_meter_start_and_a_reading_from_the_year_9999(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    """A negative meterStart is a valid message with an impossible register: the transaction starts
    (the charger gets its transactionId), the start is taken from the first plausible reading."""
    await register(api, "CP-odd")
    async with connect_charger(server.ocpp_url, "CP-odd", "1.6") as cp:
        start = await cp.call(
            call16.StartTransaction(connector_id=1, id_tag="T", meter_start=-5, timestamp=at(0))
        )
        tx = start.transaction_id
        assert tx > 0
        for value in (energy(100, 7000, 60), energy(150, 7000, 90)):
            await cp.call(call16.MeterValues(connector_id=1, transaction_id=tx, meter_value=[value]))
        future = register_16("90000", "9999-12-31T23:59:59Z")
        assert await cp.call(call16.MeterValues(connector_id=1, transaction_id=tx, meter_value=[future]))
        await cp.call(
            call16.MeterValues(connector_id=1, transaction_id=tx, meter_value=[energy(300, 7000, 120)])
        )
    detail = await only_session(api, "CP-odd")
    assert detail["meter_start_wh"] == 100 and detail["energy_wh"] == 200
    flagged = [(p["timestamp"][:4], p["anomaly"]) for p in detail["meter_series"] if p["anomaly"]]
    assert flagged == [("9999", FROM_THE_FUTURE)]
    counts = await anomaly_counts(api)
    assert counts[REGISTER_OUT_OF_RANGE] == 1 and counts[FROM_THE_FUTURE] == 1  # meterStart, the sample


async def test_a_retried_implausible_sample_is_flagged_once(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    await register(api, "CP-retry")
    async with connect_charger(server.ocpp_url, "CP-retry", "1.6") as cp:
        start = await cp.call(
            call16.StartTransaction(connector_id=1, id_tag="T", meter_start=0, timestamp=at(0))
        )
        tx = start.transaction_id
        bogus = register_16("1000000000", at(10))
        for _ in range(2):  # the answer was lost: the same message again
            await cp.call(call16.MeterValues(connector_id=1, transaction_id=tx, meter_value=[bogus]))
    detail = await only_session(api, "CP-retry")
    assert [p["anomaly"] for p in detail["meter_series"]] == [FASTER_THAN_MAX_POWER]
    assert detail["energy_wh"] == 0 and (await anomaly_counts(api))[FASTER_THAN_MAX_POWER] == 1


async def test_a_sold_session_is_neither_billed_nor_suspended_for_an_implausible_reading(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    """A payer with credit for 100 Wh: a reading of a billion Wh would bill them for it, or suspend
    them (allowance 50 Wh); flagged, it does neither. The session settles on the 60 Wh metered."""
    charger_id = "CP-sold"
    await register(api, charger_id)
    await sell_at(api, charger_id)
    payer = (await api.post("/api/v1/payers", json={"name": "Ann", "id_tags": ["ANN-CARD"]})).json()
    simnet = server.app.state.lightning.simnet
    async with connect_charger(server.ocpp_url, charger_id, "1.6") as cp, payer_node(simnet, "car2") as car:
        start = await cp.call(
            call16.StartTransaction(connector_id=1, id_tag="ANN-CARD", meter_start=1000, timestamp=at(0))
        )
        tx = start.transaction_id
        (session,) = (
            await api.get("/api/v1/sessions", headers={"Authorization": f"Bearer {payer['token']}"})
        ).json()
        async with follow_events(server.http_url, session["id"], payer["token"]) as events:
            first = (await events.next("invoice")).data
            await pay(car, first["bolt11"])
            await events.next("paid")
            bogus = energy(1_000_000_000, 7000, 10)
            await cp.call(call16.MeterValues(connector_id=1, transaction_id=tx, meter_value=[bogus]))
            assert (await events.next("anomaly")).data["reason"] == FASTER_THAN_MAX_POWER
            await cp.call(
                call16.MeterValues(connector_id=1, transaction_id=tx, meter_value=[energy(1040, 7000, 20)])
            )
            assert (await events.next("meter")).data["energy_wh"] == 40
            await cp.call(call16.StopTransaction(meter_stop=1060, timestamp=at(30), transaction_id=tx))
            closed = (await events.next("closed")).data
    detail = (await api.get(f"/api/v1/sessions/{session['id']}")).json()
    assert closed["outcome"] == "settled" and detail["energy_wh"] == 60 and detail["cost_msat"] == 6_000
    assert not events.of("suspended") and not events.of("stopping")
    assert [e.data["energy_wh"] for e in events.of("meter")] == [40]
    invoices = (await api.get(f"/api/v1/sessions/{session['id']}/invoices")).json()
    assert all(i["energy_wh"] <= 100 for i in invoices) and invoices[0]["status"] == "paid"


async def test_after_a_restart_readings_are_judged_against_what_the_log_kept(
    server_settings: dict[str, Any],
) -> None:
    """satwatt restarts mid-transaction: the session's start and highest register come back from the
    log, and a reading below that register, or a jump no connector could make, is still flagged."""
    settings = Settings(**server_settings)
    async with serving(settings, "key-1") as first_run:
        async with first_run.api() as api:
            await register(api, "CP-again")
        async with connect_charger(first_run.ocpp_url, "CP-again", "1.6") as cp:
            start = await cp.call(
                call16.StartTransaction(connector_id=1, id_tag="T", meter_start=1000, timestamp=at(0))
            )
            tx = start.transaction_id
            await cp.call(
                call16.MeterValues(connector_id=1, transaction_id=tx, meter_value=[energy(3000, 0, 60)])
            )
    async with serving(settings, "key-2") as second_run, second_run.api() as api:
        async with connect_charger(second_run.ocpp_url, "CP-again", "1.6") as cp:
            for value in (energy(2000, 0, 120), energy(10**9, 0, 180), energy(3500, 0, 240)):
                await cp.call(call16.MeterValues(connector_id=1, transaction_id=tx, meter_value=[value]))
        detail = await only_session(api, "CP-again")
    assert detail["energy_wh"] == 2500
    assert [p["anomaly"] for p in detail["meter_series"]] == [
        None,
        REGISTER_DECREASED,
        FASTER_THAN_MAX_POWER,
        None,
    ]
