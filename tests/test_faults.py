"""Bad input from chargers: each gets the CALLERROR its version's spec names (or a logged drop when no
message id can be read), and the connection stays open and keeps working."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer
from tests.ocpp_clients import RawClient, at, raw_client
from tests.test_ocpp16 import register

START_16 = {"connectorId": 1, "idTag": "CARD", "meterStart": 0, "timestamp": at(0)}
EVENT_201 = {
    "eventType": "Started",
    "timestamp": at(0),
    "triggerReason": "Authorized",
    "seqNo": 0,
    "transactionInfo": {"transactionId": "T1"},
}

CASES: list[tuple[str, str, dict[str, Any], str]] = [
    # version, action, payload, expected CALLERROR code
    (
        "1.6",
        "StartTransaction",
        {k: v for k, v in START_16.items() if k != "timestamp"},
        "OccurenceConstraintViolation",
    ),
    (
        "2.0.1",
        "TransactionEvent",
        {k: v for k, v in EVENT_201.items() if k != "seqNo"},
        "OccurrenceConstraintViolation",
    ),
    ("1.6", "StartTransaction", START_16 | {"connectorId": "one"}, "TypeConstraintViolation"),
    ("2.0.1", "TransactionEvent", EVENT_201 | {"seqNo": "zero"}, "TypeConstraintViolation"),
    ("1.6", "StartTransaction", START_16 | {"idTag": "X" * 21}, "TypeConstraintViolation"),
    (
        "1.6",
        "StatusNotification",
        {"connectorId": 1, "errorCode": "NoError", "status": "Happy"},
        "PropertyConstraintViolation",
    ),
    ("2.0.1", "TransactionEvent", EVENT_201 | {"eventType": "Paused"}, "PropertyConstraintViolation"),
    ("1.6", "StartTransaction", START_16 | {"colour": "red"}, "FormationViolation"),
    ("2.0.1", "TransactionEvent", EVENT_201 | {"colour": "red"}, "FormatViolation"),
    ("1.6", "StartTransaction", START_16 | {"timestamp": "not-a-date"}, "FormationViolation"),
    ("1.6", "StartTransaction", START_16 | {"timestamp": "2026-02-31T00:00:00Z"}, "FormationViolation"),
    ("2.0.1", "TransactionEvent", EVENT_201 | {"timestamp": "2026-11-01T12:00:00"}, "FormatViolation"),
    ("1.6", "FlyToTheMoon", {}, "NotImplemented"),
    ("2.0.1", "FlyToTheMoon", {}, "NotImplemented"),
    ("1.6", "Reset", {"type": "Hard"}, "NotSupported"),
    (
        "2.0.1",
        "RequestStartTransaction",
        {"idToken": {"idToken": "x", "type": "Central"}, "remoteStartId": 1},
        "NotSupported",
    ),
    ("1.6", "Heartbeat", [], "FormationViolation"),  # type: ignore[list-item]
]


async def still_answers(client: RawClient) -> None:
    reply = await client.call("Heartbeat", {})
    assert reply[0] == 3 and "currentTime" in reply[2]


@pytest.mark.parametrize(
    ("version", "action", "payload", "code"), CASES, ids=[f"{c[0]}-{c[1]}-{c[3]}" for c in CASES]
)
async def test_schema_violations_get_the_right_callerror(
    server: RunningServer, api: httpx.AsyncClient, version: str, action: str, payload: Any, code: str
) -> None:
    await register(api, "CP-bad")
    async with raw_client(server.ocpp_url, "CP-bad", version) as client:
        reply = await client.call(action, payload)
        assert reply[0] == 4, reply
        assert reply[2] == code, reply
        await still_answers(client)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_malformed_frames(server: RunningServer, api: httpx.AsyncClient, version: str) -> None:
    await register(api, "CP-garbage")
    async with raw_client(server.ocpp_url, "CP-garbage", version) as client:
        # a CALL without its payload
        await client.send([2, "m-1", "Heartbeat"])
        assert (await client.receive())[:3] == [4, "m-1", "ProtocolError"]
        # an unknown message type with a readable id
        await client.send([7, "m-2", "Heartbeat", {}])
        expected = "MessageTypeNotSupported" if version == "2.0.1" else "ProtocolError"
        assert (await client.receive())[:3] == [4, "m-2", expected]
        # not JSON, and JSON that is not an OCPP array: no id can be read
        for frame in ("{{{ not json", json.dumps({"hello": "world"})):
            await client.send(frame)
            if version == "2.0.1":  # OCPP 2.0.1 answers these with message id "-1"
                assert (await client.receive())[:3] == [4, "-1", "RpcFrameworkError"]
        # a broken frame whose id can still be read
        await client.send('[2, "m-3", "Heartbeat", {')
        expected = "FormatViolation" if version == "2.0.1" else "FormationViolation"
        assert (await client.receive())[:3] == [4, "m-3", expected]
        # binary frames are not OCPP-J: ignored
        await client.connection.send(b"\x00\x01")
        # a reply to a call satwatt never made
        await client.send([3, "never-sent", {}])
        await still_answers(client)


async def test_oversized_frame_is_refused_and_connection_stays(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    await register(api, "CP-big")
    limit = server.settings.ocpp_max_message_bytes
    async with raw_client(server.ocpp_url, "CP-big", "1.6") as client:
        await client.send([2, "big-1", "DataTransfer", {"vendorId": "x", "data": "A" * (limit + 10)}])
        reply = await client.receive()
        assert reply[:3] == [4, "big-1", "FormationViolation"]
        assert str(limit) in reply[3]
        await still_answers(client)


async def test_lenient_charger_tolerates_quirks(server: RunningServer, api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/chargers", json={"id": "CP-quirky", "lenient": True})
    assert response.status_code == 201
    async with raw_client(server.ocpp_url, "CP-quirky", "1.6") as client:
        reply = await client.call(
            "StartTransaction",
            START_16 | {"timestamp": "2026-11-01T12:00:00", "vendorExtra": 1, "idTag": "A" * 25},
        )
        assert reply[0] == 3 and isinstance(reply[2]["transactionId"], int)


async def test_inbound_messages_answered_while_a_satwatt_call_waits(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    await register(api, "CP-busy")
    async with raw_client(server.ocpp_url, "CP-busy", "1.6") as client:
        pending = asyncio.create_task(
            api.post(
                "/api/v1/chargers/CP-busy/commands", json={"command": "get_configuration", "keys": ["X"]}
            )
        )
        async with asyncio.timeout(10):
            request = json.loads(await client.connection.recv())
        assert request[0] == 2 and request[2] == "GetConfiguration"
        # satwatt is waiting for our answer; it must still answer our own calls meanwhile
        for _ in range(3):
            await still_answers(client)
        assert not pending.done()
        await client.send(
            [3, request[1], {"configurationKey": [{"key": "X", "readonly": True, "value": "7"}]}]
        )
        response = await pending
    assert response.status_code == 200
    assert response.json()["data"]["values"] == [{"key": "X", "value": "7", "readonly": True}]
