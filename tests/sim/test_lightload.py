"""The light load client (closed loop and interval) against the test central system, which validates
every frame against the OCPP 1.6 schemas (an invalid frame would be answered with a CALLERROR)."""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from pathlib import Path

import pytest
import websockets
from ocpp.v16 import call as c16
from typer.testing import CliRunner
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from chargepoint_sim.cli import app
from chargepoint_sim.lightload import LightConfig, LightLoad
from tests.sim.csms_double import CsmsDouble


def _config(url: str, **kw: object) -> LightConfig:
    base: dict[str, object] = {
        "csms_url": url,
        "chargers": 4,
        "ramp_s": 0.1,
        "duration_s": 0.6,
        "setup_timeout_s": 10,
        "call_timeout_s": 5,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.2,
        "power_w": 3_600_000,  # 1 Wh per ms: the register visibly grows between back-to-back samples
        "freeze_gc": False,
    }
    base.update(kw)
    return LightConfig(**base)  # type: ignore[arg-type]


def _registers(csms: CsmsDouble, cp_id: str) -> list[int]:
    return [int(p["meterValue"][0]["sampledValue"][0]["value"]) for p in csms.payloads("MeterValues", cp_id)]


async def test_closed_loop_counts_every_answered_sample(csms: CsmsDouble) -> None:
    report = await LightLoad(_config(csms.url)).run()

    assert report["mode"] == "closed-loop" and report["errors"] == 0
    assert report["transactions"]["started"] == 4 and report["transactions"]["stopped"] == 4
    assert report["connections"]["held_at_end"] == 4 and report["connections"]["disconnects"] == 0
    meter = report["meter_values"]
    # every sample the central system received was answered and counted (in or after the window)
    sent = len(csms.messages("MeterValues"))
    assert 0 < meter["answered"] <= sent == report["calls"]["by_action"]["MeterValues"]["count"]
    assert meter["per_second"] == round(meter["answered"] / meter["window_s"], 1)
    lat = meter["latency"]
    assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    starts = {m.cp_id: m for m in csms.messages("StartTransaction")}
    assert set(starts) == {f"LOAD-{n:05d}" for n in range(1, 5)}
    for cp_id in starts:
        registers = _registers(csms, cp_id)
        assert registers == sorted(registers) and registers[-1] > registers[0]
        stamps = [p["meterValue"][0]["timestamp"] for p in csms.payloads("MeterValues", cp_id)]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # never one timestamp twice
        tx_ids = {p["transactionId"] for p in csms.payloads("MeterValues", cp_id)}
        (stop,) = csms.payloads("StopTransaction", cp_id)
        assert tx_ids == {stop["transactionId"]} and stop["meterStop"] >= registers[-1]


async def test_interval_mode_samples_every_charger(csms: CsmsDouble) -> None:
    report = await LightLoad(_config(csms.url, closed_loop=False, meter_interval_s=0.2, duration_s=1.0)).run()

    assert report["mode"] == "interval" and report["errors"] == 0
    for n in range(1, 5):
        assert len(csms.messages("MeterValues", f"LOAD-{n:05d}")) >= 2
    assert report["calls"]["by_action"]["MeterValues"]["count"] == len(csms.messages("MeterValues"))


