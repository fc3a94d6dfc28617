"""Helpers for paid-session tests: a payer node on the simnet, and a reader of a session's SSE stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from lightning import PaymentResult
from lightning.lnd import LndBackend
from lightning.lnd.config import LndConfig
from lightning.simnet import Simnet


@dataclass
class Event:
    id: int
    kind: str
    data: dict[str, Any]


@dataclass
class EventReader:
    """Follows ``/api/v1/sessions/{id}/events`` and hands out the events in order."""

    events: list[Event] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    position: int = 0

    async def next(self, kind: str, timeout: float = 20) -> Event:
        """The next event of ``kind`` after the last one returned (events of other kinds are skipped)."""
        async with asyncio.timeout(timeout), self.changed:
            while True:
                for index in range(self.position, len(self.events)):
                    if self.events[index].kind == kind:
                        self.position = index + 1
                        return self.events[index]
                await self.changed.wait()

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    async def _consume(self, client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
        async with client.stream("GET", url, headers=headers, timeout=None) as response:
            response.raise_for_status()
            current: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line == "":
                    if "event" in current:
                        async with self.changed:
                            self.events.append(
                                Event(int(current["id"]), current["event"], json.loads(current["data"]))
                            )
                            self.changed.notify_all()
                    current = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    current[name] = value.strip()


@contextlib.asynccontextmanager
async def follow_events(base_url: str, session_id: str, token: str) -> AsyncIterator[EventReader]:
    reader = EventReader()
    async with httpx.AsyncClient(base_url=base_url) as client:
        task = asyncio.create_task(
            reader._consume(
                client, f"/api/v1/sessions/{session_id}/events", {"Authorization": f"Bearer {token}"}
            )
        )
        try:
            yield reader
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await task


@contextlib.asynccontextmanager
async def payer_node(simnet: Simnet, node: str = "car1") -> AsyncIterator[LndBackend]:
    backend = LndBackend(LndConfig.from_simnet(simnet, node), name=node)
    try:
        yield backend
    finally:
        await backend.close()


async def pay(backend: LndBackend, bolt11: str) -> PaymentResult:
    return await backend.pay_invoice(bolt11, fee_limit_msat=10_000, timeout_s=30)
