"""Secrets every process of a cluster agrees on, kept in the shared database."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from csms.db.models import SharedSecret


async def agreed_secret(sessionmaker: async_sessionmaker[AsyncSession], name: str, proposal: bytes) -> bytes:
    """The cluster's secret ``name``: ``proposal`` (this process's own) if it is the first to ask, else
    the one the first process stored."""
    async with sessionmaker.begin() as db:
        await db.execute(
            insert(SharedSecret).values(name=name, value=proposal.hex()).on_conflict_do_nothing()
        )
        value = await db.scalar(select(SharedSecret.value).where(SharedSecret.name == name))
    assert value is not None
    return bytes.fromhex(value)
