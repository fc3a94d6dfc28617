"""Fuzzing satwatt's OCPP endpoint with mutated OCPP 1.6 and 2.0.1 frames.

    .venv/bin/python bench/fuzz_ocpp.py                        # 40,000 frames, at most 15 minutes
    .venv/bin/python bench/fuzz_ocpp.py --frames 2000 --seed 7 --json fuzz.json
    .venv/bin/python bench/fuzz_ocpp.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/fuzz

It starts ``csms serve`` as a process on a free port of 127.0.0.1 (SQLite in a temporary directory
unless --database-url), registers one charger per protocol version (with a password), connects
--connections websockets per version and sends mutated frames: valid messages of each version with
values replaced by hostile ones (integers beyond 64 bits, lone surrogates, U+0000, 1e30, 1E+400, NaN,
huge multipliers, dates out of range, wrong types, missing or extra fields), frames cut or altered
as text, invalid UTF-8, unknown message types and actions. After each frame a Heartbeat with a known
id is sent, so whatever the frame was answered with (or that it was not answered) is known exactly.

Counted: the answers by kind (CALLRESULT, CALLERROR by code, no answer), server errors (InternalError
answers, ERROR lines and tracebacks in the server's log), crashes (the server process exiting),
connections closed with 1007 after invalid UTF-8 (as RFC 6455 requires) and dropped connections (any
other close, or a frame left unanswered). The exit status is 1 when there was a server error, a crash
or a dropped connection. Runs are bounded by --frames and --seconds; the same --seed sends the same
frames. Not part of the test suite (tests/test_fuzz_ocpp.py runs a small bounded version of it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import json
import os
import random
import re
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets

REPO = Path(__file__).resolve().parents[1]
API_KEY = "fuzz-key"
PASSWORD = "fuzz-password-0123"
SUBPROTOCOLS = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}
ANSWER_TIMEOUT_S = 15


class Lit(str):
    """A JSON number written exactly as given (``1e30``, ``1E+400``, ``NaN``)."""


def render(value: Any) -> str:
    """JSON text of ``value`` with each Lit written as its literal text."""
    literals: list[str] = []

    def mark(item: Any) -> Any:
        if isinstance(item, Lit):
            literals.append(str(item))
            return f"\x01lit{len(literals) - 1}\x01"
        if isinstance(item, dict):
            return {key: mark(sub) for key, sub in item.items()}
        if isinstance(item, list):
            return [mark(sub) for sub in item]
        return item

    text = json.dumps(mark(value))
    for index, literal in enumerate(literals):
        text = text.replace(f'"\\u0001lit{index}\\u0001"', literal)
    return text


# ---------------------------------------------------------------------------------------- the corpus
def _now(rng: random.Random) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - rng.randint(0, 3600))) + "Z"


def corpus_16(rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """Valid OCPP 1.6 messages a charger sends."""
    ts = _now(rng)
    meter = {
        "timestamp": ts,
        "sampledValue": [
            {"value": str(rng.randint(0, 10**6)), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": f"{rng.random() * 22:.3f}", "measurand": "Power.Active.Import", "unit": "kW"},
        ],
    }
    tx = rng.randint(1, 50)
    return [
        ("BootNotification", {"chargePointVendor": "Fuzz", "chargePointModel": "F1", "firmwareVersion": "1"}),
        ("Heartbeat", {}),
        (
            "StatusNotification",
            {"connectorId": 1, "errorCode": "NoError", "status": "Charging", "timestamp": ts},
        ),
        ("Authorize", {"idTag": "FUZZTAG"}),
        ("StartTransaction", {"connectorId": 1, "idTag": "FUZZTAG", "meterStart": 1000, "timestamp": ts}),
        ("MeterValues", {"connectorId": 1, "transactionId": tx, "meterValue": [meter]}),
        (
            "StopTransaction",
            {"transactionId": tx, "meterStop": 2000, "timestamp": ts, "transactionData": [meter]},
        ),
        ("DataTransfer", {"vendorId": "org.fuzz", "messageId": "m", "data": "hello"}),
        ("FirmwareStatusNotification", {"status": "Idle"}),
    ]


def corpus_201(rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """Valid OCPP 2.0.1 messages a charging station sends."""
    ts = _now(rng)
    status = {"timestamp": ts, "connectorStatus": "Occupied", "evseId": 1, "connectorId": 1}
    meter = {
        "timestamp": ts,
        "sampledValue": [
            {"value": rng.randint(0, 10**6), "measurand": "Energy.Active.Import.Register"},
            {
                "value": Lit(f"{rng.random() * 22:.3f}"),
                "measurand": "Power.Active.Import",
                "unitOfMeasure": {"unit": "kW", "multiplier": 0},
            },
        ],
    }
    event = {
        "eventType": rng.choice(["Started", "Updated", "Ended"]),
        "timestamp": ts,
        "triggerReason": "MeterValuePeriodic",
        "seqNo": rng.randint(0, 100),
        "transactionInfo": {"transactionId": f"FZ-{rng.randint(1, 50)}", "chargingState": "Charging"},
        "evse": {"id": 1, "connectorId": 1},
        "idToken": {"idToken": "FUZZTAG", "type": "ISO14443"},
        "meterValue": [meter],
    }
    return [
        ("BootNotification", {"reason": "PowerUp", "chargingStation": {"vendorName": "Fuzz", "model": "F2"}}),
        ("Heartbeat", {}),
        ("StatusNotification", status),
        ("Authorize", {"idToken": {"idToken": "FUZZTAG", "type": "ISO14443"}}),
        ("TransactionEvent", event),
        ("MeterValues", {"evseId": 1, "meterValue": [meter]}),
        ("DataTransfer", {"vendorId": "org.fuzz", "data": {"n": 1, "s": "x"}}),
        ("NotifyEvent", {
            "generatedAt": ts, "seqNo": 0, "tbc": False,
            "eventData": [{
                "eventId": 1, "timestamp": ts, "trigger": "Alerting", "actualValue": "1",
                "eventNotificationType": "HardWiredNotification",
                "component": {"name": "EVSE"}, "variable": {"name": "Problem"},
            }],
        }),
    ]  # fmt: skip


# --------------------------------------------------------------------------------------- mutations
INTERESTING: list[Any] = [
    2**63, 2**63 - 1, -(2**63) - 1, 2**64, 2**31, -1, 0, 10**18, 10**30, 27, -25,
    Lit("1e30"), Lit("1E+308"), Lit("1E+400"), Lit("-1E+400"), Lit("1e-400"), Lit("-0.0"), Lit("0.5"),
    Lit("1e99999999999999999999"), Lit("NaN"), Lit("Infinity"), Lit("-Infinity"), Lit("1.0"),
    "\ud800", "a\udfffb", "\u0000", "x\u0000", "", " ", "1e30", "1E+308", "NaN", "Infinity", "-1",
    "1_000", "\u0661\u0662", "12 kWh", "0x10", "\U0001f50c", "A" * 300, "A" * 5000,
    "9999-12-31T23:59:59Z", "9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+01:00",
    "2026-02-31T00:00:00Z", "not-a-date", "2026-01-01T00:00:00",
    None, True, False, [], {}, [1, "a"], {"a": {"b": [None]}},
    "SignedData", "Raw", "kWh", "Wh", "Celsius", "Started", "Ended",
]  # fmt: skip


def _interesting(rng: random.Random) -> Any:
    """One of INTERESTING, copied: the lists and objects in it must not be changed by later mutations."""
    return copy.deepcopy(rng.choice(INTERESTING))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value (dict key or list index) inside ``value``."""
    found: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, sub in value.items():
            found.append((*prefix, key))
            found.extend(_paths(sub, (*prefix, key)))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            found.append((*prefix, index))
            found.extend(_paths(sub, (*prefix, index)))
    return found


