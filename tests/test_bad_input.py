"""Values out of range or of the wrong form (issue 8): each gets its version's CALLERROR, decided at
validation before anything is stored, and the connection stays open. The ranges are those of the
csms.ocpp.schemas docstring. Frames are sent as raw text so that exactly these bytes reach satwatt."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import RunningServer
from tests.ocpp_clients import RawClient, at, raw_client
from tests.test_ocpp16 import register


class Lit(str):
    """A number written exactly as given (``1e30``, ``1E+400``, ``NaN``): Python's json would rewrite it."""


def render(payload: Any) -> str:
    """JSON text of ``payload`` with each Lit in place (lone surrogates are written as \\u escapes)."""
    literals: list[str] = []

    def mark(value: Any) -> Any:
        if isinstance(value, Lit):
            literals.append(str(value))
            return f"@lit{len(literals) - 1}@"
        if isinstance(value, dict):
            return {key: mark(item) for key, item in value.items()}
        if isinstance(value, list):
            return [mark(item) for item in value]
        return value

    text = json.dumps(mark(payload))
    for index, literal in enumerate(literals):
        text = text.replace(f'"@lit{index}@"', literal)
    return text


START_16 = {"connectorId": 1, "idTag": "CARD", "meterStart": 0, "timestamp": at(0)}
STOP_16 = {"transactionId": 1, "meterStop": 0, "timestamp": at(5)}
BOOT_16 = {"chargePointVendor": "Acme", "chargePointModel": "W1"}
TOKEN = {"idToken": "CARD", "type": "ISO14443"}
STATUS_16 = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
STATUS_201 = {"timestamp": at(0), "connectorStatus": "Available", "evseId": 1, "connectorId": 1}
SV = "meterValue[0].sampledValue[0]"
POWER = "Power.Active.Import"


def boot_201(vendor: str) -> dict[str, Any]:
    return {"reason": "PowerUp", "chargingStation": {"vendorName": vendor, "model": "W1"}}


def meter_16(
    value: str, unit: str = "Wh", measurand: str = "Energy.Active.Import.Register"
) -> dict[str, Any]:
    sampled = {"value": value, "unit": unit, "measurand": measurand}
    return {"connectorId": 1, "meterValue": [{"timestamp": at(1), "sampledValue": [sampled]}]}


def meter_201(
    value: Any, multiplier: Any = 0, unit: str = "Wh", measurand: str | None = None
) -> dict[str, Any]:
    sampled: dict[str, Any] = {"value": value, "unitOfMeasure": {"unit": unit, "multiplier": multiplier}}
    if measurand is not None:
        sampled["measurand"] = measurand
    return {"evseId": 1, "meterValue": [{"timestamp": at(1), "sampledValue": [sampled]}]}


def event_201(seq_no: int = 0, evse_id: int = 1, value: Any = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "eventType": "Started",
        "timestamp": at(0),
        "triggerReason": "Authorized",
        "seqNo": seq_no,
        "transactionInfo": {"transactionId": "T1"},
        "evse": {"id": evse_id, "connectorId": 1},
        "idToken": {"idToken": "CARD", "type": "ISO14443"},
    }
    if value is not None:
        event["meterValue"] = [{"timestamp": at(0), "sampledValue": [{"value": value}]}]
    return event


PROPERTY = "PropertyConstraintViolation"
FORMAT = {"1.6": "FormationViolation", "2.0.1": "FormatViolation"}
I64 = 2**63  # one beyond the signed 64-bit range
I32 = 2**31  # one beyond the signed 32-bit range

