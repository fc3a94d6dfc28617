"""OCPP-J RPC framing on a websocket (charge point side), written directly on ``websockets``.

Why not ``ocpp.v16.ChargePoint`` / ``ocpp.v201.ChargePoint`` as the client?  A simulator has to do
things a well-behaved library deliberately prevents, and has to measure what it does:

* inbound CSMS calls are handled in their own tasks, so a handler that has to send a CALL itself
  (RemoteStart -> Authorize -> StartTransaction, TriggerMessage -> BootNotification) can never deadlock
  the reader (the library processes one inbound message at a time and a ``call()`` inside an ``@on``
  handler waits for a reply that sits unread);
* fault injection needs raw control of frames: the same CALL sent twice with the same unique id,
  transaction messages held back and replayed after a reconnect, lenient quirks;
* the load generator needs the latency of every call and counts of frames, errors and timeouts.

We still use the library's OCPP JSON schemas (``ocpp.messages.get_validator``) to validate inbound CALLs
as a real charger would (answering FormationViolation / PropertyConstraintViolation / ...), and
optionally our own outbound CALLs (``validate_outbound``; on in the tests).

Outbound CALLs are serialised: one outstanding CALL per connection, as the specification asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from jsonschema.exceptions import ValidationError as SchemaValidationError
from ocpp.messages import MessageType, get_validator
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

log = logging.getLogger("chargepoint_sim.rpc")

_ids = itertools.count(1)


class CallError(Exception):
    """The CSMS answered a CALL with a CALLERROR."""

    def __init__(self, code: str, description: str = "", details: Any = None) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.details = details


class ConnectionLost(Exception):
    """The websocket closed while a CALL was outstanding or before it could be sent."""


@dataclass
class Reply:
    """What an inbound-call handler returns: the CALLRESULT payload and an optional follow-up action
    that runs only after the reply has been sent (the ``@after`` idea)."""

    payload: dict[str, Any]
    then: Callable[[], Coroutine[Any, Any, None]] | None = None


class HandlerError(Exception):
    """Raise from a handler to answer with a CALLERROR."""

    def __init__(self, code: str, description: str = "") -> None:
        super().__init__(description)
        self.code = code
        self.description = description


Handler = Callable[[str, dict[str, Any]], Awaitable[Reply]]


@dataclass
class Stats:
    """Counters shared by any number of connections (the load generator aggregates a whole fleet)."""

    frames_out: int = 0
    frames_in: int = 0
    calls: int = 0
    call_errors: dict[str, int] = field(default_factory=dict)  # by error code
    timeouts: int = 0
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    latencies: dict[str, list[float]] = field(default_factory=dict)  # action -> seconds
    inbound_calls: int = 0

    def record_latency(self, action: str, seconds: float) -> None:
        self.latencies.setdefault(action, []).append(seconds)

    def all_latencies(self) -> list[float]:
        return [x for v in self.latencies.values() for x in v]


class OcppConnection:
    """One OCPP-J websocket: ``call()`` for outbound CALLs, ``run()`` reads and dispatches frames."""

    def __init__(
        self,
        ws: ClientConnection,
        version: str,
        handler: Handler,
        *,
        stats: Stats | None = None,
        call_timeout: float = 30.0,
        validate_outbound: bool = False,
        on_frame: Callable[[str, str, Any], None] | None = None,
        spawn: Callable[[Coroutine[Any, Any, None]], object] | None = None,
    ) -> None:
        self.ws = ws
        self.version = version  # "1.6" or "2.0.1"
        self._handler = handler
        self.stats = stats or Stats()
        self.call_timeout = call_timeout
        self.validate_outbound = validate_outbound
        self._on_frame = on_frame  # (direction, kind, message) hook for logs / views
        # follow-up actions of handlers must outlive this connection (a Reset closes it): the owner
        # passes its own task spawner
        self._spawn = spawn or asyncio.ensure_future
        self._pending: dict[str, tuple[str, asyncio.Future[Any]]] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()

    # ---------------------------------------------------------------- outbound
    async def call(
        self,
        action: str,
        payload: dict[str, Any],
        *,
        timeout_s: float | None = None,
        duplicate: bool = False,
        skip_validation: bool = False,
    ) -> dict[str, Any]:
        """Send a CALL and wait for its CALLRESULT payload; raises CallError, TimeoutError, ConnectionLost.

        ``duplicate=True`` sends the identical frame (same unique id) twice, as a charger with a retry
        bug does; the second answer is ignored.
        """
        if self.validate_outbound and not skip_validation:
            self._validate(MessageType.Call, action, payload)
        unique_id = f"{next(_ids)}"
        frame = json.dumps([MessageType.Call, unique_id, action, payload], separators=(",", ":"))
        async with self._lock:
            if self.closed.is_set():
                raise ConnectionLost(action)
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._pending[unique_id] = (action, fut)
            t0 = time.perf_counter()
            try:
                await self._send(frame, "call", (action, payload))
                if duplicate:
                    await self._send(frame, "call", (action, payload))
                self.stats.calls += 1
                try:
                    result = await asyncio.wait_for(fut, timeout_s or self.call_timeout)
                except TimeoutError:
                    self.stats.timeouts += 1
                    raise
            except ConnectionClosed as e:
                raise ConnectionLost(action) from e
            finally:
                if duplicate:
                    # keep listening for the echo of the duplicate so it is recognised, not "unknown"
                    self._pending[unique_id] = (action, asyncio.get_running_loop().create_future())
                else:
                    self._pending.pop(unique_id, None)
            self.stats.record_latency(action, time.perf_counter() - t0)
        if isinstance(result, CallError):
            self.stats.call_errors[result.code] = self.stats.call_errors.get(result.code, 0) + 1
            raise result
        return result  # type: ignore[no-any-return]

    async def send_raw(self, frame: str) -> None:
        await self._send(frame, "raw", frame)

    async def _send(self, frame: str, kind: str, info: Any) -> None:
        await self.ws.send(frame)
        self.stats.frames_out += 1
        if self._on_frame:
            self._on_frame("out", kind, info)

    def _validate(self, mtype: int, action: str, payload: dict[str, Any]) -> None:
        try:
            validator = get_validator(mtype, action, self.version)
        except (OSError, ValueError):
            return
        try:
            validator.validate(payload)
        except SchemaValidationError as e:
            code = _schema_error_code(e)
            if self.version != "1.6" and code == "FormationViolation":
                code = "FormatViolation"  # 1.6 spells it FormationViolation, 2.0.1 FormatViolation
            raise HandlerError(code, e.message) from e

    # ---------------------------------------------------------------- inbound
    async def run(self) -> None:
        """Read frames until the connection closes.  Never raises on a closed connection."""
        try:
            async for raw in self.ws:
                self.stats.frames_in += 1
                text = raw if isinstance(raw, str) else raw.decode()
                self._dispatch(text)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            for action, fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionLost(action))
                    fut.exception()  # a waiter, if any, still gets it; an orphan must not warn
            self._pending.clear()
            for t in list(self._tasks):
                t.cancel()

    def _dispatch(self, text: str) -> None:
        try:
            msg = json.loads(text)
            mtype = msg[0]
            unique_id = str(msg[1])
        except (ValueError, IndexError, TypeError, KeyError):
            log.warning("unparseable frame: %r", text[:200])
            return
        if mtype == MessageType.Call and len(msg) >= 4:
            self.stats.inbound_calls += 1
            task = asyncio.create_task(self._handle_call(unique_id, str(msg[2]), msg[3]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif mtype == MessageType.CallResult:
            entry = self._pending.get(unique_id)
            if entry and not entry[1].done():
                entry[1].set_result(msg[2] if len(msg) > 2 else {})
            if self._on_frame:
                self._on_frame("in", "result", (entry[0] if entry else None, msg[2] if len(msg) > 2 else {}))
        elif mtype == MessageType.CallError:
            entry = self._pending.get(unique_id)
            err = CallError(
                str(msg[2]), str(msg[3]) if len(msg) > 3 else "", msg[4] if len(msg) > 4 else None
            )
            if entry and not entry[1].done():
                entry[1].set_result(err)
            if self._on_frame:
                self._on_frame("in", "error", (entry[0] if entry else None, err))
        else:
            log.warning("unexpected frame: %r", text[:200])

    async def _handle_call(self, unique_id: str, action: str, payload: Any) -> None:
        if self._on_frame:
            self._on_frame("in", "call", (action, payload))
        reply: Reply | None = None
        try:
            if not isinstance(payload, dict):
                raise HandlerError("FormationViolation", "payload must be an object")
            self._validate(MessageType.Call, action, payload)
            reply = await self._handler(action, payload)
            frame = json.dumps([MessageType.CallResult, unique_id, reply.payload], separators=(",", ":"))
        except HandlerError as e:
            frame = json.dumps([MessageType.CallError, unique_id, e.code, e.description, {}])
        except Exception as e:
            log.exception("handler for %s failed", action)
            frame = json.dumps([MessageType.CallError, unique_id, "InternalError", str(e)[:200], {}])
        with contextlib.suppress(ConnectionClosed):
            await self._send(frame, "reply", (action, reply.payload if reply else None))
        if reply is not None and reply.then is not None:
            self._spawn(reply.then())

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()


def _schema_error_code(e: SchemaValidationError) -> str:
    if e.validator == "type":
        return "TypeConstraintViolation"
    if e.validator in ("required", "additionalProperties"):
        return "FormationViolation" if e.validator == "additionalProperties" else "ProtocolError"
    if e.validator in ("maxLength", "enum", "minimum", "maximum"):
        return "PropertyConstraintViolation"
    return "FormationViolation"
