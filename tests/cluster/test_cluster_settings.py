"""Cluster mode's settings and start-up errors: a clear message naming the setting, never a traceback."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from csms.settings import SettingsError, load_settings
from tests.cluster.processes import REPO, free_port

PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/satwatt"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"nats_url": "nats://127.0.0.1:4222"}, "CSMS_NATS_URL (cluster mode) needs PostgreSQL"),
        (
            {"nats_url": "nats://127.0.0.1:4222", "database_url": PG},
            "needs one Lightning node shared by every process: set CSMS_LIGHTNING_BACKEND=lnd",
        ),
        (
            {"nats_url": "http://127.0.0.1:4222", "database_url": PG},
            "CSMS_NATS_URL: each server must be nats://host:port",
        ),
        ({"cluster_name": "has.dots"}, "CSMS_CLUSTER_NAME"),
        ({"cluster_lease_s": 1}, "CSMS_CLUSTER_LEASE_S"),
    ],
)
def test_bad_cluster_settings_are_named(settings: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**settings)
    assert message in str(caught.value)


def test_without_nats_url_there_is_no_cluster() -> None:
    assert load_settings().cluster_mode is False


async def test_an_unreachable_nats_stops_start_up_with_one_clear_line(
    cluster_database: str, tmp_path: Path
) -> None:
    lnd = tmp_path / "lnd"
    lnd.mkdir()
    (lnd / "tls.cert").write_text("unused: start-up stops before the node is dialled\n")
    (lnd / "admin.macaroon").write_bytes(b"\x02")
    env = {
        **os.environ,
        "CSMS_DATA_DIR": str(tmp_path / "data"),
        "CSMS_DATABASE_URL": cluster_database,
        "CSMS_NATS_URL": f"nats://127.0.0.1:{free_port()}",  # nobody listens there
        "CSMS_LIGHTNING_BACKEND": "lnd",
        "CSMS_LND_GRPC": "127.0.0.1:1",
        "CSMS_LND_TLS_CERT": str(lnd / "tls.cert"),
        "CSMS_LND_MACAROON": str(lnd / "admin.macaroon"),
        "CSMS_PORT": str(free_port()),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "csms", "serve", cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(60):
        output, _ = await process.communicate()
    text = output.decode()
    assert process.returncode != 0
    assert "CSMS_NATS_URL: cannot reach NATS at nats://127.0.0.1:" in text
    assert "Traceback" not in text