def _parent(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        value = value[step]
    return value


def mutate_payload(rng: random.Random, payload: dict[str, Any]) -> dict[str, Any]:
    """One to three structural mutations of a payload (a deep copy is changed)."""
    payload = json.loads(render(payload), parse_float=Lit, parse_constant=Lit)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        paths = _paths(payload)
        if not paths:
            payload[rng.choice(("x", "\ud800", "connectorId"))] = _interesting(rng)
            continue
        path = rng.choice(paths)
        parent = _parent(payload, path)
        operation = rng.random()
        if operation < 0.7:
            parent[path[-1]] = _interesting(rng)
        elif operation < 0.8 and isinstance(parent, dict):
            del parent[path[-1]]
        elif operation < 0.9 and isinstance(parent, dict):
            parent[rng.choice(("extra", "\ud83d", "\u0000", "multiplier", "value"))] = _interesting(rng)
        else:
            parent[path[-1]] = [parent[path[-1]]]
    return payload


def mutate_text(rng: random.Random, text: str) -> str | bytes:
    """A frame altered as text or bytes: cut, spliced, or made invalid UTF-8."""
    operation = rng.random()
    position = rng.randrange(len(text) + 1)
    if operation < 0.25:
        return text[:position]
    if operation < 0.45:
        return text[:position] + rng.choice('[]{}",:\\0123456789eE+-.nNtf \x00\ud800') + text[position:]
    if operation < 0.6:
        return text[:position] + text[position + rng.randint(1, 8) :]
    if operation < 0.75:  # invalid UTF-8: a lone continuation byte, an overlong form, a surrogate
        raw = text.encode()
        return raw[:position] + rng.choice((b"\xff", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80")) + raw[position:]
    if operation < 0.85:
        return rng.choice(("[" * 3000 + "]" * 3000, "[]", "{}", "null", '"x"', "[2]", "[2, 1, 2, 3]", " "))
    return text.replace("[2,", f"[{rng.choice((0, 1, 3, 4, 5, 7, -1, 2**64))},", 1)


@dataclass
class Frame:
    data: str | bytes
    message_id: str | None  # the id an answer would carry, when one is expected


def make_frame(rng: random.Random, version: str, number: int) -> Frame:
    message_id = f"f{number}"
    action, payload = rng.choice(corpus_16(rng) if version == "1.6" else corpus_201(rng))
    kind = rng.random()
    if kind < 0.05:  # unchanged
        return Frame(render([2, message_id, action, payload]), message_id)
    if kind < 0.65:
        return Frame(render([2, message_id, action, mutate_payload(rng, payload)]), message_id)
    if kind < 0.72:  # an odd action or message id
        odd_action = rng.choice(("Reset", "FlyToTheMoon", "", "\ud800", "A" * 100, "heartbeat"))
        frame: list[Any] = [2, message_id, odd_action, payload]
        if rng.random() < 0.5:
            frame = [2, rng.choice((1, None, "", "x" * 100, "\ud800", ["id"])), action, payload]
        return Frame(render(frame), message_id)
    data = mutate_text(rng, render([2, message_id, action, payload]))
    if isinstance(data, str) and not data.isascii():
        try:
            data.encode()
        except UnicodeEncodeError:  # a lone surrogate put into the text: on the wire, invalid UTF-8
            data = data.encode("utf-8", "surrogatepass")
    return Frame(data, message_id)


# ------------------------------------------------------------------------------------------ running
@dataclass
class Tally:
    answers: Counter[str] = field(default_factory=Counter)
    frames: int = 0
    closed_1007: int = 0
    dropped: int = 0
    drops: list[str] = field(default_factory=list)
    internal_errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "answers": dict(self.answers.most_common()),
            "internal_errors": len(self.internal_errors),
            "closed_1007_after_invalid_utf8": self.closed_1007,
            "dropped_connections": self.dropped,
            "drops": self.drops[:20],
            "internal_error_examples": self.internal_errors[:20],
        }


def _auth(charger_id: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{charger_id}:{password}".encode()).decode()}


class FuzzConnection:
    """One charger's websocket: sends frames, answers satwatt's own CALLs, sorts what comes back."""

    def __init__(self, ocpp_url: str, charger_id: str, password: str, version: str) -> None:
        self.url = f"{ocpp_url}/{charger_id}"
        self.headers = _auth(charger_id, password)
        self.version = version
        self.connection: Any = None
        self.replies: asyncio.Queue[list[Any] | None] = asyncio.Queue()
        self.reader: asyncio.Task[None] | None = None
        self.close_code: int | None = None

    async def open(self) -> None:
        self.connection = await websockets.connect(
            self.url,
            subprotocols=[SUBPROTOCOLS[self.version]],  # type: ignore[list-item]
            additional_headers=self.headers,
            open_timeout=20,
            max_size=None,
        )
        self.replies = asyncio.Queue()
        self.close_code = None
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.connection:
                message = json.loads(raw)
                if isinstance(message, list) and message and message[0] == 2:
                    await self.connection.send(json.dumps([3, message[1], self._answer(message)]))
                else:
                    await self.replies.put(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.connection.close_code or 1006  # the code the server sent
            await self.replies.put(None)

    def _answer(self, call: list[Any]) -> dict[str, Any]:
        action, payload = call[2], call[3]
        if action == "SetVariables":
            return {
                "setVariableResult": [
                    {"attributeStatus": "Accepted", "component": d["component"], "variable": d["variable"]}
                    for d in payload["setVariableData"]
                ]
            }
        if action == "GetConfiguration":
            return {"configurationKey": []}
        return {"status": "Accepted"}

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()
        if self.reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader

    async def exchange(self, frame: Frame, sentinel_id: str) -> tuple[list[list[Any]], int | None]:
        """Send a frame, then a Heartbeat; return the answers before the Heartbeat's, or the close code."""
        try:
            await self.connection.send(frame.data, text=True)
            await self.connection.send(json.dumps([2, sentinel_id, "Heartbeat", {}]))
        except websockets.ConnectionClosed:
            pass
        answers: list[list[Any]] = []
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            while True:
                reply = await self.replies.get()
                if reply is None:
                    return answers, self.close_code
                if isinstance(reply, list) and len(reply) > 1 and reply[1] == sentinel_id:
                    return answers, None
                answers.append(reply)


def classify(answer: list[Any]) -> str:
    if answer and answer[0] == 3:
        return "CALLRESULT"
    if answer and answer[0] == 4 and len(answer) > 2:
        return f"CALLERROR {answer[2]}"
    return "other"


async def fuzz_worker(
    ocpp_url: str, charger_id: str, password: str, version: str, seed: int, quota: list[int], deadline: float,
    tally: Tally,
) -> None:  # fmt: skip
    """Send frames until the shared quota is used up or the deadline passes."""
    rng = random.Random(seed)
    connection = FuzzConnection(ocpp_url, charger_id, password, version)
    await connection.open()
    number = 0
    try:
        while quota[0] > 0 and time.monotonic() < deadline:
            quota[0] -= 1
            number += 1
            frame = make_frame(rng, version, number)
            tally.frames += 1
            try:
                answers, close_code = await connection.exchange(frame, f"sentinel-{seed}-{number}")
            except TimeoutError:
                tally.dropped += 1
                tally.drops.append(
                    f"{version}: no answer within {ANSWER_TIMEOUT_S} s to {frame.data[:200]!r}"
                )
                answers, close_code = [], -1
            for answer in answers:
                kind = classify(answer)
                tally.answers[kind] += 1
                if kind == "CALLERROR InternalError":
                    tally.internal_errors.append(f"{version}: {frame.data[:300]!r} -> {answer}")
            if not answers and close_code is None:
                tally.answers["no answer"] += 1
            if close_code is not None:
                if close_code == 1007 and isinstance(frame.data, bytes):
                    tally.closed_1007 += 1
                elif close_code != -1:
                    tally.dropped += 1
                    tally.drops.append(f"{version}: closed {close_code} after {frame.data[:200]!r}")
                await connection.close()
                await connection.open()
    finally:
        await connection.close()


async def register_chargers(
    http_url: str, api_key: str, prefix: str, connections: int
) -> dict[str, list[str]]:
    """``connections`` chargers per version (password PASSWORD): one charger id per websocket, since a
    second connection of the same charger replaces the first. Returns version -> charger ids."""
    ids = {
        version: [f"{prefix}-{tag}-{index}" for index in range(connections)]
        for version, tag in (("1.6", "16"), ("2.0.1", "201"))
    }
    async with httpx.AsyncClient(base_url=http_url, headers={"Authorization": f"Bearer {api_key}"}) as api:
        for charger_id in ids["1.6"] + ids["2.0.1"]:
            response = await api.post("/api/v1/chargers", json={"id": charger_id, "password": PASSWORD})
            if response.status_code not in (201, 409):
                raise RuntimeError(f"registering {charger_id} failed: {response.status_code} {response.text}")
        await api.post("/api/v1/id-tags", json={"id_tag": "FUZZTAG"})
    return ids


async def fuzz(
    ocpp_url: str, chargers: dict[str, list[str]], *, frames: int, seconds: float, seed: int
) -> Tally:
    """Fuzz a running satwatt: ``frames`` frames at most, for ``seconds`` at most, half per version,
    one websocket per charger of ``chargers`` (version -> charger ids, password PASSWORD)."""
    tally = Tally()
    deadline = time.monotonic() + seconds
    quotas = {"1.6": [frames // 2], "2.0.1": [frames - frames // 2]}
    workers = []
    for version in ("1.6", "2.0.1"):
        for index, charger_id in enumerate(chargers[version]):
            worker_seed = seed * 100 + index * 2 + (version == "2.0.1")
            workers.append(
                fuzz_worker(
                    ocpp_url, charger_id, PASSWORD, version, worker_seed, quotas[version], deadline, tally
                )
            )
    await asyncio.gather(*workers)
    return tally


# ------------------------------------------------------------------------------------ csms serve
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_satwatt(data_dir: Path, database_url: str | None, log_path: Path) -> tuple[Any, int]:
    port = free_port()
    env = {
        **os.environ,
        "CSMS_DATA_DIR": str(data_dir),
        "CSMS_PORT": str(port),
        "CSMS_API_KEY": API_KEY,
        "CSMS_SIMNET_PORT": "0",
        "CSMS_LOG_LEVEL": "WARNING",
        "CSMS_AUTO_MIGRATE": "true",
    }
    if database_url:
        env["CSMS_DATABASE_URL"] = database_url
    log = log_path.open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "csms", "serve", cwd=REPO, env=env, stdout=log, stderr=log
    )
    async with asyncio.timeout(90), httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return process, port
            except httpx.TransportError:
                if process.returncode is not None:
                    raise RuntimeError(f"csms serve exited during start-up; see {log_path}") from None
            await asyncio.sleep(0.2)


def scan_log(text: str) -> dict[str, int]:
    return {
        "error_lines": len(re.findall(r"^\S+ \S+ (?:ERROR|CRITICAL)\s", text, re.MULTILINE)),
        "tracebacks": text.count("Traceback (most recent call last)"),
        "warning_lines": len(re.findall(r"^\S+ \S+ WARNING\s", text, re.MULTILINE)),
        "log_bytes": len(text.encode("utf-8", "replace")),
    }


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="satwatt-fuzz-") as tmp:
        log_path = Path(args.log or Path(tmp) / "csms.log")
        process, port = await start_satwatt(Path(tmp) / "data", args.database_url, log_path)
        started = time.monotonic()
        try:
            http_url, ocpp_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ocpp"
            chargers = await register_chargers(http_url, API_KEY, f"FUZZ{args.seed}", args.connections)
            tally = await fuzz(ocpp_url, chargers, frames=args.frames, seconds=args.seconds, seed=args.seed)
        finally:
            crashed = process.returncode is not None
            if not crashed:
                process.terminate()
                await process.wait()
        elapsed = time.monotonic() - started
        log = scan_log(await asyncio.to_thread(log_path.read_text, errors="replace"))
    report = {
        **tally.as_dict(),
        "seed": args.seed,
        "seconds": round(elapsed, 1),
        "crashes": int(crashed),
        "server_log": log,
    }
    print(f"frames {tally.frames} in {elapsed:.0f} s (seed {args.seed})")
    for kind, count in tally.answers.most_common():
        print(f"  {kind:45} {count:7d}")
    print(f"  {'closed 1007 after invalid UTF-8':45} {tally.closed_1007:7d}")
    print(f"server errors: InternalError answers {len(tally.internal_errors)}, log ERROR lines "
          f"{log['error_lines']}, tracebacks {log['tracebacks']} (log {log['log_bytes']} bytes, "
          f"{log['warning_lines']} warnings)")  # fmt: skip
    print(f"crashes {int(crashed)}, dropped connections {tally.dropped}")
    for line in tally.internal_errors[:5] + tally.drops[:5]:
        print("  " + line)
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(report, indent=2))
    failed = tally.internal_errors or tally.dropped or crashed or log["error_lines"] or log["tracebacks"]
    return 1 if failed else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fuzz satwatt's OCPP endpoint (a csms serve it starts itself) with mutated 1.6 and "
        "2.0.1 frames; count the answers by kind, server errors, crashes and dropped connections."
    )
    parser.add_argument("--frames", type=int, default=40_000, help="frames to send in all (default 40000)")
    parser.add_argument("--seconds", type=float, default=900, help="stop after this long (default 900)")
    parser.add_argument(
        "--seed", type=int, default=1, help="random seed: the same seed sends the same frames"
    )
    parser.add_argument(
        "--connections", type=int, default=2, help="websockets per protocol version (default 2)"
    )
    parser.add_argument(
        "--database-url", help="satwatt's database (default: SQLite in a temporary directory)"
    )
    parser.add_argument("--log", help="keep the server's log in this file (default: a temporary file)")
    parser.add_argument("--json", help="write the figures to this JSON file")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
