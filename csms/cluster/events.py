"""Session events for readers on any process: the owner writes a session's events to the database (the
log) and, after the commit, tells the other processes which sessions have new entries; a process wakes
its readers of those sessions, and they read the log.

The notifications of a burst (every sample of one group commit) go out as one message on
``<cluster>.events``: one publish per batch, not per sample, on the path of every MeterValues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.msg import Msg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from csms import jsoncodec
from csms.charging.session_events import SessionEventLog
from csms.cluster.link import ClusterLink

log = logging.getLogger("csms.cluster")


class ClusterEventLog(SessionEventLog):
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], link: ClusterLink) -> None:
        super().__init__(sessionmaker)
        self.link = link
        self._to_publish: set[int] = set()
        self._wake = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.link.client.subscribe(self.link.subject("events"), cb=self._on_events)
        self._publisher = asyncio.create_task(self._publish_forever(), name="cluster-events")

    async def stop(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher

    def notify(self, session_number: int) -> None:
        super().notify(session_number)
        self._to_publish.add(session_number)
        self._wake.set()

    async def _publish_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            numbers, self._to_publish = self._to_publish, set()
            batch = {"from": self.link.process_id, "sessions": sorted(numbers)}
            try:
                await self.link.client.publish(self.link.subject("events"), jsoncodec.dumps(batch).encode())
            except Exception as exc:  # NATS away: readers elsewhere catch up at their keepalive
                log.warning("publishing session events failed: %s", exc)

    async def _on_events(self, message: Msg) -> None:
        batch = jsoncodec.loads(message.data)
        if batch["from"] == self.link.process_id:
            return  # this process's readers were woken when it wrote
        for number in batch["sessions"]:
            super().notify(number)  # not published again
