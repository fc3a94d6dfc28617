"""The csms command, the migrations (the only schema source) and the OpenAPI document."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from csms.cli import OPENAPI_PATH, openapi_document
from csms.db.migrate import head_revision
from csms.db.models import Base

ROOT = Path(__file__).resolve().parent.parent
CSMS = [sys.executable, "-m", "csms"]


def run_csms(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CSMS, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


async def test_migrations_produce_exactly_the_models(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await engine.dispose()
    assert differences == []


def test_openapi_document_is_up_to_date() -> None:
    assert (ROOT / OPENAPI_PATH).read_text() == openapi_document(), "run `csms openapi` and commit the result"


def test_every_command_has_help() -> None:
    for command in ([], ["serve"], ["migrate"], ["api-key"], ["openapi"]):
        result = run_csms(*command, "--help")
        assert result.returncode == 0, result.stderr
        # plain (click) help: a usage line, what the command does, and its options
        assert result.stdout.startswith("Usage:") and "Options:" in result.stdout and len(result.stdout) > 150


def test_migrate_then_bad_setting_is_named(tmp_path: Path) -> None:
    env = {"CSMS_DATA_DIR": str(tmp_path)}
    migrated = run_csms("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert (tmp_path / "satwatt.db").is_file() and f"revision {head_revision()}" in migrated.stderr
    bad = run_csms("serve", env={**env, "CSMS_OCPP_CALL_TIMEOUT_S": "forever"})
    assert bad.returncode == 2
    assert "CSMS_OCPP_CALL_TIMEOUT_S" in bad.stderr and "Traceback" not in bad.stderr


async def test_serve_prints_where_to_point_a_charger(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CSMS_DATA_DIR": str(tmp_path),
        "CSMS_PORT": "0",
        "CSMS_SIMNET_PORT": "0",
        "COLUMNS": "200",
    }
    process = await asyncio.create_subprocess_exec(
        *CSMS, "serve", cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    lines: list[str] = []
    try:
        assert process.stderr is not None
        async with asyncio.timeout(30):
            while not any("Stop with Ctrl-C" in line for line in lines):
                line = (await process.stderr.readline()).decode()
                assert line, "csms serve exited early:\n" + "".join(lines)
                lines.append(line)
        text = "".join(lines)
        match = re.search(r"ws://127\.0\.0\.1:(\d+)/ocpp/<charge-point-id>", text)
        assert match, text
        assert "satwatt.db" in text and "Operator API key" in text
        assert re.search(r"Dashboard\s+http://127\.0\.0\.1:\d+/dashboard", text), text
        assert re.search(r"Driver pages\s+http://127\.0\.0\.1:\d+/c/<charge-point-id>/<connector>", text)
        assert "phone wallets refuse LNURL over plain http (LUD-01)" in text and "CSMS_PUBLIC_URL" in text
        key = re.search(r"(sw_[A-Za-z0-9_\-]+)", text)
        assert key is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{match.group(1)}") as client:
            assert (await client.get("/healthz")).json()["database"] == "ok"
            listing = await client.get(
                "/api/v1/chargers", headers={"Authorization": f"Bearer {key.group(1)}"}
            )
            assert listing.status_code == 200 and listing.json() == []
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
