"""A minimal, fast OCPP-J central system for measuring the load generator's own ceiling.

It answers every CALL at once with a plausible CALLRESULT (no schema validation, no storage), so the
figures of ``chargepoint-sim load`` against it are the simulator's limits, not a central system's.

    python bench/sim_echo_csms.py --port 8290 &
    chargepoint-sim load --csms ws://127.0.0.1:8290/ocpp --chargers 1000 --ramp 20 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from datetime import UTC, datetime
from typing import Any

import websockets
from websockets.asyncio.server import ServerConnection

_tx = itertools.count(1)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def answer(action: str, payload: dict[str, Any]) -> dict[str, Any]:
    if action == "BootNotification":
        return {"currentTime": _now(), "interval": 300, "status": "Accepted"}
    if action == "Heartbeat":
        return {"currentTime": _now()}
    if action == "Authorize":
        if "idToken" in payload:
            return {"idTokenInfo": {"status": "Accepted"}}
        return {"idTagInfo": {"status": "Accepted"}}
    if action == "StartTransaction":
        return {"transactionId": next(_tx), "idTagInfo": {"status": "Accepted"}}
    if action == "StopTransaction":
        return {"idTagInfo": {"status": "Accepted"}}
    if action == "DataTransfer":
        return {"status": "Accepted"}
    return {}


async def handle(ws: ServerConnection) -> None:
    try:
        async for raw in ws:
            msg = json.loads(raw)
            if msg[0] == 2:
                await ws.send(json.dumps([3, msg[1], answer(msg[2], msg[3])]))
    except websockets.ConnectionClosed:
        pass


async def main(port: int) -> None:
    async with websockets.serve(handle, "127.0.0.1", port, subprotocols=["ocpp2.0.1", "ocpp1.6"]):  # type: ignore[list-item]
        await asyncio.Future()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8290)
    asyncio.run(main(ap.parse_args().port))
