"""Cluster tests need PostgreSQL (CSMS_TEST_DATABASE_URL) and NATS with JetStream (CSMS_TEST_NATS_URL,
default nats://127.0.0.1:4222); `.ci/run` provides both. Each test gets a fresh database."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from csms.db.migrate import upgrade_to_head
from tests.cluster.processes import NATS_URL, Cluster, nats_reachable, running_cluster
from tests.conftest import PG_URL, _pg_admin


@pytest.fixture
def cluster_database() -> Iterator[str]:
    if not PG_URL:
        pytest.skip("cluster mode needs PostgreSQL: set CSMS_TEST_DATABASE_URL (`.ci/run` does)")
    if not nats_reachable():
        pytest.skip(f"cluster mode needs NATS with JetStream at {NATS_URL} (`.ci/run` starts it)")
    name = f"satwatt_cluster_{secrets.token_hex(4)}"
    base, _, _ = PG_URL.rpartition("/")
    asyncio.run(_pg_admin(PG_URL, f'CREATE DATABASE "{name}"'))
    url = f"{base}/{name}"
    upgrade_to_head(url)
    try:
        yield url
    finally:
        asyncio.run(_pg_admin(PG_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def cluster(cluster_database: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path, cluster_database) as running:
        yield running
