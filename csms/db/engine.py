"""Creating the async engine and session factory for SQLite (aiosqlite) or PostgreSQL (asyncpg)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
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


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