async def test_suspension_holds_the_register_and_remote_stop_ends_the_transaction(csms: CsmsDouble) -> None:
    fleet = LightLoad(_config(csms.url, chargers=1, duration_s=30))
    run = asyncio.create_task(fleet.run())
    await csms.wait_count("MeterValues", 3)
    profile = {
        "chargingProfileId": 1,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Absolute",
        "transactionId": 1001,
        "chargingSchedule": {
            "chargingRateUnit": "W",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 0}],
        },
    }
    reply = await csms.call(
        "LOAD-00001", c16.SetChargingProfile(connector_id=1, cs_charging_profiles=profile)
    )
    assert reply.status == "Accepted"
    await csms.wait_count("MeterValues", len(csms.messages("MeterValues")) + 5)
    reply = await csms.call("LOAD-00001", c16.ClearChargingProfile())
    assert reply.status == "Accepted"
    await csms.wait_count("MeterValues", len(csms.messages("MeterValues")) + 5)
    reply = await csms.call("LOAD-00001", c16.RemoteStopTransaction(transaction_id=1001))
    assert reply.status == "Accepted"
    await csms.wait_count("StopTransaction", 1)
    fleet.finish()
    report = await run

    samples = [
        (
            int(p["meterValue"][0]["sampledValue"][0]["value"]),
            int(p["meterValue"][0]["sampledValue"][1]["value"]),
        )
        for p in csms.payloads("MeterValues", "LOAD-00001")
    ]
    powers = [power for _, power in samples]
    # charging, then suspended (power 0, the register holds), then charging again
    first_off = powers.index(0)
    back_on = powers.index(3_600_000, first_off)
    suspended = [register for register, _ in samples[first_off:back_on]]
    assert len(suspended) >= 5 and set(powers[first_off:back_on]) == {0} and len(set(suspended)) == 1
    assert samples[-1][0] > suspended[-1] and set(powers[back_on:]) == {3_600_000}
    (stop,) = csms.payloads("StopTransaction")
    assert stop["reason"] == "Remote" and stop["transactionId"] == 1001
    assert report["suspensions"] == 1 and report["transactions"]["remote_stops"] == 1
    assert report["inbound_calls"] == {
        "SetChargingProfile": 1,
        "ClearChargingProfile": 1,
        "RemoteStopTransaction": 1,
    }
    assert report["errors"] == 0


async def test_reconnects_boot_again_and_continue_the_transaction(csms: CsmsDouble) -> None:
    fleet = LightLoad(_config(csms.url, duration_s=30, end_transactions=False))
    run = asyncio.create_task(fleet.run())
    await csms.wait_count("MeterValues", 20)
    for cp in list(csms.cps.values()):
        await cp._connection.close()  # the central system drops everyone
    await csms.wait_count("BootNotification", 8)
    after = len(csms.messages("MeterValues"))
    await csms.wait_count("MeterValues", after + 20)
    fleet.finish()
    report = await run

    assert report["connections"]["disconnects"] == 4 and report["connections"]["boots"] == 8
    assert fleet.booted_since(0.0) == 4
    assert len(csms.messages("StartTransaction")) == 4  # the same transactions continue
    for n in range(1, 5):
        tx_ids = {p["transactionId"] for p in csms.payloads("MeterValues", f"LOAD-{n:05d}")}
        assert len(tx_ids) == 1


async def test_charging_fraction_leaves_the_others_idle_and_heartbeating(csms: CsmsDouble) -> None:
    cfg = _config(
        csms.url, chargers=4, closed_loop=False, meter_interval_s=0.2, duration_s=1.0,
        charging_fraction=0.5, heartbeat_interval_s=0.2,
    )  # fmt: skip
    fleet = LightLoad(cfg)
    report = await fleet.run()

    assert report["errors"] == 0 and report["connections"]["held_at_end"] == 4
    charging = {m.cp_id for m in csms.messages("StartTransaction")}
    assert charging == {"LOAD-00002", "LOAD-00004"}  # every second charger, spread evenly
    assert report["transactions"]["started"] == 2
    for idle in ("LOAD-00001", "LOAD-00003"):
        assert not csms.messages("MeterValues", idle)
        assert len(csms.messages("Heartbeat", idle)) >= 2
    for busy in charging:
        assert len(csms.messages("MeterValues", busy)) >= 2 and not csms.messages("Heartbeat", busy)
    assert report["calls"]["by_action"]["Heartbeat"]["count"] == len(csms.messages("Heartbeat"))


async def test_idle_chargers_heartbeat_at_the_interval_of_the_boot_answer(csms: CsmsDouble) -> None:
    csms.config.heartbeat_interval = 1  # the interval in the double's BootNotification answer
    fleet = LightLoad(_config(csms.url, chargers=2, closed_loop=False, duration_s=1.6, charging_fraction=0.0))
    await fleet.run()

    assert not csms.messages("StartTransaction")
    assert all(c.heartbeat_s == 1.0 for c in fleet.chargers)
    assert 2 <= len(csms.messages("Heartbeat")) <= 6