# version, action, payload, expected kind ("property" or "format"), field named in the details
REJECTED: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("1.6", "StartTransaction", START_16 | {"connectorId": I64}, "property", "connectorId"),
    ("1.6", "StartTransaction", START_16 | {"connectorId": I32}, "property", "connectorId"),
    # connector and EVSE ids are never negative; a 1.6 transaction is on a connector, not on 0
    ("1.6", "StartTransaction", START_16 | {"connectorId": -7}, "property", "connectorId"),
    ("1.6", "StartTransaction", START_16 | {"connectorId": 0}, "property", "connectorId"),
    ("1.6", "StatusNotification", STATUS_16 | {"connectorId": -7}, "property", "connectorId"),
    ("1.6", "MeterValues", meter_16("5") | {"connectorId": -7}, "property", "connectorId"),
    ("2.0.1", "TransactionEvent", event_201(evse_id=-7), "property", "evse.id"),
    ("2.0.1", "StatusNotification", STATUS_201 | {"evseId": -7}, "property", "evseId"),
    ("2.0.1", "MeterValues", meter_201(5) | {"evseId": -7}, "property", "evseId"),
    ("1.6", "StartTransaction", START_16 | {"meterStart": Lit("1e30")}, "property", "meterStart"),
    ("1.6", "StartTransaction", START_16 | {"meterStart": 10**30}, "property", "meterStart"),
    ("1.6", "StartTransaction", START_16 | {"meterStart": 10**18 + 1}, "property", "meterStart"),
    ("1.6", "StartTransaction", START_16 | {"idTag": "\ud800"}, "format", "idTag"),
    ("1.6", "StartTransaction", START_16 | {"idTag": "CA\u0000RD"}, "format", "idTag"),
    ("1.6", "StartTransaction", START_16 | {"timestamp": "9999-12-31T23:00:00-05:00"}, "format", "timestamp"),
    ("1.6", "StopTransaction", STOP_16 | {"meterStop": I64}, "property", "meterStop"),
    ("1.6", "Authorize", {"idTag": "\ud800"}, "format", "idTag"),
    ("1.6", "BootNotification", BOOT_16 | {"chargePointVendor": "\udfffAcme"}, "format", "chargePointVendor"),
    ("1.6", "BootNotification", BOOT_16 | {"chargePointModel": "W\ud83d"}, "format", "chargePointModel"),
    ("1.6", "DataTransfer", {"vendorId": "v", "data": "\udc00"}, "format", "data"),
    ("1.6", "StatusNotification", STATUS_16 | {"connectorId": 2**64}, "property", "connectorId"),
    ("1.6", "MeterValues", meter_16("1e30"), "property", f"{SV}.value"),
    ("1.6", "MeterValues", meter_16("1E+308"), "property", f"{SV}.value"),
    ("1.6", "MeterValues", meter_16("1000000000000000.001", "kWh"), "property", f"{SV}.value"),
    ("1.6", "MeterValues", meter_16(str(I32), "W", POWER), "property", f"{SV}.value"),
    ("1.6", "MeterValues", meter_16("NaN"), "format", f"{SV}.value"),
    ("1.6", "MeterValues", meter_16("Infinity"), "format", f"{SV}.value"),
    ("1.6", "MeterValues", meter_16("12 kWh"), "format", f"{SV}.value"),
    ("2.0.1", "TransactionEvent", event_201(seq_no=I64), "property", "seqNo"),
    ("2.0.1", "TransactionEvent", event_201(seq_no=I32), "property", "seqNo"),
    ("2.0.1", "TransactionEvent", event_201(evse_id=I64), "property", "evse.id"),
    ("2.0.1", "TransactionEvent", event_201(value=Lit("1E+308")), "property", f"{SV}.value"),
    ("2.0.1", "TransactionEvent", event_201(value=Lit("1E+400")), "property", f"{SV}.value"),
    ("2.0.1", "StatusNotification", STATUS_201 | {"evseId": I64}, "property", "evseId"),
    ("2.0.1", "MeterValues", meter_201(Lit("1E+400")), "property", f"{SV}.value"),
    ("2.0.1", "MeterValues", meter_201(5, multiplier=27), "property", f"{SV}.unitOfMeasure.multiplier"),
    ("2.0.1", "MeterValues", meter_201(5, multiplier=I64), "property", f"{SV}.unitOfMeasure.multiplier"),
    ("2.0.1", "MeterValues", meter_201(2, multiplier=18), "property", f"{SV}.value"),
    ("2.0.1", "MeterValues", meter_201(10**15 + 1, unit="kWh"), "property", f"{SV}.value"),
    ("2.0.1", "MeterValues", meter_201(Lit("2147483.648"), 0, "kW", POWER), "property", f"{SV}.value"),
    ("2.0.1", "BootNotification", boot_201(vendor="\ud800"), "format", "chargingStation.vendorName"),
    ("2.0.1", "Authorize", {"idToken": TOKEN | {"idToken": "\udbff"}}, "format", "idToken.idToken"),
    ("2.0.1", "DataTransfer", {"vendorId": "v", "data": {"\ud800": 1}}, "format", "data (a key)"),
    ("2.0.1", "DataTransfer", {"vendorId": "v", "data": {"n": Lit("1e99999")}}, "property", "data.n"),
]  # fmt: skip


async def call_text(client: RawClient, action: str, payload: dict[str, Any]) -> list[Any]:
    message_id = str(uuid.uuid4())
    await client.send(f'[2, "{message_id}", "{action}", {render(payload)}]')
    reply = await client.receive()
    assert reply[1] == message_id, reply
    return reply


async def still_answers(client: RawClient) -> None:
    reply = await client.call("Heartbeat", {})
    assert reply[0] == 3 and "currentTime" in reply[2], reply


