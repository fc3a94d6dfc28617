"""The simulated charge point over real websockets against the test central system (ocpp library)."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

import pytest
from ocpp.v16 import call as c16
from ocpp.v201 import call as c201

from chargepoint_sim import Faults
from tests.sim.conftest import MakeCp
from tests.sim.csms_double import CsmsDouble, DoubleConfig

BOTH = pytest.mark.parametrize("protocol", ["1.6", "2.0.1"])


def _ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def samples(csms: CsmsDouble, protocol: str, cp_id: str = "CP1") -> list[dict[str, Any]]:
    """Periodic meter samples as {t, energy_wh, power_w, soc}, in arrival order."""
    out = []
    if protocol == "1.6":
        mvs = [mv for p in csms.payloads("MeterValues", cp_id) for mv in p["meterValue"]]
    else:
        mvs = [
            mv
            for p in csms.payloads("TransactionEvent", cp_id)
            if p["triggerReason"] == "MeterValuePeriodic"
            for mv in p["meterValue"]
        ]
    for mv in mvs:
        row: dict[str, Any] = {"t": _ts(mv["timestamp"])}
        for sv in mv["sampledValue"]:
            key = {
                "Energy.Active.Import.Register": "energy_wh",
                "Power.Active.Import": "power_w",
                "SoC": "soc",
            }
            row[key.get(sv.get("measurand", "Energy.Active.Import.Register"), "other")] = float(sv["value"])
        out.append(row)
    return out


async def set_meter_interval(csms: CsmsDouble, protocol: str, seconds: int) -> None:
    if protocol == "1.6":
        r = await csms.call(
            "CP1", c16.ChangeConfiguration(key="MeterValueSampleInterval", value=str(seconds))
        )
        assert r.status == "Accepted"
    else:
        r = await csms.call(
            "CP1",
            c201.SetVariables(
                set_variable_data=[
                    {
                        "attribute_value": str(seconds),
                        "component": {"name": "SampledDataCtrlr"},
                        "variable": {"name": "TxUpdatedInterval"},
                    }
                ]
            ),
        )
        assert r.set_variable_result[0]["attribute_status"] == "Accepted"


# ---------------------------------------------------------------------------------------------- boot


@pytest.mark.parametrize("double_config", [DoubleConfig(boot_pending=2, boot_interval=30)])
@BOTH
async def test_boot_retries_while_pending_honouring_interval(
    csms: CsmsDouble, make_cp: MakeCp, protocol: str
) -> None:
    cp = make_cp(protocol, clock_scale=100)  # 30 s simulated = 0.3 s real
    await cp.start()
    await cp.wait_online(5)
    boots = csms.messages("BootNotification")
    assert len(boots) == 3
    gaps = [b.t - a.t for a, b in itertools.pairwise(boots)]
    assert all(g >= 0.3 * 0.9 for g in gaps), gaps
    # nothing but boot while not accepted (no calls from the CSMS were made here)
    await csms.wait_count("StatusNotification", 1)
    first_other = next(i for i, m in enumerate(csms.received) if m.action != "BootNotification")
    assert first_other == 3
    assert cp.state == "accepted" and cp.heartbeat_interval == 300


@pytest.mark.parametrize(
    "double_config", [DoubleConfig(boot_rejected=1, boot_interval=20, heartbeat_interval=10)]
)
async def test_boot_rejected_then_heartbeats_at_interval(csms: CsmsDouble, make_cp: MakeCp) -> None:
    cp = make_cp("2.0.1", clock_scale=50)  # 10 s heartbeat = 0.2 s real
    await cp.start()
    await cp.wait_online(5)
    await csms.wait_count("Heartbeat", 3, timeout_s=5)
    hbs = csms.messages("Heartbeat")
    assert all(b.t - a.t >= 0.15 for a, b in itertools.pairwise(hbs))


@pytest.mark.parametrize("double_config", [DoubleConfig(passwords={"CP1": "s3cret"})])
async def test_basic_auth(csms: CsmsDouble, make_cp: MakeCp) -> None:
    bad = make_cp("1.6", cp_id="CP1", password="wrong")
    await bad.start()
    await bad.wait_for(lambda: bad.stats.connect_failures >= 1, 5)
    assert not bad.online
    await bad.stop()
    good = make_cp("1.6", cp_id="CP1", password="s3cret")
    await good.start()
    await good.wait_online(5)


# ---------------------------------------------------------------------------------------------- transactions


@BOTH
async def test_transaction_with_consistent_meter_values(
    csms: CsmsDouble, make_cp: MakeCp, protocol: str
) -> None:
    cp = make_cp(protocol, clock_scale=60)
    await cp.start()
    await cp.wait_online(5)
    await set_meter_interval(csms, protocol, 15)  # 0.25 s real
    await cp.plug_in(1, "sedan", soc=0.2)
    assert await cp.authorize(1, "TAG-A")
    await cp.wait_status(1, "Charging", 5)
    await csms.wait_for(lambda: len(samples(csms, protocol)) >= 4, 10)
    await cp.unplug(1)
    await cp.wait_outbox_empty(5)

    rows = samples(csms, protocol)
    for a, b in itertools.pairwise(rows):
        assert b["energy_wh"] >= a["energy_wh"]
        expected = a["power_w"] * (b["t"] - a["t"]) / 3600
        assert abs((b["energy_wh"] - a["energy_wh"]) - expected) <= 2 + 0.05 * expected
        assert b["soc"] >= a["soc"]
    assert all(r["power_w"] == 11000 for r in rows)

    if protocol == "1.6":
        start = csms.payloads("StartTransaction")[0]
        stop = csms.payloads("StopTransaction")[0]
        assert start["idTag"] == "TAG-A" and start["meterStart"] == 0
        assert stop["transactionId"] == 1001 and stop["reason"] == "EVDisconnected"
        assert stop["meterStop"] >= rows[-1]["energy_wh"]
        assert [p["transactionId"] for p in csms.payloads("MeterValues")] == [1001] * len(rows)
        statuses = [p["status"] for p in csms.payloads("StatusNotification") if p["connectorId"] == 1]
        assert statuses == ["Available", "Preparing", "Charging", "Available"]
    else:
        evs = csms.payloads("TransactionEvent")
        assert [e["seqNo"] for e in evs] == list(range(len(evs)))
        assert evs[0]["eventType"] == "Started" and evs[0]["idToken"]["idToken"] == "TAG-A"
        assert evs[-1]["eventType"] == "Ended"
        assert evs[-1]["transactionInfo"]["stoppedReason"] == "EVDisconnected"
        assert evs[-1]["triggerReason"] == "EVDeparted"
        assert len({e["transactionInfo"]["transactionId"] for e in evs}) == 1
        assert not any(e.get("offline") for e in evs)


@BOTH
async def test_invalid_tag_does_not_start(csms: CsmsDouble, make_cp: MakeCp, protocol: str) -> None:
    cp = make_cp(protocol)
    await cp.start()
    await cp.wait_online(5)
    await cp.plug_in(1)
    assert not await cp.authorize(1, "BLOCKED")
    assert cp.transaction(1) is None and cp.connector(1).status == "Preparing"


@BOTH
async def test_remote_start_and_stop(csms: CsmsDouble, make_cp: MakeCp, protocol: str) -> None:
    cp = make_cp(protocol)
    await cp.start()
    await cp.wait_online(5)
    await cp.plug_in(1, "suv", soc=0.5)
    if protocol == "1.6":
        r = await csms.call("CP1", c16.RemoteStartTransaction(id_tag="REMOTE-1", connector_id=1))
    else:
        r = await csms.call(
            "CP1",
            c201.RequestStartTransaction(
                id_token={"id_token": "REMOTE-1", "type": "Central"}, remote_start_id=7
            ),
        )
    assert r.status == "Accepted"
    tx = await cp.wait_transaction(1, 5)
    await cp.wait_status(1, "Charging", 5)
    assert tx.id_tag == "REMOTE-1"
    await cp.wait_outbox_empty(5)
    if protocol == "1.6":
        r = await csms.call("CP1", c16.RemoteStopTransaction(transaction_id=tx.csms_id))
    else:
        started = csms.payloads("TransactionEvent")[0]
        assert started["triggerReason"] == "RemoteStart"
        assert started["transactionInfo"]["remoteStartId"] == 7
        r = await csms.call("CP1", c201.RequestStopTransaction(transaction_id=tx.tx_id))
    assert r.status == "Accepted"
    await cp.wait_for(lambda: cp.transaction(1) is None, 5)
    await cp.wait_outbox_empty(5)
    if protocol == "1.6":
        assert csms.payloads("StopTransaction")[0]["reason"] == "Remote"
        r = await csms.call("CP1", c16.RemoteStopTransaction(transaction_id=424242))
        assert r.status == "Rejected"
    else:
        ended = csms.payloads("TransactionEvent")[-1]
        assert ended["eventType"] == "Ended" and ended["triggerReason"] == "RemoteStop"
        assert ended["transactionInfo"]["stoppedReason"] == "Remote"
    # the EV is still plugged: Finishing until it leaves
    assert cp.connector(1).status == "Finishing"


def _profile16(limit: float, unit: str = "W", purpose: str = "TxProfile", pid: int = 1) -> dict[str, Any]:
    return {
        "charging_profile_id": pid,
        "stack_level": 1,
        "charging_profile_purpose": purpose,
        "charging_profile_kind": "Relative",
        "charging_schedule": {
            "charging_rate_unit": unit,
            "charging_schedule_period": [{"start_period": 0, "limit": limit}],
        },
    }


def _profile201(
    limit: float, unit: str = "W", purpose: str = "TxProfile", tx_id: str | None = None
) -> dict[str, Any]:
    p: dict[str, Any] = {
        "id": 1,
        "stack_level": 1,
        "charging_profile_purpose": purpose,
        "charging_profile_kind": "Relative",
        "charging_schedule": [
            {
                "id": 1,
                "charging_rate_unit": unit,
                "charging_schedule_period": [{"start_period": 0, "limit": limit}],
            }
        ],
    }
    if tx_id:
        p["transaction_id"] = tx_id
    return p


@BOTH
async def test_charging_profile_changes_metered_power(
    csms: CsmsDouble, make_cp: MakeCp, protocol: str
) -> None:
    cp = make_cp(protocol, clock_scale=60)
    await cp.start()
    await cp.wait_online(5)
    await set_meter_interval(csms, protocol, 15)
    await cp.plug_in(1, "suv", soc=0.2)  # 22 kW
    await cp.authorize(1, "TAG")
    tx = await cp.wait_transaction(1)
    await csms.wait_for(lambda: len(samples(csms, protocol)) >= 2, 5)
    await cp.wait_outbox_empty(5)
    if protocol == "1.6":
        r = await csms.call(
            "CP1", c16.SetChargingProfile(connector_id=1, cs_charging_profiles=_profile16(16, unit="A"))
        )
    else:
        r = await csms.call(
            "CP1", c201.SetChargingProfile(evse_id=1, charging_profile=_profile201(16, "A", tx_id=tx.tx_id))
        )
    assert r.status == "Accepted"
    n = len(samples(csms, protocol))
    await csms.wait_for(lambda: len(samples(csms, protocol)) >= n + 3, 5)
    rows = samples(csms, protocol)
    assert rows[0]["power_w"] == 22000
    limited = rows[n + 1 :]
    assert all(r["power_w"] == pytest.approx(16 * 230 * 3) for r in limited)
    for a, b in itertools.pairwise(limited):
        expected = 11040 * (b["t"] - a["t"]) / 3600
        assert abs((b["energy_wh"] - a["energy_wh"]) - expected) <= 2 + 0.05 * expected

    # limit 0: the EV draws nothing, SuspendedEVSE; clearing the profile resumes charging
    if protocol == "1.6":
        r = await csms.call("CP1", c16.SetChargingProfile(connector_id=1, cs_charging_profiles=_profile16(0)))
    else:
        r = await csms.call("CP1", c201.SetChargingProfile(evse_id=1, charging_profile=_profile201(0)))
    assert r.status == "Accepted"
    await cp.wait_status(1, "SuspendedEVSE", 5)
    assert cp.connector(1).power_w() == 0
    if protocol == "1.6":
        r = await csms.call("CP1", c16.ClearChargingProfile(id=1))
    else:
        r = await csms.call("CP1", c201.ClearChargingProfile(charging_profile_id=1))
    assert r.status == "Accepted"
    await cp.wait_status(1, "Charging", 5)
    assert cp.connector(1).power_w() == 22000
    if protocol == "2.0.1":
        await cp.wait_outbox_empty(5)
        states = [
            e["transactionInfo"]["chargingState"]
            for e in csms.payloads("TransactionEvent")
            if e["triggerReason"] == "ChargingStateChanged"
        ]
        assert states == ["SuspendedEVSE", "Charging"]


@BOTH
async def test_rejecting_charger(csms: CsmsDouble, make_cp: MakeCp, protocol: str) -> None:
    cp = make_cp(protocol, faults=Faults(reject_charging_profiles=True))
    await cp.start()
    await cp.wait_online(5)
    if protocol == "1.6":
        prof = _profile16(5000, purpose="TxDefaultProfile")
        r = await csms.call("CP1", c16.SetChargingProfile(connector_id=1, cs_charging_profiles=prof))
    else:
        r = await csms.call(
            "CP1",
            c201.SetChargingProfile(
                evse_id=1, charging_profile=_profile201(5000, purpose="TxDefaultProfile")
            ),
        )
    assert r.status == "Rejected"
    assert cp.connector(1).limit_w is None


@BOTH
async def test_reset_reboots_and_reconnects(csms: CsmsDouble, make_cp: MakeCp, protocol: str) -> None:
    cp = make_cp(protocol)
    await cp.start()
    await cp.wait_online(5)
    await cp.plug_in(1)
    await cp.authorize(1, "TAG")
    await cp.wait_transaction(1)
    await cp.wait_outbox_empty(5)
    if protocol == "1.6":
        r = await csms.call("CP1", c16.Reset(type="Soft"))
    else:
        r = await csms.call("CP1", c201.Reset(type="Immediate"))
    assert r.status == "Accepted"
    await csms.wait_count("BootNotification", 2, timeout_s=5)
    await cp.wait_online(5)
    assert csms.connections["CP1"] == 2 and cp.connect_count == 2
    if protocol == "1.6":
        assert csms.payloads("StopTransaction")[0]["reason"] == "SoftReset"
    else:
        ended = csms.payloads("TransactionEvent")[-1]
        assert ended["eventType"] == "Ended" and ended["triggerReason"] == "ResetCommand"
        assert ended["transactionInfo"]["stoppedReason"] == "ImmediateReset"
        assert csms.payloads("BootNotification")[1]["reason"] == "RemoteReset"


# ---------------------------------------------------------------------------------------------- faults


async def test_offline_replay_201_in_order_with_offline_flag(csms: CsmsDouble, make_cp: MakeCp) -> None:
    cp = make_cp("2.0.1", clock_scale=60, meter_interval_s=15)
    await cp.start()
    await cp.wait_online(5)
    await cp.plug_in(1)
    await cp.authorize(1, "TAG")
    await csms.wait_for(lambda: len(samples(csms, "2.0.1")) >= 1, 5)
    await cp.wait_outbox_empty(5)
    before = len(csms.payloads("TransactionEvent"))
    cp.go_offline()
    await cp.wait_for(lambda: cp.state == "offline", 5)
    await cp.wait_for(lambda: len(cp.outbox) >= 3, 5)  # samples queue up while offline
    await cp.unplug(1)  # the transaction ends while offline
    queued = len(cp.outbox)
    assert len(csms.payloads("TransactionEvent")) == before
    cp.go_online()
    await cp.wait_outbox_empty(5)
    evs = csms.payloads("TransactionEvent")
    assert [e["seqNo"] for e in evs] == list(range(len(evs)))
    replayed = evs[before:]
    assert len(replayed) == queued
    assert all(e.get("offline") is True for e in replayed)
    assert replayed[-1]["eventType"] == "Ended"
    # the replay arrives before the fresh status after reconnect? statuses are not transaction messages:
    energies = [e["meterValue"][0]["sampledValue"][0]["value"] for e in evs if "meterValue" in e]
    assert energies == sorted(energies)


async def test_offline_replay_16_start_while_offline(csms: CsmsDouble, make_cp: MakeCp) -> None:
    cp = make_cp("1.6", clock_scale=60, meter_interval_s=15)
    await cp.start()
    await cp.wait_online(5)
    await cp.disconnect(for_s=0.6)
    assert not cp.online
    await cp.plug_in(1)
    assert await cp.authorize(1, "OFFLINE-TAG")  # LocalAuthorizeOffline
    await cp.wait_for(lambda: len(cp.outbox) >= 3, 5)
    await cp.wait_online(5)
    await cp.wait_outbox_empty(5)
    await cp.unplug(1)
    await cp.wait_outbox_empty(5)
    actions = [
        m.action for m in csms.received if m.action in ("StartTransaction", "MeterValues", "StopTransaction")
    ]
    assert actions[0] == "StartTransaction" and actions[-1] == "StopTransaction"
    assert "Authorize" not in [m.action for m in csms.received]
    assert {p["transactionId"] for p in csms.payloads("MeterValues")} == {1001}
    assert csms.payloads("StopTransaction")[0]["transactionId"] == 1001
    assert cp.disconnect_count == 1


@BOTH
async def test_duplicate_sends_same_unique_id(csms: CsmsDouble, make_cp: MakeCp, protocol: str) -> None:
    cp = make_cp(protocol, faults=Faults(duplicate_sends=True))
    await cp.start()
    await cp.wait_online(5)
    await cp.plug_in(1)
    await cp.authorize(1, "TAG")
    await cp.wait_transaction(1)
    await cp.wait_outbox_empty(5)
    action = "StartTransaction" if protocol == "1.6" else "TransactionEvent"
    await csms.wait_count(action, 2)
    starts = csms.messages(action)
    assert len(starts) == 2 and starts[0].unique_id == starts[1].unique_id
    assert starts[0].payload == starts[1].payload
    assert cp.online  # the stray second answer did not confuse the charger


async def test_duplicate_sends_new_id(csms: CsmsDouble, make_cp: MakeCp) -> None:
    cp = make_cp("1.6", faults=Faults(duplicate_sends=True, duplicate_mode="new_id"))
    await cp.start()
    await cp.wait_online(5)
    await cp.plug_in(1)
    await cp.authorize(1, "TAG")
    tx = await cp.wait_transaction(1)
    await cp.wait_outbox_empty(5)
    starts = csms.messages("StartTransaction")
    assert len(starts) == 2 and starts[0].unique_id != starts[1].unique_id
    assert tx.csms_id == 1001  # keeps the id of the first answer


@BOTH
async def test_quirks(csms: CsmsDouble, make_cp: MakeCp, protocol: str) -> None:
    quirks = {"energy_kwh", "missing_measurand", "meter_values_without_tx_id", "naive_timestamps"}
    cp = make_cp(protocol, clock_scale=60, meter_interval_s=15, faults=Faults(quirks=quirks))
    await cp.start()
    await cp.wait_online(5)
    await cp.plug_in(1)
    await cp.authorize(1, "TAG")
    await csms.wait_count("MeterValues", 2, timeout_s=5)
    p = csms.payloads("MeterValues")[-1]
    assert "transactionId" not in p
    energy = p["meterValue"][0]["sampledValue"][0]
    assert "measurand" not in energy
    unit = energy["unit"] if protocol == "1.6" else energy["unitOfMeasure"]["unit"]
    assert unit == "kWh" and 0 < float(energy["value"]) < 1
    assert not p["meterValue"][0]["timestamp"].endswith("Z")


async def test_clock_skew(csms: CsmsDouble, make_cp: MakeCp) -> None:
    cp = make_cp("2.0.1", faults=Faults(clock_skew_s=-3600))
    await cp.start()
    await cp.wait_online(5)
    await csms.wait_count("StatusNotification", 1)
    ts = _ts(csms.payloads("StatusNotification")[0]["timestamp"])
    assert ts == pytest.approx(datetime.now().timestamp() - 3600, abs=30)


# ------------------------------------------------------------------------------------ other CSMS calls


async def test_16_configuration_trigger_unlock_availability_datatransfer(
    csms: CsmsDouble, make_cp: MakeCp
) -> None:
    cp = make_cp("1.6", connectors=2)
    await cp.start()
    await cp.wait_online(5)
    r = await csms.call("CP1", c16.GetConfiguration(key=["HeartbeatInterval", "NumberOfConnectors", "Nope"]))
    keys = {k["key"]: k for k in r.configuration_key}
    assert keys["NumberOfConnectors"]["value"] == "2" and keys["NumberOfConnectors"]["readonly"]
    assert r.unknown_key == ["Nope"]
    assert (
        await csms.call("CP1", c16.ChangeConfiguration(key="HeartbeatInterval", value="5"))
    ).status == "Accepted"
    assert cp.heartbeat_interval == 5
    assert (
        await csms.call("CP1", c16.ChangeConfiguration(key="NumberOfConnectors", value="5"))
    ).status == "Rejected"
    assert (await csms.call("CP1", c16.ChangeConfiguration(key="Bogus", value="1"))).status == "NotSupported"
    assert (
        await csms.call("CP1", c16.ChangeConfiguration(key="HeartbeatInterval", value="x"))
    ).status == "Rejected"

    n = len(csms.messages("Heartbeat"))
    assert (await csms.call("CP1", c16.TriggerMessage(requested_message="Heartbeat"))).status == "Accepted"
    await csms.wait_count("Heartbeat", n + 1)
    n = len(csms.messages("StatusNotification"))
    r = await csms.call("CP1", c16.TriggerMessage(requested_message="StatusNotification", connector_id=2))
    assert r.status == "Accepted"
    await csms.wait_count("StatusNotification", n + 1)

    await cp.plug_in(2)
    await cp.authorize(2, "TAG")
    await cp.wait_transaction(2)
    r = await csms.call("CP1", c16.ChangeAvailability(connector_id=2, type="Inoperative"))
    assert r.status == "Scheduled"
    r = await csms.call("CP1", c16.ChangeAvailability(connector_id=1, type="Inoperative"))
    assert r.status == "Accepted"
    await cp.wait_status(1, "Unavailable")
    assert (await csms.call("CP1", c16.UnlockConnector(connector_id=2))).status == "Unlocked"
    await cp.wait_for(lambda: cp.transaction(2) is None)
    await cp.unplug(2)
    await cp.wait_status(2, "Unavailable")  # the scheduled change applied after the transaction
    await cp.wait_outbox_empty()
    assert csms.payloads("StopTransaction")[0]["reason"] == "UnlockCommand"

    r = await csms.call("CP1", c16.DataTransfer(vendor_id="satwatt", message_id="invoice", data="lnbcrt1..."))
    assert r.status == "Accepted" and cp.data_transfers[-1]["data"] == "lnbcrt1..."
    with pytest.raises(Exception, match="NotImplemented"):
        await csms.call("CP1", c16.UpdateFirmware(location="http://x", retrieve_date="2030-01-01T00:00:00Z"))


async def test_201_variables_trigger_unlock_availability_cost(csms: CsmsDouble, make_cp: MakeCp) -> None:
    cp = make_cp("2.0.1")
    await cp.start()
    await cp.wait_online(5)
    r = await csms.call(
        "CP1",
        c201.GetVariables(
            get_variable_data=[
                {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
                {"component": {"name": "Nope"}, "variable": {"name": "X"}},
                {"component": {"name": "TxCtrlr"}, "variable": {"name": "Nope"}},
            ]
        ),
    )
    statuses = [x["attribute_status"] for x in r.get_variable_result]
    assert statuses == ["Accepted", "UnknownComponent", "UnknownVariable"]
    assert r.get_variable_result[0]["attribute_value"] == "300"
    r = await csms.call(
        "CP1",
        c201.SetVariables(
            set_variable_data=[
                {
                    "attribute_value": "7",
                    "component": {"name": "OCPPCommCtrlr"},
                    "variable": {"name": "HeartbeatInterval"},
                },
                {
                    "attribute_value": "x",
                    "component": {"name": "ChargingStation"},
                    "variable": {"name": "Model"},
                },
                {
                    "attribute_value": "EVConnected",
                    "component": {"name": "TxCtrlr"},
                    "variable": {"name": "TxStartPoint"},
                },
            ]
        ),
    )
    assert [x["attribute_status"] for x in r.set_variable_result] == ["Accepted", "Rejected", "Accepted"]
    assert cp.heartbeat_interval == 7

    # TxStartPoint EVConnected: the transaction starts at plug-in, authorisation comes later
    await cp.plug_in(1)
    tx = await cp.wait_transaction(1)
    assert not tx.authorized and cp.connector(1).status == "Preparing"
    r = await csms.call("CP1", c201.UnlockConnector(evse_id=1, connector_id=1))
    assert r.status == "Unlocked"  # not yet authorised
    await cp.authorize(1, "TAG")
    await cp.wait_status(1, "Charging")
    r = await csms.call("CP1", c201.UnlockConnector(evse_id=1, connector_id=1))
    assert r.status == "OngoingAuthorizedTransaction"
    await cp.wait_outbox_empty()
    evs = csms.payloads("TransactionEvent")
    assert evs[0]["triggerReason"] == "CablePluggedIn" and "idToken" not in evs[0]
    assert evs[1]["triggerReason"] == "Authorized" and evs[1]["idToken"]["idToken"] == "TAG"

    n = len(csms.payloads("TransactionEvent"))
    r = await csms.call("CP1", c201.TriggerMessage(requested_message="TransactionEvent"))
    assert r.status == "Accepted"
    await csms.wait_count("TransactionEvent", n + 1)
    assert csms.payloads("TransactionEvent")[-1]["triggerReason"] == "Trigger"

    r = await csms.call("CP1", c201.CostUpdated(total_cost=1.25, transaction_id=tx.tx_id))
    assert cp.costs[-1]["totalCost"] == 1.25
    r = await csms.call("CP1", c201.ChangeAvailability(operational_status="Inoperative", evse={"id": 1}))
    assert r.status == "Scheduled"
    r = await csms.call("CP1", c201.Reset(type="OnIdle"))
    assert r.status == "Scheduled"
    await cp.unplug(1)
    await csms.wait_count("BootNotification", 2)  # the scheduled reset happens once idle
    await cp.wait_online()
    await cp.wait_status(1, "Unavailable")
    r = await csms.call("CP1", c201.DataTransfer(vendor_id="satwatt", message_id="hello"))
    assert r.status == "Accepted"


async def test_201_get_base_report(csms: CsmsDouble, make_cp: MakeCp) -> None:
    cp = make_cp("2.0.1")
    await cp.start()
    await cp.wait_online(5)
    r = await csms.call("CP1", c201.GetBaseReport(request_id=3, report_base="FullInventory"))
    assert r.status == "Accepted"
    await csms.wait_for(lambda: any(not p["tbc"] for p in csms.payloads("NotifyReport")))
    reports = csms.payloads("NotifyReport")
    assert [p["seqNo"] for p in reports] == list(range(len(reports)))
    names = {(d["component"]["name"], d["variable"]["name"]) for p in reports for d in p["reportData"]}
    assert ("SampledDataCtrlr", "TxUpdatedInterval") in names
