"""Who owns which charger: a key per charger in the ``<cluster>_owners`` bucket, changed only by
compare-and-set.

Owning a charger means holding its live state and the settlement of its open sessions in memory, and
being the only process that writes them. A process claims a charger when the charger connects to it
(or, for a payment, when nobody alive owns it). Before taking over from a live owner, the claimer asks
it to release the charger: the owner closes its connection, lets its pending writes commit and forgets
the charger; only then does the claimer load the charger's state from the database. An owner keeps its
chargers after they disconnect (it keeps ticking their sessions, as one process does); an owner that
died (its liveness key expired) owns nothing, whatever its keys still say.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats.js.errors

from csms import jsoncodec
from csms.cluster.link import ClusterError, ClusterLink

log = logging.getLogger("csms.cluster")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
CLAIM_ATTEMPTS = 8


def owner_key(charger_id: str) -> str:
    """The charger id as a NATS key (charger ids may hold ``~@#*+.``, keys may not): unsafe characters
    become ``=XX`` (hex), so distinct ids stay distinct keys."""
    return _UNSAFE.sub(lambda m: "=" + m.group().encode().hex(), charger_id)


def _charger_of(key: str) -> str:
    """The charger id of an owner key (the inverse of :func:`owner_key`)."""
    return re.sub(r"=([0-9a-f]{2})", lambda m: bytes.fromhex(m.group(1)).decode("latin-1"), key)


@dataclass(frozen=True)
class Owner:
    process_id: str
    connected: bool
    protocol: str | None
    since: str
    revision: int

    @classmethod
    def parse(cls, value: bytes, revision: int) -> Owner:
        """An owner key's value (as :meth:`Ownership._value` writes it) at ``revision``."""
        fields = jsoncodec.loads(value)
        return cls(fields["process"], fields["connected"], fields.get("protocol"), fields["since"], revision)


class Ownership:
    def __init__(self, link: ClusterLink) -> None:
        self.link = link
        self._held: dict[str, int] = {}  # charger id -> the revision of our key
        # every charger's owner key as last seen (watched): for listings, not for decisions
        self.mirror: dict[str, Owner] = {}
        self._watching: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Keep :attr:`mirror` current from the owners bucket (its whole content first)."""
        assert self.link.owners is not None
        watcher = await self.link.owners.watchall()
        self._watching = asyncio.create_task(self._follow(watcher), name="cluster-owners")

    async def stop(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching

    async def _follow(self, watcher: Any) -> None:
        async for entry in watcher:
            if entry is None:  # the end of the bucket's initial content
                continue
            charger_id = _charger_of(entry.key)
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self.mirror.pop(charger_id, None)
                continue
            self.mirror[charger_id] = Owner.parse(entry.value, entry.revision)

    @property
    def me(self) -> str:
        return self.link.process_id

    def holds(self, charger_id: str) -> bool:
        return charger_id in self._held

    def held(self) -> list[str]:
        return list(self._held)

    async def record(self, charger_id: str) -> Owner | None:
        """The charger's owner key as it stands (alive or not), None if it never had one."""
        assert self.link.owners is not None
        try:
            entry = await self.link.owners.get(owner_key(charger_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        return Owner.parse(entry.value, entry.revision)

    async def owner(self, charger_id: str) -> Owner | None:
        """The live owner of a charger, None when nobody alive owns it."""
        record = await self.record(charger_id)
        if record is None or not await self.link.alive(record.process_id):  # (this process: alive)
            return None
        return record

    def _value(self, connected: bool, protocol: str | None) -> bytes:
        value = {
            "process": self.me,
            "connected": connected,
            "protocol": protocol,
            "since": datetime.now(UTC).isoformat(),
        }
        return jsoncodec.dumps(value).encode()

    async def claim(
        self,
        charger_id: str,
        release: Callable[[str, str], Awaitable[Any]],
        *,
        connected: bool,
        protocol: str | None = None,
    ) -> None:
        """Make this process the charger's owner; ``release(process, charger)`` asks a live previous owner
        to let go first. Raises ClusterError if another claimer keeps winning the race."""
        assert self.link.owners is not None
        key = owner_key(charger_id)
        for _ in range(CLAIM_ATTEMPTS):
            record = await self.record(charger_id)
            previous = record.process_id if record is not None else None
            if previous is not None and previous != self.me and await self.link.alive(previous):
                try:
                    await release(previous, charger_id)
                except ClusterError as exc:  # it died meanwhile, or cannot answer: its claim lapses
                    log.warning("%s: the previous owner %s did not release it: %s", charger_id, previous, exc)
            try:
                if record is None:
                    revision = await self.link.owners.create(key, self._value(connected, protocol))
                else:
                    revision = await self.link.owners.update(
                        key, self._value(connected, protocol), last=record.revision
                    )
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # someone else claimed it meanwhile: look again
            self._held[charger_id] = revision
            return
        raise ClusterError("contended", f"{charger_id}: could not claim it ({CLAIM_ATTEMPTS} attempts)")

    async def mark(self, charger_id: str, *, connected: bool, protocol: str | None = None) -> None:
        """Say whether our charger's websocket is open here (others read it for the charger's state)."""
        assert self.link.owners is not None
        for _ in range(CLAIM_ATTEMPTS):
            revision = self._held.get(charger_id)
            if revision is None:
                return
            try:
                self._held[charger_id] = await self.link.owners.update(
                    owner_key(charger_id), self._value(connected, protocol), last=revision
                )
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                record = await self.record(charger_id)  # our own other update, or another claimer
                if record is None or record.process_id != self.me:
                    log.info("%s: another process claimed it", charger_id)
                    self._held.pop(charger_id, None)
                    return
                if charger_id in self._held:
                    self._held[charger_id] = record.revision

    def give_up(self, charger_id: str) -> None:
        """Forget a charger another process takes over (its key is theirs to overwrite)."""
        self._held.pop(charger_id, None)
