"""Session events for readers on any process: the owner writes a session's events to the database (the
log) and publishes the session's number on ``<cluster>.events.<number>`` after the commit; a process
with readers of that session listens on its subject and wakes them, and they read the log.

Notifications are gathered and published by one task (a burst of meter samples publishes each session
once); a process listens only to sessions someone is reading through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from csms.charging.session_events import LoggedEvent, SessionEventLog
from csms.cluster.link import ClusterLink

log = logging.getLogger("csms.cluster")


class ClusterEventLog(SessionEventLog):
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], link: ClusterLink) -> None:
        super().__init__(sessionmaker)
        self.link = link
        self._to_publish: set[int] = set()
        self._wake = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        self._listening: dict[int, tuple[Subscription, int]] = {}  # session -> (subscription, readers)

    def start(self) -> None:
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
            try:
                for number in numbers:
                    await self.link.client.publish(self.link.subject("events", str(number)), b"")
            except Exception as exc:  # NATS away: readers elsewhere catch up at their keepalive
                log.warning("publishing session events failed: %s", exc)

    async def _on_event(self, message: Msg) -> None:
        number = int(message.subject.rsplit(".", 1)[-1])
        super().notify(number)  # not published again

    async def follow(
        self, session_number: int, after_id: int = 0, keepalive_s: float = 15.0
    ) -> AsyncIterator[LoggedEvent | None]:
        listening = self._listening.get(session_number)
        if listening is None:
            subscription = await self.link.client.subscribe(
                self.link.subject("events", str(session_number)), cb=self._on_event
            )
            self._listening[session_number] = (subscription, 1)
        else:
            self._listening[session_number] = (listening[0], listening[1] + 1)
        try:
            async for event in super().follow(session_number, after_id, keepalive_s):
                yield event
        finally:
            await self._unlisten(session_number)

    async def _unlisten(self, session_number: int) -> None:
        subscription, readers = self._listening[session_number]
        if readers > 1:
            self._listening[session_number] = (subscription, readers - 1)
            return
        del self._listening[session_number]
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
