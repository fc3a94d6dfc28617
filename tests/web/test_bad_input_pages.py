"""Bad input to the pages gets a clear page or HTTP problem, never a 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import RunningServer
from tests.web.test_dashboard import log_in


async def test_driver_routes_answer_bad_input_clearly(
    server: RunningServer, browser_client: httpx.AsyncClient, stations: Callable[..., Any]
) -> None:
    await stations("BAD-1", "1.6")
    started = await browser_client.post("/c/BAD-1/1")
    path = started.headers["location"]
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("GET", "/c/" + "A" * 2000 + "/1", {}, 404),
        ("GET", "/c/BAD-1/99999999999999999999", {}, 404),
        ("POST", "/c/BAD-1/-1", {}, 404),
        ("GET", "/c/BAD-1/\u00b2", {}, 404),  # a digit to str.isdigit, not to int
        ("POST", "/c/BAD-1/\u0661", {}, 404),  # an Arabic-Indic one
        ("GET", "/s/" + "x" * 300, {}, 403),
        ("GET", "/s/nope/state", {}, 403),
        ("GET", "/s/nope/receipt", {}, 403),
        ("GET", "/s/nope/invoice/1.svg", {}, 403),
        ("GET", f"{path}/invoice/abc.svg", {}, 404),
        ("GET", f"{path}/invoice/\u00b2.svg", {}, 404),
        ("GET", f"{path}/invoice/99.svg", {}, 404),
        ("GET", f"{path}/invoice/{'9' * 40}.svg", {}, 404),
        ("GET", f"{path}/events?after=-1", {}, 422),
        ("GET", f"{path}/events?after=x", {}, 422),
        ("POST", f"{path}/stop", {"content": b"\xff\xfe=\x00"}, 403),
        ("POST", f"{path}/stop", {"content": b"csrf=" + b"a" * 10_000}, 403),
        ("POST", f"{path}/token", {"data": {"token": "x" * 5000}}, 403),
        ("POST", "/s/nope/token", {"data": {"token": "st_" + "a" * 30}}, 403),
    ]
    for method, url, extra, status in cases:
        response = await browser_client.request(method, url, **extra)
        assert response.status_code == status, (method, url[:80], response.status_code, response.text[:200])
    # a cookie that is not a token at all
    async with httpx.AsyncClient(base_url=server.http_url, cookies={"sw_session": "st_..;;"}) as odd:
        assert (await odd.get(path)).status_code == 403
    # a garbled Last-Event-ID is ignored (the stream starts from the beginning)
    async with browser_client.stream("GET", f"{path}/events", headers={"Last-Event-ID": "nope"}) as stream:
        assert stream.status_code == 200
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                assert line == "event: invoice"
                break


async def test_dashboard_commands_answer_bad_input_clearly(
    server: RunningServer, browser_client: httpx.AsyncClient, stations: Callable[..., Any]
) -> None:
    await stations("BAD-2", "2.0.1")
    csrf = await log_in(browser_client, server.api_key)
    headers = {"X-CSRF-Token": csrf, "Accept": "application/json"}
    cases = [
        ({"command": "explode"}, 422, "unknown command 'explode'"),
        ({"command": "unlock", "charger_id": "BAD-2", "connector_id": "x"}, 422, "unknown command"),
        ({"command": "unlock", "charger_id": "BAD-2", "connector_id": "\u00b2"}, 422, "unknown command"),
        ({"command": "unlock", "charger_id": "BAD-2", "connector_id": "0"}, 422, "unknown command"),
        ({"command": "remote_stop", "session_id": "nope"}, 404, "no session nope"),
        ({"command": "reset", "charger_id": "NOPE"}, 409, "not connected"),
        ({}, 422, "unknown command ''"),
    ]
    for data, status, text in cases:
        response = await browser_client.post("/dashboard/commands", data=data, headers=headers)
        assert response.status_code == status and text in response.json()["message"], (data, response.text)
    garbled = await browser_client.post("/dashboard/commands", content=b"\xff" * 9000, headers=headers)
    assert garbled.status_code == 422
    huge_login = await browser_client.post("/dashboard/login", content=b"key=" + b"k" * 10_000)
    assert huge_login.status_code == 401


async def test_no_session_is_started_on_a_connector_the_charger_does_not_have(
    browser_client: httpx.AsyncClient, api: httpx.AsyncClient, stations: Callable[..., Any]
) -> None:
    await stations("BAD-3", "2.0.1")
    refused = await browser_client.post("/c/BAD-3/2")
    assert refused.status_code == 404 and "has no connector 2" in refused.text
    assert (await api.get("/api/v1/sessions", params={"charger_id": "BAD-3"})).json() == []
