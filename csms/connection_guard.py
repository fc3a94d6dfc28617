"""Connections that have not finished their handshake: timed out, and bounded per client address.

uvicorn closes an idle keep-alive connection only after it has answered a request
(``timeout_keep_alive``); a TCP connection that never sends a complete request, or a websocket upgrade
that the application has not admitted yet, is never closed, and nothing bounds how many of them one
address may hold. uvicorn's ``limit_concurrency`` does not help: it counts every connection and task
server-wide, so it would turn away connected chargers and API calls alike, and it never closes anything.

So satwatt serves with uvicorn's own HTTP and websocket protocols, subclassed (:func:`guarded_protocols`)
to tell a :class:`HandshakeGuard` when a connection starts and when its handshake is over:

* an HTTP request is done with its handshake once its headers are complete (after that uvicorn's own
  timeouts and the application apply); each further request on a keep-alive connection starts again;
* a websocket is done once the application accepted it (satwatt accepts a charger only after checking
  its id, its password or certificate), or once it was refused.

A connection still pending after ``CSMS_HANDSHAKE_TIMEOUT_S`` is closed. One client address may hold at
most ``CSMS_MAX_PENDING_CONNECTIONS_PER_ADDRESS`` pending connections; a connection beyond that is
answered ``429 Too Many Requests`` and closed at once (chargers retry with back-off). Established
connections are not counted, so a site with many chargers behind one NAT address is not limited.

With TLS the TLS handshake happens before uvicorn sees the connection; asyncio times it out (60 s) and
it is not counted here.

The websocket protocol also fills in the ASGI TLS extension (``scope["extensions"]["tls"]``), which
uvicorn leaves out, so that the OCPP endpoint can read the charger's client certificate; and it marks a
refused handshake as complete, so that uvicorn does not log an ERROR for every refused charger.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import Counter
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

log = logging.getLogger("csms.connections")

TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
_TOO_MANY = (
    b"HTTP/1.1 429 Too Many Requests\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"retry-after: 5\r\n"
    b"connection: close\r\n"
    b"content-length: 50\r\n"
    b"\r\n"
    b"too many unfinished connections from this address\n"
)
_WARN_EVERY_S = 60.0


class HandshakeGuard:
    """Tracks connections whose handshake is not finished: closes them after a timeout, bounds them."""

    def __init__(self, timeout_s: float, max_per_address: int) -> None:
        self.timeout_s = timeout_s
        self.max_per_address = max_per_address
        self._pending: dict[asyncio.BaseTransport, tuple[str, asyncio.TimerHandle]] = {}
        self._per_address: Counter[str] = Counter()
        self._warned_at: dict[str, float] = {}
        self.timed_out = 0  # connections closed because their handshake did not finish in time
        self.refused = 0  # connections refused because their address had too many pending

    def pending(self, address: str | None = None) -> int:
        """Connections pending now (from ``address``, or from anywhere)."""
        return len(self._pending) if address is None else self._per_address[address]

    def admit(self, transport: asyncio.BaseTransport, address: str) -> bool:
        """A new connection: False when its address already has too many pending ones."""
        if self.max_per_address and self._per_address[address] >= self.max_per_address:
            self.refused += 1
            now = time.monotonic()
            if now - self._warned_at.get(address, -_WARN_EVERY_S) >= _WARN_EVERY_S:
                self._warned_at[address] = now
                if len(self._warned_at) > 10_000:
                    self._warned_at.clear()
                log.warning(
                    "%s has %d unfinished connections (CSMS_MAX_PENDING_CONNECTIONS_PER_ADDRESS); "
                    "refusing more with 429 (logged once a minute per address)",
                    address,
                    self._per_address[address],
                )
            return False
        self.begin(transport, address)
        return True

    def begin(self, transport: asyncio.BaseTransport, address: str) -> None:
        """A handshake starts on ``transport`` (a no-op when one is already pending)."""
        if transport in self._pending:
            return
        timer = asyncio.get_running_loop().call_later(self.timeout_s, self._expire, transport)
        self._pending[transport] = (address, timer)
        self._per_address[address] += 1

    def done(self, transport: asyncio.BaseTransport | None) -> None:
        """The handshake on ``transport`` is over (finished, refused or the connection closed)."""
        entry = self._pending.pop(transport, None) if transport is not None else None
        if entry is None:
            return
        address, timer = entry
        timer.cancel()
        self._per_address[address] -= 1
        if self._per_address[address] <= 0:
            del self._per_address[address]

    def _expire(self, transport: asyncio.BaseTransport) -> None:
        entry = self._pending.get(transport)
        if entry is None:
            return
        self.done(transport)
        self.timed_out += 1
        log.debug("%s: handshake not finished within %g s; closing", entry[0], self.timeout_s)
        transport.close()


def _address(client: tuple[str, int] | None) -> str:
    return client[0] if client else "local"


def tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """The ASGI TLS extension for a TLS transport (None without TLS): version and client certificate."""
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
    }


def guarded_protocols(guard: HandshakeGuard) -> tuple[type[asyncio.Protocol], type[asyncio.Protocol]]:
    """uvicorn's HTTP (httptools) and websocket (websockets sans-I/O) protocols reporting to ``guard``."""

    class GuardedHttpProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if not guard.admit(transport, _address(self.client)):
                transport.write(_TOO_MANY)
                transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if not self.transport.is_closing():
                guard.begin(self.transport, _address(self.client))

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            if not (self.parser.should_upgrade() and self._should_upgrade()):
                guard.done(self.transport)  # a plain HTTP request: uvicorn's timeouts take over

        def connection_lost(self, exc: Exception | None) -> None:
            guard.done(self.transport)
            super().connection_lost(exc)

    class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
        def handle_connect(self, event: Request) -> None:
            super().handle_connect(event)
            scope = getattr(self, "scope", None)
            if scope is not None:
                extension = tls_extension(self.transport)
                if extension is not None:
                    scope["extensions"]["tls"] = extension  # type: ignore[index]
            if self.close_sent:  # the upgrade request itself was invalid and was answered
                guard.done(self.transport)

        async def send(self, message: Any) -> None:
            if message["type"] == "websocket.send":
                await super().send(message)
                return
            try:
                await super().send(message)
            finally:
                guard.done(self.transport)  # accepted, refused or closed: no longer pending
            if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
                # the refusal (401, 404...) was sent: uvicorn would otherwise log an ERROR ("returned
                # without completing handshake") for every refused charger
                self.handshake_complete = True

        def connection_lost(self, exc: Exception | None) -> None:
            guard.done(self.transport)
            super().connection_lost(exc)

    return GuardedHttpProtocol, GuardedWebSocketProtocol
