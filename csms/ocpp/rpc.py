"""OCPP-J RPC over one websocket: framing, validation, CALLERRORs and satwatt-initiated calls.

satwatt does not use the ``ocpp`` library's ChargePoint on the central-system side: that class awaits
each inbound handler inside its read loop (so a handler that awaits a call deadlocks), answers 1.6
chargers with 2.0.1 error codes, checks no date-time formats and validates with jsonschema. This module
keeps the library's official schemas (see :mod:`csms.ocpp.schemas`) and does the rest itself:

* inbound CALLs are handled one after the other, in arrival order, by the read loop;
* CALLRESULT / CALLERROR frames resolve the pending satwatt call, so inbound messages keep being
  answered while a call waits for its reply (calls are made from other tasks);
* one outstanding satwatt CALL per connection (the spec's SHOULD), with a timeout;
* bad frames get the CALLERROR the version's spec names, or are dropped with a log line when no
  message id can be read; the connection stays open.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from csms import jsoncodec
from csms.ocpp.schemas import OcppVersion, PayloadError, error_code, known_action, validate

log = logging.getLogger("csms.ocpp.rpc")

CALL, CALLRESULT, CALLERROR = 2, 3, 4
_MESSAGE_ID = re.compile(r'^\s*\[\s*[234]\s*,\s*"([^"\\]{1,64})"')


class Transport(Protocol):
    """The websocket as the RPC layer needs it (text frames only)."""

    async def send_text(self, text: str) -> None: ...


class CallError(Exception):
    """The charger answered a satwatt call with a CALLERROR."""

    def __init__(self, code: str, description: str, details: Any) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.details = details


class CallTimeout(Exception):
    """The charger did not answer a satwatt call in time."""


class ConnectionGone(Exception):
    """The connection closed before the charger answered."""


@dataclass
class HandlerResult:
    """What an inbound handler returns: the CALLRESULT payload and work to run after it is sent."""

    payload: dict[str, Any]
    after: Callable[[], Awaitable[None]] | None = None


Handler = Callable[[str, dict[str, Any]], Awaitable[HandlerResult]]


@dataclass
class _PendingCall:
    message_id: str
    action: str
    future: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class RpcEndpoint:
    """The central-system end of one OCPP-J connection."""

    def __init__(
        self,
        transport: Transport,
        version: OcppVersion,
        handler: Handler,
        *,
        charger_id: str,
        inbound_actions: frozenset[str],
        max_message_bytes: int,
        call_timeout_s: float,
        lenient: bool = False,
    ) -> None:
        self.transport = transport
        self.version = version
        self.handler = handler
        self.charger_id = charger_id
        self.inbound_actions = inbound_actions
        self.max_message_bytes = max_message_bytes
        self.call_timeout_s = call_timeout_s
        self.lenient = lenient
        self._call_lock = asyncio.Lock()
        self._pending: _PendingCall | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.closed = False

    # ----------------------------------------------------------------- inbound
    async def receive(self, text: str) -> None:
        """Handle one text frame from the charger."""
        # a UTF-8 character is at most 4 bytes: only long frames need encoding to be measured
        if len(text) * 4 > self.max_message_bytes and len(text.encode()) > self.max_message_bytes:
            self._log_bad(
                text,
                f"frame of {len(text.encode())} bytes exceeds the limit of {self.max_message_bytes} bytes",
            )
            await self._reply_unparsable(
                text, "format", f"Message exceeds the limit of {self.max_message_bytes} bytes"
            )
            return
        try:
            message = jsoncodec.loads(text)
        except (ValueError, RecursionError):
            self._log_bad(text, "frame is not JSON")
            await self._reply_unparsable(text, "format", "Message is not valid JSON")
            return
        if not isinstance(message, list) or not message or not isinstance(message[0], int):
            self._log_bad(text, "frame is not an OCPP message array")
            await self._reply_unparsable(text, "protocol", "Message is not an OCPP-J message array")
            return
        kind = message[0]
        message_id = message[1] if len(message) > 1 and isinstance(message[1], str) else None
        if message_id is None:
            self._log_bad(text, "frame has no readable message id")
            await self._reply_unparsable(text, "protocol", "Message id could not be read")
            return
        if kind == CALL:
            await self._on_call(message_id, message)
        elif kind == CALLRESULT:
            self._on_reply(message_id, message, is_error=False)
        elif kind == CALLERROR:
            self._on_reply(message_id, message, is_error=True)
        else:
            self._log_bad(text, f"unknown message type {kind}")
            code = "message_type" if self.version == "2.0.1" else "protocol"
            await self._send_error(message_id, code, f"Message type {kind} is not supported")

    async def _on_call(self, message_id: str, message: list[Any]) -> None:
        if len(message) != 4 or not isinstance(message[2], str):
            await self._send_error(message_id, "protocol", "A CALL is [2, messageId, action, payload]")
            return
        action, payload = message[2], message[3]
        if action not in self.inbound_actions:
            if known_action(self.version, action):
                await self._send_error(message_id, "not_supported", f"{action} is not sent by a charger")
            else:
                await self._send_error(message_id, "not_implemented", f"Unknown action {action!r}")
            return
        try:
            validate(self.version, action, payload, lenient=self.lenient)
        except PayloadError as exc:
            log.warning("%s: %s rejected: %s %s", self.charger_id, action, exc.code, exc.description)
            await self._send([CALLERROR, message_id, exc.code, exc.description, exc.details])
            return
        except Exception:  # a bug of validation's: answer it, keep the connection
            log.exception("%s: validating %s failed", self.charger_id, action)
            await self._send_error(message_id, "internal", f"satwatt failed to validate {action}")
            return
        try:
            result = await self.handler(action, payload)
        except PayloadError as exc:
            log.warning("%s: %s rejected: %s %s", self.charger_id, action, exc.code, exc.description)
            await self._send([CALLERROR, message_id, exc.code, exc.description, exc.details])
            return
        except Exception:
            log.exception("%s: handling %s failed", self.charger_id, action)
            await self._send_error(message_id, "internal", f"satwatt failed to handle {action}")
            return
        await self._send([CALLRESULT, message_id, result.payload])
        if result.after is not None:
            self.spawn(result.after())

    def _on_reply(self, message_id: str, message: list[Any], *, is_error: bool) -> None:
        pending = self._pending
        if pending is None or pending.message_id != message_id or pending.future.done():
            log.warning("%s: reply to unknown or expired call %s ignored", self.charger_id, message_id)
            return
        if is_error:
            code = str(message[2]) if len(message) > 2 else "GenericError"
            description = str(message[3]) if len(message) > 3 else ""
            details = message[4] if len(message) > 4 else {}
            pending.future.set_exception(CallError(code, description, details))
        elif len(message) != 3 or not isinstance(message[2], dict):
            pending.future.set_exception(CallError("ProtocolError", "malformed CALLRESULT", {}))
        else:
            pending.future.set_result(message[2])

    # ---------------------------------------------------------------- outbound
    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a CALL to the charger and return its CALLRESULT payload.

        Raises CallError (the charger's CALLERROR or a response that breaks the schema), CallTimeout
        or ConnectionGone. Calls queue behind each other: one outstanding CALL per connection.
        """
        validate(self.version, action, payload)  # a bug of ours must not reach a charger
        async with self._call_lock:
            if self.closed:
                raise ConnectionGone(self.charger_id)
            pending = _PendingCall(message_id=str(uuid.uuid4()), action=action)
            self._pending = pending
            try:
                await self._send([CALL, pending.message_id, action, payload])
                reply = await asyncio.wait_for(pending.future, self.call_timeout_s)
            except TimeoutError:
                raise CallTimeout(
                    f"{self.charger_id} did not answer {action} within {self.call_timeout_s} s"
                ) from None
            finally:
                self._pending = None
        try:
            validate(self.version, action, reply, response=True, lenient=True)
        except PayloadError as exc:
            raise CallError(exc.code, f"invalid {action} response: {exc.description}", exc.details) from None
        return reply

    def spawn(self, coroutine: Awaitable[None]) -> None:
        """Run follow-up work (which may call the charger) outside the read loop."""

        async def guarded() -> None:
            try:
                await coroutine
            except ConnectionGone:
                log.info("%s: follow-up call not sent: the connection closed", self.charger_id)
            except (CallError, CallTimeout) as exc:
                log.warning("%s: follow-up call failed: %s", self.charger_id, exc)
            except Exception:
                log.exception("%s: follow-up work failed", self.charger_id)

        task = asyncio.get_running_loop().create_task(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Fail the pending call and cancel follow-up work; the socket is closed by its owner."""
        self.closed = True
        if self._pending is not None and not self._pending.future.done():
            self._pending.future.set_exception(ConnectionGone(self.charger_id))
        for task in list(self._background):
            task.cancel()

    # ----------------------------------------------------------------- helpers
    async def _send(self, message: list[Any]) -> None:
        await self.transport.send_text(jsoncodec.dumps(message))

    async def _send_error(self, message_id: str, kind: str, description: str) -> None:
        await self._send([CALLERROR, message_id, error_code(self.version, kind), description, {}])

    async def _reply_unparsable(self, text: str, kind: str, description: str) -> None:
        match = _MESSAGE_ID.match(text[:200])
        if match is not None and text.lstrip()[1:].lstrip().startswith("2"):
            await self._send_error(match.group(1), kind, description)
        elif self.version == "2.0.1":
            # OCPP 2.0.1 part 4: when the message id cannot be read, answer with id "-1".
            await self._send_error("-1", "rpc_framework", description)

    def _log_bad(self, text: str, reason: str) -> None:
        log.warning("%s: bad frame (%s): %.120r", self.charger_id, reason, text)
