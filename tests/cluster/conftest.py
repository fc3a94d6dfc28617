"""Cluster tests need PostgreSQL (CSMS_TEST_DATABASE_URL) and NATS with JetStream (CSMS_TEST_NATS_URL,
default nats://127.0.0.1:4222); `.ci/run` provides both. Each test gets a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.cluster.processes import NATS_URL, Cluster, nats_reachable, running_cluster
from tests.conftest import PG_URL, fresh_pg_database


@pytest.fixture
def cluster_database() -> Iterator[str]:
    if not PG_URL:
        pytest.skip("cluster mode needs PostgreSQL: set CSMS_TEST_DATABASE_URL (`.ci/run` does)")
    if not nats_reachable():
        pytest.skip(f"cluster mode needs NATS with JetStream at {NATS_URL} (`.ci/run` starts it)")
    with fresh_pg_database("satwatt_cluster") as url:
        yield url


@pytest.fixture
async def cluster(cluster_database: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path, cluster_database) as running:
        yield running
