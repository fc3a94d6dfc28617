"""Creating the async engine and session factory for SQLite (aiosqlite) or PostgreSQL (asyncpg)."""

from __future__ import annotations

from typing import Any

import sqlalchemy
from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from csms.jsoncodec import dumps


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def create_engine(url: str, *, echo: bool = False, writer: bool = False) -> AsyncEngine:
    """The async engine: the readers' pool, or (``writer``) the one connection of the group-commit
    writer (csms.db.writer), which writes every fact of the hot path. SQLite in WAL mode lets readers
    read while the writer writes; the few other writes (the REST API's) wait for the file lock."""
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url,
            echo=echo,
            connect_args={"timeout": 30},
            json_serializer=dumps,
            pool_size=1 if writer else 4,
            max_overflow=0,
            pool_timeout=300,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        echo=echo,
        pool_size=1 if writer else 10,
        max_overflow=0 if writer else 10,
        pool_timeout=300,
        pool_pre_ping=True,
        json_serializer=dumps,
    )


def create_writer_engine(url: str) -> AsyncEngine | Engine:
    """The group-commit writer's one connection (csms.db.writer): SQLite through the standard library
    driver in the writer's own thread (a batch in one hop), PostgreSQL through asyncpg."""
    if not url.startswith("sqlite"):
        return create_engine(url, writer=True)
    engine = sqlalchemy.create_engine(
        url.replace("sqlite+aiosqlite", "sqlite", 1),
        connect_args={"timeout": 30, "check_same_thread": False},
        json_serializer=dumps,
        pool_size=1,
        max_overflow=0,
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    # The writer runs in the event loop's thread: it must never wait for the file lock there (the
    # transaction holding it may need the loop to finish). It is told at once and retries (writer.py).
    event.listen(engine, "connect", lambda connection, _record: connection.execute("PRAGMA busy_timeout=0"))
    return engine


async def dispose(engine: AsyncEngine | Engine) -> None:
    if isinstance(engine, AsyncEngine):
        await engine.dispose()
    else:
        engine.dispose()


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
