"""`csms serve --workers N`: N processes on one port, each a member of the cluster."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from csms.cli import cli
from tests.cluster.processes import REPO, cluster_environment, free_port, poll
from tests.ocpp_clients import connect_charger
from tests.test_ocpp16 import register


def test_workers_need_cluster_mode(tmp_path: Path) -> None:
    handlers, level = logging.root.handlers[:], logging.root.level
    try:
        result = CliRunner().invoke(
            cli, ["serve", "--workers", "2"], env={"CSMS_DATA_DIR": str(tmp_path), "CSMS_NATS_URL": ""}
        )
    finally:  # serve points the root logger at the runner's stream, which is closed after the call
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)
    assert result.exit_code == 2
    assert "--workers needs cluster mode: set CSMS_NATS_URL" in result.output


async def health(port: int) -> dict[str, Any]:
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"http://127.0.0.1:{port}/healthz")).json()  # type: ignore[no-any-return]
    except httpx.TransportError:
        return {}


def members(state: dict[str, Any]) -> list[str]:
    return list(state.get("cluster", {}).get("members", []))


async def test_two_workers_share_a_port_and_a_dead_one_is_started_again(
    cluster_database: str, tmp_path: Path
) -> None:
    port = free_port()
    async with cluster_environment(tmp_path, cluster_database) as environment:
        env, key = environment.env, environment.api_key
        log = (tmp_path / "serve.log").open("wb")
        supervisor = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "csms",
            "serve",
            "--workers",
            "2",
            "--port",
            str(port),
            cwd=REPO,
            env={**env, "CSMS_DATA_DIR": str(tmp_path / "data")},
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        try:
            try:
                state = await poll(lambda: health(port), lambda s: len(members(s)) == 2, timeout_s=90)
            except TimeoutError:
                raise AssertionError((tmp_path / "serve.log").read_text()[-3000:]) from None
            first = members(state)
            api = httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}
            )
            async with api:
                for i in range(6):
                    await register(api, f"CP-w{i}")
                chargers = [
                    connect_charger(f"ws://127.0.0.1:{port}/ocpp", f"CP-w{i}", "1.6") for i in range(6)
                ]
                clients = [await c.__aenter__() for c in chargers]
                try:
                    for i, client in enumerate(clients):  # whichever worker answers the API, it reaches them
                        shown = (await api.get(f"/api/v1/chargers/CP-w{i}")).json()
                        assert shown["owner"] in first and shown["connection_state"] == "connected"
                        sent = await api.post(f"/api/v1/chargers/CP-w{i}/commands", json={"command": "reset"})
                        assert sent.status_code == 200 and sent.json()["status"] == "Accepted"
                        assert client.recorder.of("Reset") == [{"type": "Soft"}]
                finally:
                    for c in chargers:
                        await c.__aexit__(None, None, None)
            # kill -9 one worker: the supervisor starts another, which joins the cluster
            victim = int(first[0].split("-")[-2])
            os.kill(victim, signal.SIGKILL)
            await poll(
                lambda: health(port),
                lambda s: len(members(s)) == 2 and first[0] not in members(s),
                timeout_s=60,
            )
        finally:
            supervisor.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                assert await supervisor.wait() == 0
