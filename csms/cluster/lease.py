"""A lease held by one process of the cluster at a time: a key in the ``<cluster>_leases`` bucket, created
by whoever finds it absent and renewed by compare-and-set every third of the bucket's TTL.

The invoice stream's leader holds the lease ``invoice-stream``. If the leader dies, its key expires after
``CSMS_CLUSTER_LEASE_S`` and another process takes it and resumes from the cursor the leader persisted.
A leader that cannot renew in time gives the stream up before the lease can expire, so two leaders
overlap at most while one of them is cut off from NATS; crediting is idempotent, so an overlap replays
nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors

from csms import jsoncodec
from csms.cluster.link import ClusterLink

log = logging.getLogger("csms.cluster")


class Lease:
    def __init__(
        self,
        link: ClusterLink,
        name: str,
        on_gained: Callable[[], Awaitable[None]],
        on_lost: Callable[[], Awaitable[None]],
    ) -> None:
        self.link = link
        self.name = name
        self.on_gained = on_gained
        self.on_lost = on_lost
        self.held = False
        self._revision: int | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"lease-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.held:
            await self._lose()
            assert self.link.leases is not None
            with contextlib.suppress(Exception):  # let the next leader take over at once
                await self.link.leases.delete(self.name, last=self._revision)

    async def holder(self) -> str | None:
        assert self.link.leases is not None
        try:
            entry = await self.link.leases.get(self.name)
        except nats.js.errors.KeyNotFoundError:
            return None
        return None if entry.value is None else str(jsoncodec.loads(entry.value)["process"])

    async def _run(self) -> None:
        period = self.link.lease_s / 3
        while True:
            try:
                await asyncio.wait_for(self._try(), timeout=period)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away or slow: a lease not renewed in time is given up
                log.warning("lease %s: %s", self.name, exc or type(exc).__name__)
                if self.held:
                    await self._lose()
            await asyncio.sleep(period)

    async def _try(self) -> None:
        leases = self.link.leases
        assert leases is not None
        value = jsoncodec.dumps({"process": self.link.process_id}).encode()
        if self.held:
            try:
                self._revision = await leases.update(self.name, value, last=self._revision)
            except (nats.js.errors.KeyWrongLastSequenceError, nats.errors.Error):
                await self._lose()
            return
        try:
            self._revision = await leases.create(self.name, value)
        except nats.js.errors.KeyWrongLastSequenceError:
            return  # someone else holds it
        self.held = True
        log.info("this process now holds the %s lease", self.name)
        await self.on_gained()

    async def _lose(self) -> None:
        self.held = False
        log.warning("this process no longer holds the %s lease", self.name)
        await self.on_lost()
