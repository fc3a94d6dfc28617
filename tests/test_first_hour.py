"""The first hour of a new user (issue 9): each point a new user ran into, tested as they met it."""

from __future__ import annotations

import ast
import asyncio
import fnmatch
import io
import json
import logging
import os
import re
import shlex
import signal
import socket
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import websockets
from pydantic import TypeAdapter
from rich.console import Console
from typer.testing import CliRunner

from chargepoint_sim.cli import app as sim_cli
from chargepoint_sim.payer import PayerStats
from csms.api.schemas import CommandBody
from csms.cli import cli
from csms.demo import Demo, DemoOptions, Visit
from csms.security import load_or_create_api_key
from csms.server_config import websocket_frame_cap
from csms.settings import Settings, SettingsError, load_settings
from tests.conftest import RunningServer, start_server
from tests.ocpp_clients import basic_auth, connect_charger
from tests.test_ocpp16 import register

ROOT = Path(__file__).resolve().parent.parent
SIM = str(Path(sys.executable).parent / "chargepoint-sim")
SIMNET = str(Path(sys.executable).parent / "lightning-simnet")


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
    index = next(i for i, line in enumerate(lines) if marker in line and line.lstrip().startswith(".venv/"))
    text = lines[index].lstrip()
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


async def _simnet(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        SIMNET, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_a_walk_up_invoice_is_paid_with_the_readme_command(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    """Point 3: no command paid an invoice; `lightning-simnet pay --node car1 BOLT11` does, from the
    simnet that satwatt embeds (found in its data directory)."""
    command = _readme_command("lightning-simnet pay")
    assert command[:4] == [".venv/bin/lightning-simnet", "pay", "--node", "car1"]
    await register(api, "CP-1")
    simnet_dir = str(server.settings.data_dir / "simnet")
    async with (
        connect_charger(server.ocpp_url, "CP-1", "2.0.1"),
        httpx.AsyncClient(base_url=server.http_url) as anyone,
    ):
        created = await anyone.post("/api/v1/sessions", json={"charger_id": "CP-1", "connector_id": 1})
        walk_up = created.json()
        invoice = walk_up["invoice"]
        code, out, err = await _simnet(*command[1:-1], invoice["bolt11"], "--data-dir", simnet_dir)
        assert code == 0, err
        assert out.startswith(f"paid {invoice['amount_msat']} msat from car1"), out
        headers = {"Authorization": f"Bearer {walk_up['token']}"}
        async with asyncio.timeout(20):
            while True:
                session = (await anyone.get(f"/api/v1/sessions/{walk_up['id']}", headers=headers)).json()
                if session["paid_msat"]:
                    break
                await asyncio.sleep(0.05)
        assert session["paid_msat"] == invoice["amount_msat"]
    elsewhere = str(server.settings.data_dir / "nothing")
    code, _, err = await _simnet("pay", "--data-dir", elsewhere, invoice["bolt11"])
    assert code == 1 and "no simnet in" in err and "Traceback" not in err
    code, _, err = await _simnet("pay", "--data-dir", simnet_dir, "--node", "car9", invoice["bolt11"])
    assert code == 1 and "has no node 'car9'" in err


async def test_the_readme_payer_example_runs(server: RunningServer) -> None:
    """Point 3: the README's payer example imported nothing and named LndConfig from the wrong module."""
    block = re.search(r"```python\n(.*?)```", _readme(), re.S).group(1)  # type: ignore[union-attr]
    simnet = server.app.state.lightning.simnet
    block = (
        block.replace("satwatt-data/simnet", str(simnet.data_dir))
        .replace("127.0.0.1:10009", simnet.address)
        .replace("http://127.0.0.1:8180", server.http_url)
    )
    statements = compile(block, "README.md", "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT).body
    assert ast.unparse(statements[-1]).startswith("stats = await agent.run()")
    namespace: dict[str, Any] = {"token": "pt_unused"}
    exec(compile(ast.Module(statements[:-1], type_ignores=[]), "README.md", "exec"), namespace)
    agent = namespace["agent"]
    try:
        info = await agent.backend.get_info()  # the example's node really is car1 of satwatt's simnet
        assert info.pubkey == next(n.pubkey for n in simnet.node_files() if n.name == "car1")
    finally:
        await agent.backend.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_second_serve_says_the_simnet_port_is_taken_in_one_line(tmp_path: Path) -> None:
    """Point 4: a second `csms serve` (its own port and data directory) died with a 64-line traceback
    because the embedded simnet's port was taken."""
    simnet_port = str(_free_port())
    env = {"CSMS_PORT": "0", "CSMS_SIMNET_PORT": simnet_port}
    first = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "csms", "serve", cwd=ROOT,
        env={**os.environ, **env, "CSMS_DATA_DIR": str(tmp_path / "first")},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert first.stderr is not None
        async with asyncio.timeout(90):
            while b"Stop with Ctrl-C" not in (line := await first.stderr.readline()):
                assert line, "the first csms serve did not start"
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "csms", "serve", cwd=ROOT,
            env={**os.environ, **env, "CSMS_DATA_DIR": str(tmp_path / "second")},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(second.communicate(), 90)
    finally:
        first.terminate()
        await asyncio.wait_for(first.wait(), 30)
    output = (out + err).decode()
    assert second.returncode != 0
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "ERROR" in line or line.startswith("E")]
    assert any(
        f"satwatt cannot start: the embedded Lightning simnet cannot listen on 127.0.0.1:{simnet_port}"
        in line
        and "CSMS_SIMNET_PORT=0" in line
        for line in errors
    ), output
    assert len(errors) <= 2, output  # that line and uvicorn's "Application startup failed. Exiting."


async def test_lightning_simnet_help_names_each_default_once() -> None:
    """Point 9: `lightning-simnet --help` printed "default: satwatt car1 car2 wallet) (default: None)"."""
    code, out, _ = await _simnet("--help")
    assert code == 0
    text = " ".join(out.split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "default: satwatt car1 car2 wallet)" in text and "(default: 10009)" in text
    assert "lightning-simnet pay" in text


async def test_a_refused_charger_is_one_info_line_with_its_reason(
    server: RunningServer, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Point 5: every refused handshake added uvicorn's ERROR "ASGI callable returned without completing
    handshake"; a refusal is INFO, with its reason."""
    caplog.set_level(logging.INFO)
    await register(api, "CP-pw", "the-right-password-1")
    refusals = {
        "SIM-0001": ({}, 401, "SIM-0001: refused, unknown charger"),
        "CP-pw": (basic_auth("CP-pw", "wrong-password-22"), 401, "CP-pw: refused, wrong or missing password"),
        "x" * 49: ({}, 404, "refused, not a valid charge point id"),
    }
    for charger_id, (headers, status, reason) in refusals.items():
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(
                f"{server.ocpp_url}/{charger_id}",
                subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                additional_headers=headers,
                open_timeout=10,
            ):
                pass  # fmt: skip
        assert refused.value.response.status_code == status
        # logged before the refusal is sent, so it is there once the client has the answer
        (record,) = [r for r in caplog.records if reason in r.getMessage()]
        assert record.levelno == logging.INFO
    async with connect_charger(server.ocpp_url, "CP-pw", "1.6", "the-right-password-1"):
        pass  # the server's connection tasks of the refusals are long over once this one is through
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_rotated_api_key_works_at_once_and_the_old_one_stops(tmp_path: Path) -> None:
    """Point 6: `csms api-key --rotate` left the old key working until a restart, though its help said
    it stops working."""
    data_dir = tmp_path / "data"
    old_key_digest, old_key = load_or_create_api_key(data_dir, None)
    assert old_key is not None
    settings = Settings(data_dir=data_dir, simnet_port=0, simnet_cars=1)
    uv_server, task, port = await start_server(settings, old_key_digest)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def status(key: str) -> int:
                headers = {"Authorization": f"Bearer {key}"}
                return (await client.get("/api/v1/chargers", headers=headers)).status_code

            assert await status(old_key) == 200
            result = CliRunner().invoke(cli, ["api-key", "--rotate"], env={"CSMS_DATA_DIR": str(data_dir)})
            assert result.exit_code == 0, result.output
            new_key = result.stdout.strip().splitlines()[-1]
            assert new_key.startswith("sw_") and new_key != old_key
            assert await status(new_key) == 200
            assert await status(old_key) == 401
            assert "restart" not in result.output
    finally:
        uv_server.should_exit = True
        await asyncio.wait_for(task, 20)


async def _stream_state(client: httpx.AsyncClient) -> tuple[bool, str, str]:
    health = (await client.get("/healthz")).json()
    metrics = (await client.get("/metrics")).text
    up = re.search(r"^satwatt_invoice_stream_up (\d)$", metrics, re.M)
    assert up is not None
    return health["lightning"]["invoice_stream"], up.group(1), health["status"]


async def _until_stream(client: httpx.AsyncClient, wanted: bool, deadline_s: float = 30) -> None:
    async with asyncio.timeout(deadline_s):
        while True:
            subscribed, up, _ = await _stream_state(client)
            if subscribed is wanted and up == str(int(wanted)):
                return
            await asyncio.sleep(0.05)


async def test_the_invoice_stream_is_up_while_subscribed_also_when_idle(server: RunningServer) -> None:
    """Point 7: an idle satwatt (no invoice since its start) said invoice_stream: false and
    satwatt_invoice_stream_up 0 with status "ok", though it was subscribed to the node."""
    simnet = server.app.state.lightning.simnet
    async with server.api(key=None) as client:
        await _until_stream(client, True)  # no invoice was ever made on this node
        assert (await _stream_state(client))[2] == "ok"
        await simnet.begin_outage()  # the node goes away: the subscription drops
        try:
            await _until_stream(client, False)
        finally:
            await simnet.end_outage()
        await _until_stream(client, True)  # and is back, still without any invoice


async def test_frames_above_the_hard_cap_close_with_1009_and_are_logged(
    server: RunningServer, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Point 8: frames above CSMS_OCPP_MAX_MESSAGE_BYTES get a CALLERROR, but above the websocket's hard
    cap the connection was closed with 1009 and satwatt's log said nothing."""
    cap = websocket_frame_cap(server.settings)
    assert server.settings.ocpp_max_message_bytes < 100_000 < cap < 5_000_000
    await register(api, "CP-big")
    async with websockets.connect(
        f"{server.ocpp_url}/CP-big",
        subprotocols=["ocpp2.0.1"],
        max_size=None,  # type: ignore[list-item]
    ) as connection:
        await connection.send(json.dumps([2, "m1", "Heartbeat", {"pad": "x" * 100_000}]))
        answer = json.loads(await asyncio.wait_for(connection.recv(), 10))
        assert answer[:3] == [4, "m1", "FormatViolation"]  # the documented CALLERROR, connection open
        await connection.send(json.dumps([2, "m2", "Heartbeat", {"pad": "x" * 5_000_000}]))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    wanted = f"CP-big: connection closed with 1009: a frame exceeded the hard cap of {cap} bytes"
    async with asyncio.timeout(10):  # the server's connection task logs it as it ends
        while True:
            records = [r for r in caplog.records if wanted in r.getMessage()]
            if records:
                break
            await asyncio.sleep(0.02)
    assert records[0].levelno == logging.WARNING


async def test_a_bad_body_names_the_body_and_says_to_send_json(server: RunningServer) -> None:
    """Point 9: a malformed JSON body named "field": "27" (a character offset); a body without a
    content type did not say to send JSON."""
    async with server.api() as client:
        json_type = {"content-type": "application/json"}
        broken = b'{"id": "CP-1", "password": }'
        malformed = await client.post("/api/v1/chargers", content=broken, headers=json_type)
        assert malformed.status_code == 422
        assert malformed.json()["errors"] == [
            {"field": "(body)", "message": "not valid JSON: Expecting value at character 27"}
        ]
        cases: list[tuple[dict[str, str], str]] = [
            ({}, "no Content-Type"),
            ({"content-type": "text/plain"}, "Content-Type: text/plain"),
        ]
        for headers, sent in cases:
            untyped = await client.post("/api/v1/chargers", content=b'{"id": "CP-1"}', headers=headers)
            assert untyped.status_code == 422
            (error,) = untyped.json()["errors"]
            assert error["field"] == "(body)" and "Content-Type: application/json" in error["message"]
            assert sent in error["message"]
        empty = await client.post("/api/v1/chargers", headers=json_type)
        assert empty.json()["errors"] == [{"field": "(body)", "message": "a JSON body is required"}]
        wrong_type = await client.post("/api/v1/chargers", json={"id": 5})
        assert wrong_type.json()["errors"][0]["field"] == "id"  # real fields are still named


def test_every_command_body_in_the_readme_is_one_the_api_takes() -> None:
    """Point 9: remote_stop's body was not in the README; each command body shown there must validate."""
    bodies = re.findall(r"POST /api/v1/chargers/CP-1/commands (\{.*?\})`", _readme().replace("\n   ", " "))
    commands = {json.loads(body.replace('"<its id>"', '"s_1"'))["command"] for body in bodies}
    assert {"remote_start", "remote_stop"} <= commands
    adapter: TypeAdapter[Any] = TypeAdapter(CommandBody)
    for body in bodies:
        adapter.validate_python(json.loads(body.replace('"<its id>"', '"s_1"')))


def test_help_is_not_cut_at_80_columns() -> None:
    """Point 9: help texts were cut at 80 columns ("ws://127.0.0.1:8180…"): rich's option panels
    truncate words longer than their help column."""
    commands = [
        (cli, []),
        *((cli, [name, "--help"]) for name in ("serve", "migrate", "api-key", "openapi", "demo")),
        *((sim_cli, [name, "--help"]) for name in ("run", "load")),
    ]
    for app, args in commands:
        result = CliRunner().invoke(app, args or ["--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
        assert result.exit_code == 0, result.output
        assert "…" not in result.output, result.output
        assert max(len(line) for line in result.output.splitlines()) <= 80, result.output
    run_help = CliRunner().invoke(sim_cli, ["run", "--help"], env={"COLUMNS": "80"}).output
    assert "ws://127.0.0.1:8180/ocpp" in run_help


def test_the_demo_table_fits_in_80_columns() -> None:
    """Point 9: the demo's live table was cut at 80 columns (every cell ended in "…")."""
    out = io.StringIO()
    demo = Demo(DemoOptions(duration_s=600, chargers=10), Console(file=out, width=80, color_system=None))
    states = ["awaiting_payment", "awaiting_payment_final", "charging", "suspended", "ended"]
    for n in range(1, 11):
        stats = PayerStats()
        stats.invoices_paid, stats.invoices_refused = 240, n % 3
        agent = SimpleNamespace(stats=stats, mode=SimpleNamespace(stop_after_wh=50 if n == 2 else None))
        demo.visits.append(Visit(n, f"DEMO-{n}", "2.0.1", f"car{n}", "walk-up", agent, f"s{n}"))  # type: ignore[arg-type]
        demo.sessions.append(
            {
                "id": f"s{n}", "charger_id": f"DEMO-{n}", "protocol": "2.0.1", "state": states[n % 5],
                "power_w": 150_000, "energy_wh": 24_680, "billed_msat": 2_468_000, "paid_msat": 2_400_000,
                "credit_wh": 1250,
            }
        )  # fmt: skip
    demo.console.print(demo.render())
    text = out.getvalue()
    assert "…" not in text, text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    cells = ("DEMO-10", "car2*", "walk-up", "final bill", "suspended", "150.0", "24.680", "2468/2400")
    for cell in (*cells, "240/2"):
        assert cell in text, (cell, text)


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_the_docker_build_context_leaves_out_the_venv_but_not_what_the_image_copies() -> None:
    """Point 10: without a .dockerignore the 282 MB .venv (and .git, satwatt-data) went into the build
    context."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for heavy in (".venv", ".git", "satwatt-data"):
        assert heavy in patterns
    copied = [
        source
        for line in _dockerfile().splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    ]
    assert {"csms", "lightning", "migrations", "pyproject.toml", "constraints.txt"} <= set(copied)
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in patterns), source


def test_the_image_lets_cars_outside_pay_and_checks_the_port_it_serves() -> None:
    """Point 10: the simnet listened on 127.0.0.1 only (a car outside the container could not pay) and
    the HEALTHCHECK hard-coded port 8180."""
    dockerfile = _dockerfile()
    assert re.search(r"CSMS_SIMNET_HOST=0\.0\.0\.0", dockerfile)
    simnet_port = re.search(r"CSMS_SIMNET_PORT=(\d+)", dockerfile)
    assert simnet_port is not None
    assert simnet_port.group(1) in re.search(r"^EXPOSE (.*)$", dockerfile, re.M).group(1).split()  # type: ignore[union-attr]
    healthcheck = re.search(r"^HEALTHCHECK .*$", dockerfile, re.M)
    assert healthcheck is not None and "csms.healthcheck" in healthcheck.group(0)
    assert not re.search(r"\d{4,5}", healthcheck.group(0).split("CMD", 1)[1]), "a port in the health check"


async def _healthcheck(env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "csms.healthcheck", cwd=ROOT, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_the_health_check_follows_csms_port(server: RunningServer) -> None:
    """Point 10: `python -m csms.healthcheck` (the image's HEALTHCHECK) asks the port CSMS_PORT names."""
    code, out = await _healthcheck({"CSMS_HOST": "0.0.0.0", "CSMS_PORT": str(server.port)})
    assert code == 0, out
    code, out = await _healthcheck({"CSMS_HOST": "127.0.0.1", "CSMS_PORT": str(_free_port())})
    assert code == 1 and "unhealthy" in out


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


async def test_the_simnet_host_is_a_setting(server_settings: dict[str, Any]) -> None:
    """Point 10: CSMS_SIMNET_HOST=0.0.0.0 makes the embedded simnet listen on every address (127.0.0.2
    stands for "another address of this host": a socket bound to 127.0.0.1 alone refuses it)."""
    for host, from_elsewhere in (("127.0.0.1", False), ("0.0.0.0", True)):
        settings = Settings(**{**server_settings, "simnet_host": host})
        uv_server, task, _ = await start_server(settings, "key-" + host)
        try:
            simnet = uv_server.config.app.state.lightning.simnet
            assert simnet.host == host
            assert await asyncio.to_thread(_accepts, "127.0.0.1", simnet.port)
            assert await asyncio.to_thread(_accepts, "127.0.0.2", simnet.port) is from_elsewhere
        finally:
            uv_server.should_exit = True
            await asyncio.wait_for(task, 20)
    with pytest.raises(SettingsError, match="CSMS_SIMNET_HOST"):
        load_settings(simnet_host="")
