"""The connection registry of a process in a cluster: its own websockets, and the way to the others'.

A charger that connects here is claimed first (:mod:`csms.cluster.ownership`), its previous owner having
released it; a command for a charger held elsewhere travels to its owner over NATS and comes back with
the same result or failure as if it had been sent here (not connected, timeout, CALLERROR).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from csms.charging import commands as cmd
from csms.charging.commands import ChargerNotConnected, CommandFailed, CommandResult
from csms.cluster.link import ClusterError, ClusterLink, RemoteFailure
from csms.cluster.ownership import Ownership
from csms.ocpp.registry import ChargerConnection, ConnectionRegistry, Whereabouts

log = logging.getLogger("csms.cluster")

COMMAND_TYPES: dict[str, type[Any]] = {
    kind.__name__: kind
    for kind in (
        cmd.RemoteStart,
        cmd.RemoteStop,
        cmd.SetPowerLimit,
        cmd.ClearPowerLimit,
        cmd.GetConfiguration,
        cmd.SetConfiguration,
        cmd.TriggerMessage,
        cmd.Reset,
        cmd.UnlockConnector,
        cmd.ChangeAvailability,
        cmd.DataTransfer,
        cmd.CostUpdate,
    )
}
RELEASE_TIMEOUT_S = 15.0
# how a failed request to the owner reads as a command failure (anything else: the owner failed)
COMMAND_FAILURES = {
    "not_connected": "not_connected",
    "unreachable": "not_connected",  # the owner is gone
    "timeout": "timeout",
    "call_error": "call_error",
    "invalid": "invalid",
    "ended": "ended",  # the session a request was for has ended at its owner
}
REPLACED = "connected to another satwatt process"


def encode_command(command: cmd.Command) -> dict[str, Any]:
    return {"type": type(command).__name__, "fields": dataclasses.asdict(command)}


def decode_command(wire: dict[str, Any]) -> cmd.Command:
    kind = COMMAND_TYPES.get(wire.get("type", ""))
    if kind is None:
        raise RemoteFailure("invalid", f"unknown command {wire.get('type')!r}")
    fields = dict(wire.get("fields") or {})
    if kind is cmd.GetConfiguration:
        fields["keys"] = tuple(fields.get("keys") or ())
    command: cmd.Command = kind(**fields)
    return command


OnCharger = Callable[[str], Awaitable[None]]


class ClusterRegistry(ConnectionRegistry):
    def __init__(self, link: ClusterLink, call_timeout_s: float) -> None:
        super().__init__()
        self.link = link
        self.ownership = Ownership(link)
        self.process_id = link.process_id
        self.call_timeout_s = call_timeout_s
        # set by the app: load a claimed charger's settlement; forget a released charger (its live state
        # and its sessions' settlement, once their pending writes committed)
        self.on_claimed: OnCharger | None = None
        self.on_released: OnCharger | None = None
        self._claiming: dict[str, asyncio.Future[None]] = {}
        link.handle("release", self._release_request)
        link.handle("command", self._command_request)
        link.handle("drop", self._drop_request)

    # ------------------------------------------------------------------ ownership
    async def claim(self, charger_id: str, *, connected: bool, protocol: str | None = None) -> None:
        """Own the charger (loading what settlement needs), unless this process already does."""
        if self.ownership.holds(charger_id):
            if connected:  # (finds out if another process took it without our release: then claim)
                await self.ownership.mark(charger_id, connected=True, protocol=protocol)
            if self.ownership.holds(charger_id):
                return
        running = self._claiming.get(charger_id)
        if running is not None:  # a claim for it is under way here: share its outcome
            await asyncio.shield(running)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._claiming[charger_id] = done
        try:
            await self.ownership.claim(charger_id, self._ask_release, connected=connected, protocol=protocol)
            if self.on_claimed is not None:
                try:
                    await self.on_claimed(charger_id)
                except BaseException:
                    self.ownership.give_up(charger_id)  # not loaded: the next connection claims it afresh
                    raise
                if not self.ownership.holds(charger_id) and self.on_released is not None:
                    # released while loading (another process took it over): forget what was loaded
                    # (the release request left that to this claim, not to run alongside the load)
                    await self.on_released(charger_id)
            done.set_result(None)
        except BaseException as exc:
            done.set_exception(exc)
            done.exception()  # retrieved: only sharers re-raise it
            raise
        finally:
            del self._claiming[charger_id]

    async def _ask_release(self, process_id: str, charger_id: str) -> None:
        await self.link.request(process_id, "release", {"charger": charger_id}, RELEASE_TIMEOUT_S)

    async def _release_request(self, payload: dict[str, Any]) -> bool:
        """Another process takes a charger over: close our connection, let our writes for it commit,
        forget it. True if we held it."""
        charger_id = payload["charger"]
        held = self.ownership.holds(charger_id)
        self.ownership.give_up(charger_id)
        connection = self._connections.pop(charger_id, None)
        if connection is not None:
            log.info("%s: %s; closing this connection", charger_id, REPLACED)
            await self._close(connection, REPLACED)
        if held and self.on_released is not None and charger_id not in self._claiming:
            await self.on_released(charger_id)  # (a claim under way here forgets it when its load is done)
        return held

    async def register(self, connection: ChargerConnection) -> bool:
        """Claim the charger, then make ``connection`` its connection here; unless another process took
        the charger over while the claim loaded it: then the connection is closed (False), as a release
        would have closed it had it been registered."""
        await self.claim(connection.charger_id, connected=True, protocol=connection.version)
        if not self.ownership.holds(connection.charger_id):
            log.info("%s: %s while this one connected; closing it", connection.charger_id, REPLACED)
            await self._close(connection, REPLACED)
            return False
        return await super().register(connection)  # (registered before its first await: no release between)

    def unregister(self, connection: ChargerConnection) -> bool:
        gone = super().unregister(connection)
        if gone:
            task = asyncio.get_running_loop().create_task(
                self.ownership.mark(connection.charger_id, connected=False, protocol=connection.version)
            )
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return gone

    # ------------------------------------------------------------------ where a charger is
    async def whereabouts(self, charger_id: str) -> Whereabouts | None:
        connection = self._connections.get(charger_id)
        if connection is not None:
            return Whereabouts(self.process_id, True, connection.version)
        owner = await self.ownership.owner(charger_id)
        if owner is None:
            return None
        return Whereabouts(owner.process_id, owner.connected, owner.protocol)

    async def all_whereabouts(self) -> dict[str, Whereabouts]:
        members = set(await self.link.members())
        view = {
            charger_id: Whereabouts(owner.process_id, owner.connected, owner.protocol)
            for charger_id, owner in self.ownership.mirror.items()
            if owner.process_id in members
        }
        view.update(await super().all_whereabouts())
        return view

    async def to_owner(self, charger_id: str, verb: str, payload: dict[str, Any], timeout_s: float) -> Any:
        """Have the charger's live owner do ``verb``. Failures come back as CommandFailed, with the
        reasons of a command sent here: ``not_connected`` (nobody alive owns it, or the owner's websocket
        is closed), ``timeout``, ``call_error`` (a CALLERROR, or the owner failed), ``invalid``."""
        owner = await self.ownership.owner(charger_id)
        if owner is None or owner.process_id == self.process_id:
            raise ChargerNotConnected(charger_id)
        try:
            return await self.link.request(owner.process_id, verb, payload, timeout_s)
        except ClusterError as exc:
            reason = COMMAND_FAILURES.get(exc.kind, "call_error")
            raise CommandFailed(reason, f"charger {charger_id} (at {owner.process_id}): {exc}") from None

    # ------------------------------------------------------------------ commands
    async def execute(self, charger_id: str, command: cmd.Command) -> CommandResult:
        if charger_id in self._connections or self.ownership.holds(charger_id):
            return await super().execute(charger_id, command)
        answer = await self.to_owner(
            charger_id,
            "command",
            {"charger": charger_id, "command": encode_command(command)},
            self.call_timeout_s + 5,
        )
        return CommandResult(answer["status"], answer.get("data") or {})

    async def _command_request(self, payload: dict[str, Any]) -> dict[str, Any]:
        command = decode_command(payload["command"])
        try:
            result = await super().execute(payload["charger"], command)
        except CommandFailed as exc:
            raise RemoteFailure(exc.reason, str(exc)) from None
        return {"status": result.status, "data": result.data}

    async def drop(self, charger_id: str, reason: str) -> None:
        if charger_id in self._connections:
            await super().drop(charger_id, reason)
            return
        with contextlib.suppress(CommandFailed):  # nobody holds it: nothing to close
            await self.to_owner(charger_id, "drop", {"charger": charger_id, "reason": reason}, 10)

    async def _drop_request(self, payload: dict[str, Any]) -> None:
        await super().drop(payload["charger"], payload["reason"])