@pytest.mark.parametrize(
    ("version", "action", "payload", "kind", "field"),
    REJECTED,
    ids=[f"{c[0]}-{c[1]}-{c[4]}-{i}" for i, c in enumerate(REJECTED)],
)
async def test_value_out_of_range_or_form_gets_its_callerror(
    server: RunningServer,
    api: httpx.AsyncClient,
    version: str,
    action: str,
    payload: dict[str, Any],
    kind: str,
    field: str,
) -> None:
    await register(api, "CP-range")
    async with raw_client(server.ocpp_url, "CP-range", version) as client:
        reply = await call_text(client, action, payload)
        assert reply[0] == 4, reply
        assert reply[2] == (PROPERTY if kind == "property" else FORMAT[version]), reply
        assert reply[4]["field"] == field, reply
        await still_answers(client)
    # decided before anything was stored: no session, no boot, no connector status
    assert (await api.get("/api/v1/sessions")).json() == []
    charger = (await api.get("/api/v1/chargers/CP-range")).json()
    assert charger["vendor"] is None and charger["connectors"] == []


ACCEPTED: list[tuple[str, str, dict[str, Any]]] = [
    # the edges of the ranges are taken (whether a reading is plausible is the metering's question)
    ("1.6", "StartTransaction", START_16 | {"meterStart": 10**18}),
    ("1.6", "StartTransaction", START_16 | {"connectorId": I32 - 1}),
    ("1.6", "StartTransaction", START_16 | {"meterStart": -5}),  # a reading plausibility flags
    ("1.6", "StatusNotification", STATUS_16 | {"connectorId": 0}),  # the charger as a whole
    ("2.0.1", "MeterValues", meter_201(5) | {"evseId": 0}),  # the main meter
    ("1.6", "MeterValues", meter_16("1000000000000000000")),
    ("1.6", "MeterValues", meter_16("1000000000000000", "kWh")),
    ("1.6", "MeterValues", meter_16(" 1.5e+06 ", "W", POWER)),
    ("1.6", "MeterValues", meter_16(str(I32 - 1), "W", POWER)),
    ("2.0.1", "MeterValues", meter_201(Lit("2147483.647"), 0, "kW", POWER)),
    (
        "1.6",
        "BootNotification",
        BOOT_16 | {"chargePointVendor": "\ud83d\udd0c Acme \u00e9"},
    ),  # a pair: one character
    ("2.0.1", "MeterValues", meter_201(10**18)),
    ("2.0.1", "MeterValues", meter_201(1, multiplier=18)),
    ("2.0.1", "MeterValues", meter_201(Lit("0.5"), multiplier=-24)),
    ("2.0.1", "TransactionEvent", event_201(seq_no=I32 - 1, evse_id=I32 - 1)),
]


@pytest.mark.parametrize(
    ("version", "action", "payload"), ACCEPTED, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(ACCEPTED)]
)
async def test_values_at_the_edges_are_accepted(
    server: RunningServer, api: httpx.AsyncClient, version: str, action: str, payload: dict[str, Any]
) -> None:
    await register(api, "CP-edge")
    async with raw_client(server.ocpp_url, "CP-edge", version) as client:
        reply = await call_text(client, action, payload)
        assert reply[0] == 3, reply


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
@pytest.mark.parametrize("number", ["NaN", "-Infinity", "1e99999999999999999999"])
async def test_numbers_json_does_not_have_are_not_json(
    server: RunningServer, api: httpx.AsyncClient, version: str, number: str
) -> None:
    await register(api, "CP-nan")
    async with raw_client(server.ocpp_url, "CP-nan", version) as client:
        await client.send(f'[2, "nan-1", "Heartbeat", {{"x": {number}}}]')
        reply = await client.receive()
        assert reply[:3] == [4, "nan-1", FORMAT[version]], reply
        await still_answers(client)


async def test_invalid_utf8_closes_with_1007_and_logs_one_line(
    server: RunningServer, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    await register(api, "CP-utf8")
    caplog.set_level(logging.INFO)
    async with raw_client(server.ocpp_url, "CP-utf8", "1.6") as client:
        await still_answers(client)
        await client.connection.send(b'[2, "u-1", "Heartbeat", {"x": "\xff\xfe"}]', text=True)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await client.connection.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    lines = [r for r in caplog.records if "UTF-8" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.WARNING and lines[0].exc_info is None and not lines[0].exc_text
    assert "/ocpp/CP-utf8" in lines[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_start_after_a_stop_of_an_unknown_transaction_gets_a_transaction_id(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    """The charger stopped a transaction satwatt never saw (id 2); the ids satwatt gives its next
    transactions are new ones, not 2 again (found by bench/fuzz_ocpp.py)."""
    await register(api, "CP-unknown-tx")
    given = []
    async with raw_client(server.ocpp_url, "CP-unknown-tx", "1.6") as client:
        stop = await client.call("StopTransaction", STOP_16 | {"transactionId": 2})
        assert stop[0] == 3, stop  # an unknown transactionId is still acknowledged
        for second in (2, 3):
            start = await client.call("StartTransaction", START_16 | {"timestamp": at(second)})
            assert start[0] == 3, start
            given.append(start[2]["transactionId"])
    assert 2 not in given and len(set(given)) == 2
