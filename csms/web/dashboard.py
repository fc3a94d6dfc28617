"""The operator dashboard: chargers, live sessions, invoices and cuts, today's totals and charts, the
Lightning node, and commands (remote stop, reset, unlock). The page is rendered on the server; its live
part is re-rendered every few seconds and pushed as an HTML fragment over server-sent events."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse

from csms.api.schemas import INT32_MAX
from csms.charging import commands as cmd
from csms.charging import control
from csms.web import operator_login
from csms.web.charts import line_chart
from csms.web.dashboard_data import DashboardData, since
from csms.web.pages import PAGE_HEADERS, TEMPLATES, form, render, sats, whole_number

log = logging.getLogger("csms.web.dashboard")
router = APIRouter(include_in_schema=False)
PUSH_EVERY_S = 2.0
COMMANDS = ("remote_stop", "reset", "unlock")
FAILURE_TEXT = {
    "not_connected": "the charger is not connected",
    "timeout": "the charger did not answer in time",
    "call_error": "the charger answered with an error",
}


def _data(request: Request) -> DashboardData:
    data: DashboardData | None = getattr(request.app.state, "dashboard", None)
    if data is None:
        data = request.app.state.dashboard = DashboardData(request.app)
    return data


async def live_html(request: Request, csrf: str) -> str:
    snapshot = await _data(request).get()
    return TEMPLATES.get_template("dashboard_live.html").render(
        s=snapshot,
        csrf=csrf,
        since=since,
        energy_chart=line_chart(
            snapshot.energy_series,
            label="Energy delivered today (kWh)",
            color="#2f81f7",
            fmt=lambda v: f"{v:,.3f} kWh",
            chart_id="energy-chart",
        ),
        revenue_chart=line_chart(
            snapshot.paid_series,
            label="Sats paid today",
            color="#1a7f37",
            fmt=lambda v: f"{sats(round(v * 1000))} sat",
            chart_id="revenue-chart",
        ),
    )


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(request: Request) -> HTMLResponse:
    login = operator_login.current(request)
    if login is None:
        return render(request, "login.html", error=None)
    return render(request, "dashboard.html", csrf=login.csrf, live=await live_html(request, login.csrf))


@router.post("/dashboard/login", response_class=HTMLResponse)
async def log_in(request: Request) -> Response:
    key = (await form(request)).get("key", "")
    if not key or not request.app.state.api_key.matches(key.strip()):
        log.warning(
            "dashboard: a login with a wrong operator key from %s", request.client and request.client.host
        )
        return render(request, "login.html", 401, error="That is not the operator key.")
    response = RedirectResponse("/dashboard", status_code=303)
    operator_login.log_in(request, response)
    return response


@router.post("/dashboard/logout")
async def log_out(request: Request) -> Response:
    csrf = (await form(request)).get("csrf", "")
    login = operator_login.current(request)
    response = RedirectResponse("/dashboard", status_code=303)
    if login is not None and operator_login.csrf_ok(login, csrf):
        operator_login.log_out(response)
    return response


@router.get("/dashboard/live")
async def live(request: Request) -> Response:
    """The live part of the page, re-rendered every few seconds (event ``live``: ``{"html": ...}``)."""
    login = operator_login.current(request)
    if login is None:
        return Response(status_code=401)

    async def stream() -> Any:
        yield "retry: 3000\n\n"
        while True:
            if operator_login.current(request) is None:  # expired meanwhile
                yield "event: logged_out\ndata: {}\n\n"
                return
            yield f"event: live\ndata: {json.dumps({'html': await live_html(request, login.csrf)})}\n\n"
            await asyncio.sleep(PUSH_EVERY_S)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={**PAGE_HEADERS, "X-Accel-Buffering": "no"}
    )


@router.post("/dashboard/commands")
async def command(request: Request) -> Response:
    """A command from the page: with the login cookie and its CSRF token (form field or header)."""
    fields = await form(request)
    command, csrf = fields.get("command", ""), fields.get("csrf", "")
    charger_id, connector_id = fields.get("charger_id", ""), fields.get("connector_id", "")
    session_id = fields.get("session_id", "")
    login = operator_login.current(request)
    if login is None:
        return JSONResponse({"ok": False, "message": "log in again"}, status_code=401)
    if not operator_login.csrf_ok(login, request.headers.get("x-csrf-token") or csrf):
        return JSONResponse({"ok": False, "message": "stale page: reload it"}, status_code=403)
    service, registry = request.app.state.service, request.app.state.registry
    try:
        if command == "remote_stop":
            result = await control.remote_stop(service, registry, session_id)
            what = f"remote stop of session {session_id}"
        elif command == "reset":
            result = await registry.execute(charger_id, cmd.Reset(False))
            what = f"reset of {charger_id}"
        elif command == "unlock" and (connector := whole_number(connector_id, INT32_MAX)):
            result = await registry.execute(charger_id, cmd.UnlockConnector(connector))
            what = f"unlock of {charger_id} connector {connector_id}"
        else:
            return JSONResponse({"ok": False, "message": f"unknown command {command!r}"}, status_code=422)
    except control.SessionNotFound:
        return _answer(request, False, f"no session {session_id}", 404)
    except control.SessionNotRunning:
        return _answer(request, False, f"session {session_id} is not running", 409)
    except cmd.CommandFailed as exc:
        return _answer(request, False, f"{command}: {FAILURE_TEXT.get(exc.reason, str(exc))}", 409)
    log.info("dashboard: %s: %s", what, result.status)
    return _answer(request, result.status == "Accepted", f"{what}: {result.status}", 200)


def _answer(request: Request, ok: bool, message: str, status: int) -> Response:
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"ok": ok, "message": message}, status_code=status)
    return render(request, "command_done.html", status, ok=ok, message=message)
