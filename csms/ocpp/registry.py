"""The live charger connections, and the one command interface the rest of satwatt uses."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from csms.charging.commands import ChargerNotConnected, Command, CommandResult
from csms.ocpp.adapter import ProtocolAdapter
from csms.ocpp.rpc import RpcEndpoint

log = logging.getLogger("csms.ocpp")


class SocketCloser:
    """What the registry needs of a websocket: a way to close it."""

    async def close(self, code: int, reason: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(eq=False)
class ChargerConnection:
    charger_id: str
    version: str
    adapter: ProtocolAdapter
    rpc: RpcEndpoint
    socket: SocketCloser
    remote_address: str | None
    connected_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    last_message_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Whereabouts:
    """Where a charger is held: by which process (None: this one, or nobody), whether its websocket is
    open there, and its OCPP version."""

    process_id: str | None
    connected: bool
    protocol: str | None


class ConnectionRegistry:
    """charger id -> its one live connection; the newest connection for an id wins.

    In cluster mode :class:`csms.cluster.registry.ClusterRegistry` extends it so that commands reach a
    charger held by another process."""

    process_id: str | None = None  # this process's id in a cluster

    def __init__(self) -> None:
        self._connections: dict[str, ChargerConnection] = {}

    def get(self, charger_id: str) -> ChargerConnection | None:
        return self._connections.get(charger_id)

    async def whereabouts(self, charger_id: str) -> Whereabouts | None:
        """Where the charger is connected (in one process: here, or nowhere)."""
        connection = self._connections.get(charger_id)
        if connection is None:
            return None
        return Whereabouts(self.process_id, True, connection.version)

    async def all_whereabouts(self) -> dict[str, Whereabouts]:
        """Where every charger held anywhere is (in one process: the connected ones)."""
        return {
            charger_id: Whereabouts(self.process_id, True, connection.version)
            for charger_id, connection in self._connections.items()
        }

    async def to_owner(self, charger_id: str, verb: str, payload: dict[str, Any], timeout_s: float) -> Any:
        """Have the process that owns the charger do ``verb`` (cluster mode); one process owns all."""
        raise ChargerNotConnected(charger_id)

    def __len__(self) -> int:
        return len(self._connections)

    def last_seen(self) -> dict[str, datetime]:
        """When each connected charger last sent a message."""
        return {c.charger_id: c.last_message_at for c in self._connections.values()}

    async def register(self, connection: ChargerConnection) -> bool:
        """Make ``connection`` the charger's connection, closing any older one. False when it was closed
        instead (cluster mode: another process took the charger over meanwhile)."""
        older = self._connections.get(connection.charger_id)
        self._connections[connection.charger_id] = connection
        if older is not None:
            log.info("%s: newer connection replaces the older one", connection.charger_id)
            await self._close(older, "replaced by a newer connection")
        return True

    async def drop(self, charger_id: str, reason: str) -> None:
        """Close a charger's connection (e.g. the charger was removed from the registry)."""
        connection = self._connections.pop(charger_id, None)
        if connection is not None:
            await self._close(connection, reason)

    @staticmethod
    async def _close(connection: ChargerConnection, reason: str) -> None:
        await connection.rpc.close()
        try:
            await connection.socket.close(1000, reason)
        except Exception as exc:  # a half-open socket may fail to close cleanly
            log.debug("%s: closing the socket failed: %s", connection.charger_id, exc)

    def unregister(self, connection: ChargerConnection) -> bool:
        """Forget ``connection`` if it is still the current one; False when a newer one took over."""
        if self._connections.get(connection.charger_id) is connection:
            del self._connections[connection.charger_id]
            return True
        return False

    async def execute(self, charger_id: str, command: Command) -> CommandResult:
        """Send a version-free command to a connected charger and return its answer."""
        connection = self._connections.get(charger_id)
        if connection is None:
            raise ChargerNotConnected(charger_id)
        return await connection.adapter.execute(command)

    async def close_all(self) -> None:
        connections = list(self._connections.values())
        self._connections.clear()
        for connection in connections:
            await connection.rpc.close()
        await asyncio.gather(
            *(c.socket.close(1001, "central system shutting down") for c in connections),
            return_exceptions=True,
        )
