"""One process's link to the cluster: its NATS connection, its liveness, and requests to other processes.

Every process has an id (host, pid and a random part) and a key in the ``<cluster>_processes`` bucket
that it renews every third of ``CSMS_CLUSTER_LEASE_S``; the bucket's TTL removes the key of a process
that stopped renewing it, so "alive" means "renewed within the lease". A process answers requests on
``<cluster>.proc.<id>.<verb>``; each request is handled in its own task (a slow command never holds up
the next request) and answered with ``{"ok": ...}`` or ``{"error": {"kind", "message", ...}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from csms import jsoncodec

log = logging.getLogger("csms.cluster")

CONNECT_TIMEOUT_S = 10
Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ClusterError(Exception):
    """A request to another process failed; ``kind`` says how (``unreachable``, ``timeout``, or the
    kind of error the other process answered with)."""

    def __init__(self, kind: str, message: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.detail = detail or {}


class RemoteFailure(Exception):
    """Raised by a request handler to answer with an error of this ``kind`` (and ``detail``)."""

    def __init__(self, kind: str, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.detail = detail


def new_process_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:24] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class ClusterLink:
    def __init__(self, url: str, cluster: str, lease_s: float, process_id: str | None = None) -> None:
        self.url = url
        self.cluster = cluster
        self.lease_s = lease_s
        self.process_id = process_id or new_process_id()
        self.started_at = datetime.now(UTC)
        self.nc: Client | None = None
        self.processes: KeyValue | None = None
        self.owners: KeyValue | None = None
        self.leases: KeyValue | None = None
        self._handlers: dict[str, Handler] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None

    def subject(self, *parts: str) -> str:
        return ".".join((self.cluster, *parts))

    @property
    def client(self) -> Client:
        assert self.nc is not None, "the cluster link is not started"
        return self.nc

    async def start(self) -> None:
        servers = [url.strip() for url in self.url.split(",")]
        try:  # bounded: the client would keep retrying the first connection for ever
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                self.nc = await nats.connect(
                    servers=servers,
                    name=self.process_id,
                    connect_timeout=5,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    error_cb=self._error,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                )
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            reason = str(exc) or f"no answer within {CONNECT_TIMEOUT_S} s"
            raise ClusterError("unreachable", f"cannot reach NATS at {self.url}: {reason}") from None
        js = self.nc.jetstream()
        try:
            self.processes = await self._bucket(js, "processes", ttl=self.lease_s)
            self.owners = await self._bucket(js, "owners", ttl=None)
            self.leases = await self._bucket(js, "leases", ttl=self.lease_s)
        except nats.js.errors.Error as exc:
            await self.nc.close()
            raise ClusterError(
                "unreachable", f"NATS at {self.url} has no JetStream (start nats-server with -js): {exc}"
            ) from None
        await self.renew()
        await self.nc.subscribe(self.subject("proc", self.process_id, "*"), cb=self._on_request)
        self._heartbeat = asyncio.create_task(self._renew_forever(), name="cluster-heartbeat")
        log.info("joined cluster %r at %s as %s", self.cluster, self.url, self.process_id)

    async def _bucket(self, js: Any, name: str, ttl: float | None) -> KeyValue:
        bucket = f"{self.cluster}_{name}"
        try:
            return await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            pass
        try:
            return await js.create_key_value(bucket=bucket, history=1, ttl=ttl)
        except nats.js.errors.BadRequestError:  # another process created it meanwhile
            return await js.key_value(bucket)

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        for task in list(self._tasks):
            task.cancel()
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                assert self.processes is not None
                await self.processes.delete(self.process_id)
            with contextlib.suppress(Exception):
                await self.nc.drain()

    # ------------------------------------------------------------------ liveness
    async def renew(self) -> None:
        assert self.processes is not None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": self.started_at.isoformat()}
        await self.processes.put(self.process_id, jsoncodec.dumps(record).encode())

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.renew()
            except Exception as exc:  # NATS away: the next renewal tries again
                log.warning("renewing this process's liveness failed: %s", exc)

    async def alive(self, process_id: str) -> bool:
        if process_id == self.process_id:
            return True
        assert self.processes is not None
        try:
            await self.processes.get(process_id)
        except nats.js.errors.KeyNotFoundError:
            return False
        return True

    async def members(self) -> list[str]:
        assert self.processes is not None
        try:
            return sorted(await self.processes.keys())
        except nats.js.errors.NoKeysError:
            return []

    # ------------------------------------------------------------------ requests
    def handle(self, verb: str, handler: Handler) -> None:
        """Answer requests ``verb`` sent to this process with ``handler(payload)``."""
        self._handlers[verb] = handler

    async def request(self, process_id: str, verb: str, payload: dict[str, Any], timeout_s: float) -> Any:
        """Ask process ``process_id`` to do ``verb``; its answer, or ClusterError."""
        subject = self.subject("proc", process_id, verb)
        try:
            message = await self.client.request(subject, jsoncodec.dumps(payload).encode(), timeout=timeout_s)
        except nats.errors.NoRespondersError:
            raise ClusterError("unreachable", f"process {process_id} does not answer (gone)") from None
        except nats.errors.TimeoutError:
            raise ClusterError("timeout", f"process {process_id} did not answer {verb} in time") from None
        answer = jsoncodec.loads(message.data)
        if "error" in answer:
            error = answer["error"]
            raise ClusterError(error["kind"], error["message"], error.get("detail"))
        return answer.get("ok")

    async def _on_request(self, message: Msg) -> None:
        task = asyncio.create_task(self._answer(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, message: Msg) -> None:
        verb = message.subject.rsplit(".", 1)[-1]
        handler = self._handlers.get(verb)
        answer: dict[str, Any]
        if handler is None:
            answer = {"error": {"kind": "unknown_request", "message": f"no handler for {verb!r}"}}
        else:
            try:
                answer = {"ok": await handler(jsoncodec.loads(message.data))}
            except RemoteFailure as exc:
                answer = {"error": {"kind": exc.kind, "message": str(exc), "detail": exc.detail}}
            except Exception as exc:
                log.exception("cluster request %s failed", verb)
                answer = {"error": {"kind": "internal", "message": f"{type(exc).__name__}: {exc}"}}
        if message.reply:
            with contextlib.suppress(Exception):
                await message.respond(jsoncodec.dumps(answer).encode())

    # ------------------------------------------------------------------ connection news
    async def _error(self, exc: Exception) -> None:
        log.warning("NATS: %s", exc)

    async def _disconnected(self) -> None:
        log.warning("NATS: disconnected from %s; reconnecting", self.url)

    async def _reconnected(self) -> None:
        log.info("NATS: reconnected")