def test_cli_closed_loop(csms_thread_url: str, tmp_path: Path) -> None:
    out = tmp_path / "closed.json"
    args = ["load", "--csms", csms_thread_url, "--closed-loop", "--chargers", "3", "--ramp", "0.1"]
    result = CliRunner().invoke(app, [*args, "--duration", "0.5", "--json", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "closed-loop: 3 chargers" in result.output and "MeterValues answered" in result.output
    report = json.loads(out.read_text())
    assert report["transactions"]["started"] == 3 and report["meter_values"]["answered"] > 0
    assert report["errors"] == 0


def test_cli_light_client_speaks_16_only() -> None:
    result = CliRunner().invoke(
        app, ["load", "--csms", "ws://127.0.0.1:1/ocpp", "--closed-loop", "--protocol", "2.0.1"]
    )
    assert result.exit_code != 0 and "1.6 only" in result.output


async def test_more_urls_spread_the_fleet_and_a_lost_server_s_chargers_move_to_the_next(
    csms: CsmsDouble,
) -> None:
    other = await CsmsDouble().start()
    try:
        fleet = LightLoad(_config(csms.url, more_urls=(other.url,), duration_s=30, end_transactions=False))
        assert {url: [c.cid for c in chargers] for url, chargers in fleet.by_url().items()} == {
            csms.url: ["LOAD-00001", "LOAD-00003"],
            other.url: ["LOAD-00002", "LOAD-00004"],
        }
        run = asyncio.create_task(fleet.run())
        await other.wait_count("MeterValues", 10)
        await csms.wait_count("MeterValues", 10)
        await csms.stop()  # one process gone: its chargers connect to the other and continue
        await other.wait_count("BootNotification", 4)
        after = len(other.messages("MeterValues", "LOAD-00001"))
        await other.wait_count("MeterValues", len(other.messages("MeterValues")) + 20)
        fleet.finish()
        report = await run
    finally:
        await other.stop()

    assert report["connections"]["disconnects"] == 2
    assert [c.url for c in fleet.chargers] == [other.url] * 4
    assert len(other.messages("MeterValues", "LOAD-00001")) > after
    for cp_id in ("LOAD-00001", "LOAD-00003"):  # the transaction started at the first server continues
        assert len(csms.messages("StartTransaction", cp_id)) == 1
        assert not other.messages("StartTransaction", cp_id)
        assert {p["transactionId"] for p in other.payloads("MeterValues", cp_id)} == {
            p["transactionId"] for p in csms.payloads("MeterValues", cp_id)
        }


def test_more_urls_must_be_websocket_urls() -> None:
    with pytest.raises(ValueError, match="ws://"):
        LightConfig(csms_url="ws://a/ocpp", more_urls=("http://b/ocpp",))


async def test_max_connecting_bounds_the_attempts_in_flight(csms: CsmsDouble) -> None:
    fleet = LightLoad(_config(csms.url, chargers=6, ramp_s=0, max_connecting=1))
    assert fleet.connecting is not None
    report = await fleet.run()

    assert report["errors"] == 0 and report["connections"]["held_at_end"] == 6
    assert report["transactions"]["started"] == 6


def test_retry_after_is_read_in_seconds_and_bounded() -> None:
    from chargepoint_sim.lightload import _retry_after

    assert _retry_after("5") == 5.0 and _retry_after(None) == 0.0 and _retry_after("-3") == 0.0
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0 and _retry_after("99999") == 300.0


async def test_a_429_s_retry_after_is_waited_out() -> None:
    attempts = 0

    def busy(connection: ServerConnection, request: Request) -> Response:
        nonlocal attempts
        attempts += 1
        response = connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "too many connections\n")
        response.headers["Retry-After"] = "1"
        return response

    async def never(connection: ServerConnection) -> None:
        raise AssertionError("no handshake is admitted")

    async with websockets.serve(never, "127.0.0.1", 0, process_request=busy) as server:
        port = server.sockets[0].getsockname()[1]
        fleet = LightLoad(_config(f"ws://127.0.0.1:{port}/ocpp", chargers=1))
        await fleet.start()
        await asyncio.sleep(1.5)  # the back-off alone (0.05-0.2 s) would try about ten times
        await fleet.stop()

    assert fleet.refused[429] == attempts and 1 <= attempts <= 2
