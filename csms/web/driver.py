"""The driver's pages: the connector page behind a QR sticker, and the session page.

``/c/{charger}/{connector}`` shows the charger, the connector's state and the price, with a start button
that opens a walk-up session (as ``POST /api/v1/sessions`` does). The session token then lives in an
HttpOnly cookie scoped to the session's own path (``/s/{id}``): it never appears in a URL, a page or a
log, and a browser holding several sessions keeps one cookie per session. The session page follows the
session's event stream (the same log as ``/api/v1/sessions/{id}/events``) through ``/s/{id}/events``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from sqlalchemy import func, select

from csms import lnurl
from csms.api import lnurl as lnurl_api
from csms.api import sessions as sessions_api
from csms.api.access import Principal, digest
from csms.api.problems import Problem
from csms.api.schemas import CHARGER_ID_PATTERN, INT32_MAX, INT64_MAX
from csms.charging.service import ChargingService
from csms.charging.session_events import LoggedEvent, SessionEventLog
from csms.db.models import (
    Charger,
    ChargingSession,
    Connector,
    LightningInvoice,
    MeterSample,
    SessionEvent,
    Settlement,
)
from csms.ocpp.registry import ConnectionRegistry
from csms.settlement.engine import charger_tariff
from csms.settlement.refunds import refunded_msat
from csms.settlement.tariff import Tariff, deposit_amount, prepay_bounds, price_at
from csms.web import qr
from csms.web.pages import PAGE_HEADERS, form, problem_page, render, whole_number

router = APIRouter(include_in_schema=False)
COOKIE = "sw_session"
COOKIE_MAX_AGE_S = 7 * 24 * 3600
MAX_CONNECTOR = 1000
CHART_POINTS = 400
_CHARGER_ID = re.compile(CHARGER_ID_PATTERN)
STALE_FORM = "The form is stale; reload the page and try again."
_TOKEN = re.compile(r"^st_[A-Za-z0-9_-]{16,64}$")


def _service(request: Request) -> ChargingService:
    return request.app.state.service  # type: ignore[no-any-return]


def _registry(request: Request) -> ConnectionRegistry:
    return request.app.state.registry  # type: ignore[no-any-return]


def csrf_token(session_token: str) -> str:
    """The form token of a driver's session page: derived from the session token, so a page that does
    not hold the token (another site) cannot make it."""
    return hmac.new(b"satwatt-driver-form", session_token.encode(), hashlib.sha256).hexdigest()[:32]


def _connector_id(text: str) -> int | None:
    number = whole_number(text, MAX_CONNECTOR)
    return number if number else None


# ------------------------------------------------------------------------------ the connector page
async def _connector(request: Request, charger_id: str, connector_text: str) -> dict[str, Any] | HTMLResponse:
    """What the connector page shows, or the problem page when the address names no connector."""
    connector_id = _connector_id(connector_text)
    if not _CHARGER_ID.match(charger_id) or connector_id is None:
        return problem_page(request, 404, "No such charger", "This address names no charger and connector.")
    service = _service(request)
    async with service.db() as db:
        charger = await db.get(Charger, charger_id)
        connectors = list(
            await db.scalars(
                select(Connector).where(Connector.charger_id == charger_id, Connector.connector_id >= 1)
            )
        )
        busy = await db.scalar(
            select(ChargingSession.id).where(
                ChargingSession.charger_id == charger_id,
                ChargingSession.connector_id == connector_id,
                ChargingSession.ended_at.is_(None),
                ChargingSession.state != "ended",
            )
        )
        _, tariff = await charger_tariff(db, charger_id)
    if charger is None or not charger.registered:
        return problem_page(request, 404, "No such charger", f"There is no charger {charger_id} here.")
    connector = next((c for c in connectors if c.connector_id == connector_id), None)
    if connector is None and connectors:
        known = ", ".join(str(c.connector_id) for c in sorted(connectors, key=lambda c: c.connector_id))
        return problem_page(
            request,
            404,
            "No such connector",
            f"Charger {charger_id} has no connector {connector_id} (its connectors: {known}).",
        )
    where = await _registry(request).whereabouts(charger_id)  # in cluster mode: any process
    online = where is not None and where.connected
    if not online:
        blocked = "The charger is offline; it cannot start a charge now."
    elif busy is not None:
        blocked = "This connector is in use; try again when it is free."
    elif connector is not None and connector.status in ("Faulted", "Unavailable"):
        blocked = f"This connector is {connector.status.lower()}."
    else:
        blocked = None
    return {
        "charger": charger,
        "connector_id": connector_id,
        "connector": connector,
        "online": online,
        "price_msat_per_kwh": price_at(tariff, datetime.now(UTC)),
        "deposit_msat": deposit_amount(tariff, datetime.now(UTC)) if tariff.deposit_msat else 0,
        "tariff": tariff,
        "blocked": blocked,
        "error": None,
    }


@router.get("/c/{charger_id}/{connector_id}", response_class=HTMLResponse)
async def connector_page(request: Request, charger_id: str, connector_id: str) -> HTMLResponse:
    context = await _connector(request, charger_id, connector_id)
    if isinstance(context, HTMLResponse):
        return context
    if context["blocked"] is None:  # LNURL-pay from any phone wallet (csms.api.lnurl)
        url = lnurl_api.connector_url(request, charger_id, context["connector_id"])
        least, most = prepay_bounds(context["tariff"], datetime.now(UTC))
        context["pay_lnurl"] = {
            "lnurl": lnurl.encode(url),
            "lud17": lnurl.lud17(url, "p"),
            "least": least,
            "most": most,
        }
    return render(request, "connector.html", **context)


@router.get("/c/{charger_id}/{connector_id}/lnurl.svg")
async def connector_lnurl_qr(request: Request, charger_id: str, connector_id: str) -> Response:
    """The sticker's LNURL-pay as a QR code (``lightning:LNURL1...``)."""
    number = _connector_id(connector_id)
    if not _CHARGER_ID.match(charger_id) or number is None:
        return problem_page(request, 404, "No such charger", "This address names no charger and connector.")
    url = lnurl_api.connector_url(request, charger_id, number)
    image = qr.svg(lnurl.lightning_uri(url), title=f"LNURL-pay, charger {charger_id} connector {number}")
    return Response(image, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=3600"})


def _lnurls(request: Request, session: ChargingSession, settlement: Settlement) -> dict[str, Any]:
    """A prepaid session's LNURLs while it runs (stop and withdraw: the sticker's with k1; top up)."""
    engine = getattr(request.app.state, "settlement", None)
    state = settlement.state
    if engine is None or not state.get("prepaid") or settlement.closed or session.ended_at is not None:
        return {}
    k1 = engine.withdraw_k1(session.id)
    stop = lnurl_api.connector_url(request, session.charger_id, session.connector_id or 1, k1)
    top_up = lnurl_api.topup_url(request, session.id, k1)
    least, most = prepay_bounds(Tariff.from_dict(settlement.tariff), datetime.now(UTC))
    return {
        "stop": {"lnurl": lnurl.encode(stop), "qr": f"/s/{session.id}/lnurl/stop.svg"},
        "topup": {
            "lnurl": lnurl.encode(top_up),
            "qr": f"/s/{session.id}/lnurl/topup.svg",
            # the plain-invoice form asks for whole sats within the tariff's bounds
            "least_sat": -(-least // 1000),
            "most_sat": most // 1000,
        },
    }


@router.get("/s/{session_id}/lnurl/{which}.svg")
async def session_lnurl_qr(request: Request, session_id: str, which: str) -> Response:
    """QR codes of a session's LNURLs: ``stop`` and ``topup`` (prepaid, running), ``withdraw`` (receipt)."""
    try:
        session, settlement, _ = await _driver_session(request, session_id)
    except NotYours:
        return _not_yours(request, session_id)
    links = _lnurls(request, session, settlement)
    if which == "withdraw" and settlement.closed:
        links = {
            "withdraw": _withdraw_link(request, session, await session_out(request, session, settlement))
        }
    link = links.get(which)
    if not link:
        return problem_page(request, 404, "No such code", "This session has no such link now.")
    image = qr.svg("lightning:" + link["lnurl"], title=f"LNURL {which}")
    return Response(image, media_type="image/svg+xml", headers={"Cache-Control": "private, no-store"})


async def session_out(
    request: Request, session: ChargingSession, settlement: Settlement
) -> sessions_api.SessionOut:
    """The session as the API shows it, with what was refunded (read once per request)."""
    async with _service(request).db() as db:
        refunded = (await refunded_msat(db, [session.number])).get(session.number, 0)
    return sessions_api.session_out(session, settlement, refunded)


def _withdraw_link(
    request: Request, session: ChargingSession, out: sessions_api.SessionOut
) -> dict[str, Any]:
    """The receipt's LNURL-withdraw for what is refundable (any payment mode), or nothing."""
    engine = getattr(request.app.state, "settlement", None)
    if engine is None or not out.refundable_msat:
        return {}
    url = lnurl_api.withdraw_url(request, session.id, engine.withdraw_k1(session.id))
    return {
        "lnurl": lnurl.encode(url),
        "amount_msat": out.refundable_msat,
        "qr": f"/s/{session.id}/lnurl/withdraw.svg",
    }


@router.post("/c/{charger_id}/{connector_id}", response_class=HTMLResponse)
async def start_walk_up(request: Request, charger_id: str, connector_id: str) -> Response:
    """The start button: a walk-up session (as ``POST /api/v1/sessions``), then its page."""
    context = await _connector(request, charger_id, connector_id)
    if isinstance(context, HTMLResponse):
        return context
    body = sessions_api.WalkUpRequest(charger_id=charger_id, connector_id=context["connector_id"])
    try:
        created = await sessions_api.start_session(
            body, request, _service(request), _registry(request), Response()
        )
    except Problem as exc:
        again = await _connector(request, charger_id, connector_id)
        if isinstance(again, HTMLResponse):
            return again
        return render(request, "connector.html", exc.status, **{**again, "error": exc.detail or exc.title})
    response = RedirectResponse(f"/s/{created.id}", status_code=303)
    _keep_token(request, response, created.id, created.token)
    return response


def _keep_token(request: Request, response: Response, session_id: str, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=COOKIE_MAX_AGE_S,
        path=f"/s/{session_id}",
        httponly=True,
        samesite="lax",  # sent when the driver comes back from a link; forms carry a token as well
        secure=request.url.scheme == "https",
    )


# ------------------------------------------------------------------------------ the session page
class NotYours(Exception):
    """No valid session token for this session in the request."""


async def _opened_by(
    request: Request, session_id: str, token: str | None
) -> tuple[ChargingSession, Settlement] | None:
    """The session (and its settlement) that ``token`` opens, or None."""
    if not token or not _TOKEN.match(token) or len(session_id) > 64:
        return None
    async with _service(request).db() as db:
        found = (
            await db.execute(
                select(ChargingSession, Settlement)
                .join(Settlement, Settlement.session_number == ChargingSession.number)
                .where(Settlement.token_hash == digest(token), ChargingSession.id == session_id)
            )
        ).first()
    return None if found is None else (found[0], found[1])


async def _driver_session(request: Request, session_id: str) -> tuple[ChargingSession, Settlement, str]:
    """The session whose token the request's cookie holds (else NotYours)."""
    token = request.cookies.get(COOKIE)
    found = await _opened_by(request, session_id, token)
    if found is None or token is None:
        raise NotYours
    return found[0], found[1], token


def _not_yours(request: Request, session_id: str) -> HTMLResponse:
    return render(
        request,
        "session_token.html",
        403,
        session_id=session_id if len(session_id) <= 64 else "",
        error="This browser holds no token for this session." if request.method == "GET" else None,
    )


async def current_invoice(service: ChargingService, session_number: int) -> LightningInvoice | None:
    """The invoice the driver should pay now: the newest open one."""
    async with service.db() as db:
        return await db.scalar(
            select(LightningInvoice)
            .where(
                LightningInvoice.session_number == session_number,
                LightningInvoice.status == "open",
                LightningInvoice.bolt11.is_not(None),
            )
            .order_by(LightningInvoice.seq.desc())
            .limit(1)
        )


def invoice_json(session_id: str, row: LightningInvoice | None) -> dict[str, Any] | None:
    if row is None or row.bolt11 is None:
        return None
    return {
        "key": row.key,
        "kind": row.kind,
        "bolt11": row.bolt11,
        "amount_msat": row.amount_msat,
        "energy_wh": row.energy_wh,
        "fee_msat": row.fee_msat,
        "qr": f"/s/{session_id}/invoice/{row.seq}.svg",
    }


async def session_state(
    request: Request, session: ChargingSession, settlement: Settlement, out: sessions_api.SessionOut
) -> dict[str, Any]:
    """What the session page shows, as JSON (the page refreshes it after each event)."""
    invoice = await current_invoice(_service(request), session.number)
    if invoice is not None and invoice.kind == "deposit" and out.state != "awaiting_payment":
        invoice = None  # the deposit is held (its HTLC accepted): nothing to pay until the final invoice
    return {
        "id": out.id,
        "state": out.state,
        "power_w": out.power_w if out.state in ("charging", "suspended") else 0,
        "energy_wh": out.energy_wh,
        "billed_msat": out.billed_msat,
        "paid_msat": out.paid_msat,
        "cost_msat": out.cost_msat,
        "credit_wh": out.credit_wh,
        "refundable_msat": out.refundable_msat,
        "refunded_msat": out.refunded_msat,
        "unpaid_msat": out.unpaid_msat,
        "outcome": out.outcome,
        "closed": settlement.closed,
        "invoice": invoice_json(session.id, invoice),
    }


@router.get("/s/{session_id}", response_class=HTMLResponse)
async def session_page(request: Request, session_id: str) -> HTMLResponse:
    service = _service(request)
    # The page follows the events after the newest one read here, so it is read before the state the
    # page shows: an event committed in between (say, the close that follows the stop button) then
    # still reaches the page, which refreshes. Read the other way round, a close landing between the
    # two reads left the page showing "charging" with nothing more to come.
    async with service.db() as db:
        last_event = await db.scalar(
            select(func.max(SessionEvent.id))
            .join(ChargingSession, ChargingSession.number == SessionEvent.session_number)
            .where(ChargingSession.id == session_id)
        )
    try:
        session, settlement, token = await _driver_session(request, session_id)
    except NotYours:
        return _not_yours(request, session_id)
    out = await session_out(request, session, settlement)
    state = await session_state(request, session, settlement, out)
    async with service.db() as db:
        samples = list(
            await db.scalars(
                select(MeterSample)
                .where(MeterSample.session_number == session.number, MeterSample.anomaly.is_(None))
                .order_by(MeterSample.timestamp.desc(), MeterSample.id.desc())
                .limit(CHART_POINTS)
            )
        )
    series = [
        {"t": p.timestamp.isoformat(), "e": p.energy_wh, "p": p.power_w}
        for p in (sessions_api.meter_point(session, s) for s in reversed(samples))
        if p.energy_wh is not None and not p.after_end
    ]
    receipt = await receipt_context(request, session, settlement, out) if settlement.closed else None
    return render(
        request,
        "session.html",
        session=session,
        settlement=settlement,
        tariff=Tariff.from_dict(settlement.tariff),
        state=state,
        boot=json.dumps({"state": state, "series": series, "after": last_event or 0}),
        csrf=csrf_token(token),
        receipt=receipt,
        lnurls=_lnurls(request, session, settlement),
    )


@router.post("/s/{session_id}/token", response_class=HTMLResponse)
async def open_with_token(request: Request, session_id: str) -> Response:
    """A driver who has the session token (from the API or another device) opens the page with it."""
    response = RedirectResponse(f"/s/{session_id}", status_code=303)
    token = (await form(request)).get("token", "").strip()
    if await _opened_by(request, session_id, token) is not None:
        _keep_token(request, response, session_id, token)
        return response
    return render(
        request,
        "session_token.html",
        403,
        session_id=session_id if len(session_id) <= 64 else "",
        error="That token does not open this session.",
    )


@router.get("/s/{session_id}/open", response_class=HTMLResponse)
async def open_with_k1(request: Request, session_id: str, k1: str = "") -> Response:
    """The success action of an LNURL-pay prepayment links here: its ``k1`` is the session's token
    (``st_`` + k1), kept in the session's cookie; the page is then shown without it in the URL."""
    token = "st_" + k1
    if await _opened_by(request, session_id, token) is not None:
        response = RedirectResponse(f"/s/{session_id}", status_code=303)
        _keep_token(request, response, session_id, token)
        return response
    return _not_yours(request, session_id)


@router.get("/s/{session_id}/state")
async def state_json(request: Request, session_id: str) -> JSONResponse:
    try:
        session, settlement, _ = await _driver_session(request, session_id)
    except NotYours:
        return JSONResponse({"title": "Forbidden"}, status_code=403, headers={"Cache-Control": "no-store"})
    return JSONResponse(
        await session_state(request, session, settlement, await session_out(request, session, settlement)),
        headers={"Cache-Control": "no-store"},
    )


@router.get("/s/{session_id}/invoice/{seq}.svg")
async def invoice_qr(request: Request, session_id: str, seq: str) -> Response:
    try:
        session, _, _ = await _driver_session(request, session_id)
    except NotYours:
        return Response(status_code=403)
    async with _service(request).db() as db:
        number = whole_number(seq, INT32_MAX)
        row = (
            await db.scalar(
                select(LightningInvoice).where(
                    LightningInvoice.session_number == session.number, LightningInvoice.seq == number
                )
            )
            if number is not None
            else None
        )
    if row is None or row.bolt11 is None:
        return Response(status_code=404)
    image = qr.svg(qr.lightning_uri(row.bolt11), title=f"Lightning invoice, {row.amount_msat // 1000} sat")
    return Response(image, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=3600"})


async def receipt_context(
    request: Request, session: ChargingSession, settlement: Settlement, out: sessions_api.SessionOut
) -> dict[str, Any]:
    async with _service(request).db() as db:
        invoices = list(
            await db.scalars(
                select(LightningInvoice)
                .where(LightningInvoice.session_number == session.number)
                .order_by(LightningInvoice.seq)
            )
        )
    return {
        "session": out,
        "invoices": invoices,
        "bill": settlement.bill or {},
        "withdraw": _withdraw_link(request, session, out),
    }


@router.get("/s/{session_id}/receipt", response_class=HTMLResponse)
async def receipt(request: Request, session_id: str) -> HTMLResponse:
    """The receipt (a fragment the session page inserts when the session closes)."""
    try:
        session, settlement, _ = await _driver_session(request, session_id)
    except NotYours:
        return _not_yours(request, session_id)
    context = await receipt_context(
        request, session, settlement, await session_out(request, session, settlement)
    )
    return render(request, "receipt.html", receipt=context)


@router.post("/s/{session_id}/stop")
async def stop(request: Request, session_id: str) -> Response:
    try:
        session, _settlement, token = await _driver_session(request, session_id)
    except NotYours:
        return _not_yours(request, session_id)
    if not hmac.compare_digest((await form(request)).get("csrf", ""), csrf_token(token)):
        return problem_page(request, 403, "Stop refused", STALE_FORM)
    if session.ended_at is None:
        try:
            await sessions_api.stop_session(
                session.id,
                request,
                _service(request),
                _registry(request),
                Principal("session", session_number=session.number),
            )
        except Problem as exc:
            if exc.status != 409:  # 409: it ended meanwhile
                return problem_page(request, exc.status, "The charger did not stop", exc.detail or exc.title)
    return RedirectResponse(f"/s/{session_id}", status_code=303)


@router.post("/s/{session_id}/topup")
async def top_up(request: Request, session_id: str) -> Response:
    """A plain invoice topping up a running prepaid session (for a wallet without LNURL); the session
    page then shows it as the invoice to pay."""
    try:
        session, settlement, token = await _driver_session(request, session_id)
    except NotYours:
        return _not_yours(request, session_id)
    fields = await form(request)
    if not hmac.compare_digest(fields.get("csrf", ""), csrf_token(token)):
        return problem_page(request, 403, "Top-up refused", STALE_FORM)
    sat = whole_number(fields.get("sat", "").strip(), INT64_MAX // 1000)
    if not sat:
        return problem_page(request, 422, "Top-up refused", "Enter the top-up as a whole number of sats.")
    try:
        await sessions_api.top_up(request, _registry(request), session, settlement, sat * 1000)
    except Problem as exc:
        return problem_page(request, exc.status, "Top-up refused", exc.detail or exc.title)
    return RedirectResponse(f"/s/{session_id}", status_code=303)


# ------------------------------------------------------------------------------ the event stream
def sse(event: LoggedEvent, session_id: str) -> str:
    data = dict(event.data)
    data.setdefault("at", event.created_at.isoformat())
    data["session_id"] = session_id
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(data)}\n\n"


@router.get("/s/{session_id}/events")
async def events(
    request: Request,
    session_id: str,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    after: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> Response:
    """The session's events for the page's EventSource (authenticated by the session's cookie). The
    stream ends with ``closed``, or, when the session closed with change to take back, with the
    ``refunded`` that follows the withdraw (so the receipt on the screen shows it)."""
    try:
        session, _, _ = await _driver_session(request, session_id)
    except NotYours:
        return Response(status_code=403)
    resumed = whole_number(last_event_id, INT64_MAX)
    start = resumed if resumed is not None else after
    log: SessionEventLog = request.app.state.events

    async def stream() -> Any:
        yield "retry: 2000\n\n"
        async for event in log.follow(session.number, start):
            if event is None:
                yield ": keep-alive\n\n"
                continue
            yield sse(event, session.id)
            if event.kind == "refunded" or (event.kind == "closed" and not event.data.get("refundable_msat")):
                return

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={**PAGE_HEADERS, "X-Accel-Buffering": "no"},
    )
