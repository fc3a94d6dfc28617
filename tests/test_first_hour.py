"""The first hour of a new user (issue 9): each point a new user ran into, tested as they met it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import sys
from html.parser import HTMLParser
from pathlib import Path

import httpx

from tests.conftest import RunningServer

ROOT = Path(__file__).resolve().parent.parent
SIM = str(Path(sys.executable).parent / "chargepoint-sim")


class _AssetLinks(HTMLParser):
    """Every URL a page loads by itself: scripts, stylesheets, icons."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.urls.append(values["src"] or "")
        if tag == "link" and values.get("href"):
            self.urls.append(values["href"] or "")


async def _page_assets(client: httpx.AsyncClient, path: str) -> tuple[str, list[str]]:
    page = await client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    parser = _AssetLinks()
    parser.feed(page.text)
    return page.text, parser.urls


async def test_docs_pages_load_everything_from_satwatt_itself(server: RunningServer) -> None:
    """Point 1: /docs and /redoc were blank without internet access (Swagger UI and ReDoc from a CDN)."""
    async with server.api(key=None) as client:
        for path, script in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
            html, urls = await _page_assets(client, path)
            assert any(url.endswith(script) for url in urls), (path, urls)
            assert "cdn.jsdelivr.net" not in html and "fonts.googleapis.com" not in html
            for url in urls:
                assert url.startswith("/"), f"{path} loads {url} from elsewhere"
                asset = await client.get(url)
                assert asset.status_code == 200, url
                if url.endswith(".js"):
                    assert "javascript" in asset.headers["content-type"]
                    assert len(asset.content) > 100_000, f"{url} is not the real bundle"
            assert "/openapi.json" in html
        assert (await client.get("/openapi.json")).json()["info"]["title"] == "satwatt"
        assert (await client.get("/docs/oauth2-redirect")).status_code == 200


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def _readme_command(marker: str) -> list[str]:
    """The README's shell command containing ``marker`` (continuation lines joined, comment dropped)."""
    lines = _readme().splitlines()
    index = next(i for i, line in enumerate(lines) if marker in line and not line.lstrip().startswith("#"))
    text = lines[index]
    while text.rstrip().endswith("\\"):
        index += 1
        text = text.rstrip()[:-1] + " " + lines[index]
    return shlex.split(text.split("  #")[0])


async def _run_until(
    command: list[str], wanted: list[str], deadline_s: float = 60
) -> tuple[str, asyncio.subprocess.Process]:
    """Start ``command``; read its output until every ``wanted`` text has appeared (or fail)."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    seen = ""
    try:
        async with asyncio.timeout(deadline_s):
            while not all(text in seen for text in wanted):
                line = (await process.stdout.readline()).decode()
                assert line, f"{command[0]} exited early:\n{seen}"
                seen += line
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"never printed {wanted}:\n{seen}") from None
    return seen, process


async def _interrupt(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


async def test_readme_simulator_command_connects_the_registered_charger(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    """Point 2: the README registered CP-1 but its simulator command connected SIM-0001..4, which were
    refused with nothing but "disconnected" in the table."""
    body = json.loads(re.search(r"-d '(\{\"id\": \"CP-1\".*?\})'", _readme()).group(1))  # type: ignore[union-attr]
    assert (await api.post("/api/v1/chargers", json=body)).status_code == 201
    assert (await api.post("/api/v1/id-tags", json={"id_tag": "04A2B3C4"})).status_code == 201
    command = _readme_command("--id-pattern CP-1")
    assert command[0] == ".venv/bin/chargepoint-sim" and "--password" in command
    command = [SIM, *command[1:], "--no-live"]
    command[command.index("--csms") + 1] = server.ocpp_url
    output, process = await _run_until(command, ["CP-1/1: 04A2B3C4 accepted"])
    await _interrupt(process)
    assert "refused" not in output


async def test_a_refused_charger_says_why(server: RunningServer) -> None:
    """Point 2: unregistered chargers are refused with 401; the simulator says so plainly, without a
    terminal too."""
    command = _readme_command("--chargers 4 --protocol mixed")
    command = [SIM, *command[1:], "--no-live"]
    command[command.index("--csms") + 1] = server.ocpp_url
    wanted = [f"SIM-000{n}: refused: 401 unknown charger or wrong password" for n in range(1, 5)]
    _, process = await _run_until(command, wanted)
    await _interrupt(process)
