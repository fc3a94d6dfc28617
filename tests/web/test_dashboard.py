"""The operator dashboard over HTTP: the login (key -> HttpOnly SameSite=Strict cookie), what it shows,
its live stream, and commands guarded by the login's CSRF token."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import httpx

from csms.security import ApiKey
from tests.conftest import RunningServer
from tests.demo.conftest import car, until


async def log_in(client: httpx.AsyncClient, key: str) -> str:
    """Log in through the form; returns the page's CSRF token."""
    response = await client.post("/dashboard/login", data={"key": key})
    assert response.status_code == 303 and response.headers["location"] == "/dashboard"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("sw_operator=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/dashboard" in cookie and key not in cookie
    page = await client.get("/dashboard")
    assert page.status_code == 200 and 'id="live"' in page.text
    match = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', page.text)
    assert match is not None
    return match.group(1)


async def watch_until_charging(client: httpx.AsyncClient, session_id: str) -> str:
    """Follow the dashboard's live stream until it shows the session charging with its Stop button."""
    seen = ""
    async with asyncio.timeout(30), client.stream("GET", "/dashboard/live") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                seen = json.loads(line[6:])["html"]
                row = re.search(rf'<tr data-session="{session_id}">(.*?)</tr>', seen, re.S)
                if row and "state-charging" in row.group(1) and "Stop" in row.group(1):
                    return seen
    raise AssertionError("the stream ended")


async def test_login_is_required_and_a_wrong_key_is_refused(
    server: RunningServer, browser_client: httpx.AsyncClient
) -> None:
    page = await browser_client.get("/dashboard")
    assert page.status_code == 200 and 'id="key"' in page.text and 'id="live"' not in page.text
    wrong = await browser_client.post("/dashboard/login", data={"key": "sw_not-the-key"})
    assert wrong.status_code == 401 and "That is not the operator key." in wrong.text
    assert "set-cookie" not in wrong.headers
    assert (await browser_client.get("/dashboard/live")).status_code == 401
    command = await browser_client.post("/dashboard/commands", data={"command": "reset", "charger_id": "X"})
    assert command.status_code == 401
    forged = httpx.Cookies({"sw_operator": "1.abc.def"})
    async with httpx.AsyncClient(base_url=server.http_url, cookies=forged) as other:
        assert 'id="key"' in (await other.get("/dashboard")).text


async def test_dashboard_shows_chargers_sessions_and_totals_and_stops_a_session(
    server: RunningServer, browser_client: httpx.AsyncClient, stations: Callable[..., Any]
) -> None:
    station = await stations("DASH-1", "2.0.1")
    await stations("DASH-2", "1.6")
    await station.cp.plug_in(1, ev="sedan", soc=0.3)
    csrf = await log_in(browser_client, server.api_key)
    # a walk-up on DASH-1, its car paying every invoice from a simnet node
    async with server.api(None) as anonymous:
        created = (
            await anonymous.post("/api/v1/sessions", json={"charger_id": "DASH-1", "connector_id": 1})
        ).json()
    find = {"session_token": created["token"], "session_id": created["id"]}
    async with car(server, "car1", **find) as (agent, _):
        await station.cp.wait_status(1, "Charging", timeout_s=15)
        await until(agent, lambda: agent.stats.invoices_paid >= 2, 20, "two paid invoices")
        seen = await watch_until_charging(browser_client, created["id"])
        assert re.search(r'data-charger="DASH-1".*?dot on', seen, re.S)
        assert re.search(r'data-charger="DASH-2".*?<td>1.6</td>', seen, re.S)
        assert re.search(r'id="total-paid">[1-9]', seen) and 'id="revenue-chart"' in seen
        assert "up</b>" in seen  # the simnet node
        # a command without the CSRF token is refused; with it, the session is stopped
        body = {"command": "remote_stop", "session_id": created["id"]}
        refused = await browser_client.post(
            "/dashboard/commands", data=body, headers={"Accept": "application/json"}
        )
        assert refused.status_code == 403
        done = await browser_client.post(
            "/dashboard/commands", data=body, headers={"X-CSRF-Token": csrf, "Accept": "application/json"}
        )
        assert done.status_code == 200 and done.json() == {
            "ok": True,
            "message": f"remote stop of session {created['id']}: Accepted",
        }
        await station.cp.wait_for(lambda: station.cp.transaction(1) is None, 15)
        unknown = await browser_client.post(
            "/dashboard/commands",
            data={"command": "unlock", "charger_id": "NOPE", "connector_id": "1", "csrf": csrf},
        )
        assert unknown.status_code == 409 and "not connected" in unknown.text
    # logging out ends the login
    out = await browser_client.post("/dashboard/logout", data={"csrf": csrf})
    assert out.status_code == 303 and 'sw_operator=""' in out.headers["set-cookie"]


async def test_a_new_operator_key_ends_the_logins_made_with_the_old_one(
    server: RunningServer, browser_client: httpx.AsyncClient
) -> None:
    await log_in(browser_client, server.api_key)
    old_key = server.app.state.api_key
    server.app.state.api_key = ApiKey.from_plain("sw_the-new-key")  # as `csms api-key --rotate` does
    try:
        page = await browser_client.get("/dashboard")
        assert 'id="key"' in page.text and 'id="live"' not in page.text
        assert (await browser_client.get("/dashboard/live")).status_code == 401
    finally:
        server.app.state.api_key = old_key
