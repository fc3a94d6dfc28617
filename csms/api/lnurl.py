"""LNURL endpoints: paying from any phone wallet, and taking back the change.

* ``GET /lnurlp/{charger}/{connector}`` (the sticker's LNURL; a contract: keep this path): while the
  connector is free, a LUD-06 ``payRequest`` for a prepayment between the tariff's ``prepay_min_msat``
  and ``prepay_max_msat``; its callback's invoice carries the metadata's description hash, and once it is
  paid the charger is started. The LUD-09 success action links to the session page, with the session's
  secret ``k1``. While that prepaid session runs, the same LNURL with ``?k1=`` answers a LUD-03
  ``withdrawRequest`` (anyone else: an LNURL error): it stops the charge and offers what was not used.
* ``GET /lnurlw/{session}?k1=`` (the receipt's withdraw QR, any payment mode): the refundable amount.
* ``GET /lnurl/topup/{session}?k1=``: another prepayment for a running prepaid session (as the session
  page's and the API's plain-invoice top-up, :func:`csms.api.sessions.top_up`; in cluster mode the
  charger's owner issues the invoice).

Every refusal is LNURL's ``{"status": "ERROR", "reason": ...}`` (HTTP 200, as wallets expect) and moves
nothing. Amounts are integer msat.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from csms import lnurl
from csms.api import sessions as sessions_api
from csms.api.problems import Problem
from csms.api.schemas import CHARGER_ID_PATTERN
from csms.charging import commands as cmd
from csms.db.models import Charger, ChargingSession, LightningInvoice, Settlement
from csms.settlement.engine import SettlementEngine, charger_tariff
from csms.settlement.refunds import RefundDesk, WithdrawRefused
from csms.settlement.session import SessionSettlement, record_transaction_ended
from csms.settlement.tariff import Tariff, prepay_bounds, prepay_refusal, price_at

router = APIRouter(tags=["lnurl"])
_CHARGER_ID = re.compile(CHARGER_ID_PATTERN)
_K1 = re.compile(r"^[0-9a-f]{64}$")
MAX_CONNECTOR = 1000
STOP_WAIT_S = 20.0  # a withdraw during a charge waits this long for the charger to end the transaction
OWNER_TIMEOUT_S = 30.0  # cluster mode: the charger's owner opens the prepaid session
NO_STORE = {"Cache-Control": "no-store", "Access-Control-Allow-Origin": "*"}


def _answer(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers=NO_STORE)


def _error(reason: str) -> JSONResponse:
    return _answer(lnurl.error(reason))


def _base(request: Request) -> str:
    public = request.app.state.settings.public_url
    return (public or str(request.base_url)).rstrip("/")


def connector_path(charger_id: str, connector_id: int) -> str:
    """The path of a connector's LNURL-pay (a charger id may hold ``#`` or ``+``: quoted)."""
    return f"/lnurlp/{quote(charger_id, safe='')}/{connector_id}"


def connector_url(request: Request, charger_id: str, connector_id: int, k1: str | None = None) -> str:
    """The sticker's LNURL-pay URL (with ``k1``: its driver's withdraw while their session runs)."""
    url = _base(request) + connector_path(charger_id, connector_id)
    return f"{url}?k1={k1}" if k1 else url


def withdraw_url(request: Request, session_id: str, k1: str) -> str:
    return f"{_base(request)}/lnurlw/{session_id}?k1={k1}"


def topup_url(request: Request, session_id: str, k1: str) -> str:
    return f"{_base(request)}/lnurl/topup/{session_id}?k1={k1}"


def _engine(request: Request) -> SettlementEngine | None:
    return getattr(request.app.state, "settlement", None)


def _desk(request: Request) -> RefundDesk | None:
    return getattr(request.app.state, "refunds", None)


def _parse_connector(charger_id: str, connector_id: str) -> int | None:
    if not _CHARGER_ID.match(charger_id) or not connector_id.isdigit():
        return None
    number = int(connector_id)
    return number if 1 <= number <= MAX_CONNECTOR else None


async def _tariff(request: Request, charger_id: str) -> Tariff | None:
    """The tariff the charger sells under, or None when there is no such charger."""
    async with request.app.state.service.db() as db:
        if await db.get(Charger, charger_id) is None:
            return None
        _, tariff = await charger_tariff(db, charger_id)
    return tariff


def _amount_refusal(amount: str, tariff: Tariff) -> str | None:
    """Why a wallet's ``amount`` (msat) cannot be a prepayment or top-up under ``tariff``, or None."""
    if not amount.isdigit() or len(amount) > 18:
        return "amount must be a whole number of millisatoshis"
    return prepay_refusal(tariff, int(amount), datetime.now(UTC))


def pay_metadata(charger_id: str, connector_id: int, tariff: Tariff, now: datetime) -> str:
    """The LUD-06 metadata of a connector's pay request (the same string in both steps)."""
    price = price_at(tariff, now) // 1000
    fee = f" + {tariff.session_fee_msat // 1000} sat per session" if tariff.session_fee_msat else ""
    return lnurl.pay_metadata(
        f"Charge at {charger_id} connector {connector_id}, {price} sat/kWh{fee}",
        "satwatt starts the charger once this prepayment is paid and draws it down as energy flows. "
        "What is not used can be withdrawn: scan the sticker again with the link from this payment.",
    )


async def _open_session(
    request: Request, charger_id: str, connector_id: int
) -> tuple[ChargingSession, Settlement | None] | None:
    """The connector's running session and its settlement (None: not sold), or None."""
    async with request.app.state.service.db() as db:
        found = (
            await db.execute(
                select(ChargingSession, Settlement)
                .outerjoin(Settlement, Settlement.session_number == ChargingSession.number)
                .where(
                    ChargingSession.charger_id == charger_id,
                    ChargingSession.connector_id == connector_id,
                    ChargingSession.ended_at.is_(None),
                    ChargingSession.state != "ended",
                )
                .order_by(ChargingSession.number.desc())
                .limit(1)
            )
        ).first()
    return None if found is None else (found[0], found[1])


async def _offline(request: Request, charger_id: str) -> str | None:
    """Why a new session cannot be sold on this charger now, or None."""
    where = await request.app.state.registry.whereabouts(charger_id)
    if where is None or not where.connected:
        return f"charger {charger_id} is offline"
    return None


async def _open_prepaid(
    request: Request,
    engine: SettlementEngine,
    charger_id: str,
    connector_id: int,
    amount_msat: int,
    dh: bytes,
) -> int:
    """The prepaid session's number; in cluster mode the charger's owner sells it (as walk-ups)."""
    registry = request.app.state.registry
    where = await registry.whereabouts(charger_id)
    if where is None or where.process_id in (None, registry.process_id):
        session, _token = await engine.open_prepaid(charger_id, connector_id, amount_msat, dh)
        return int(session.number)
    payload = {
        "charger": charger_id,
        "connector": connector_id,
        "amount_msat": amount_msat,
        "description_hash": dh.hex(),
    }
    return int(await registry.to_owner(charger_id, "prepay", payload, OWNER_TIMEOUT_S))


def _k1_ok(engine: SettlementEngine, session_id: str, k1: str | None) -> bool:
    return (
        bool(k1)
        and _K1.match(k1 or "") is not None
        and hmac.compare_digest(engine.withdraw_k1(session_id), k1 or "")
    )


# ------------------------------------------------------------------------------ LNURL-pay
@router.get("/lnurlp/{charger_id}/{connector_id}", summary="LNURL of a connector's sticker (LUD-06/03)")
async def connector_lnurl(
    request: Request, charger_id: str, connector_id: str, k1: str | None = None
) -> JSONResponse:
    number = _parse_connector(charger_id, connector_id)
    engine = _engine(request)
    if number is None:
        return _error("no such charger or connector")
    if engine is None:
        return _error("satwatt is starting or stopping")
    tariff = await _tariff(request, charger_id)
    if tariff is None:
        return _error("no such charger or connector")
    running = await _open_session(request, charger_id, number)
    if running is not None:
        session, settlement = running
        if k1 is None or not _k1_ok(engine, session.id, k1):
            return _error("this connector is in use; only its driver can withdraw (with their link)")
        return await _withdraw_request(request, engine, session, settlement, k1)
    why = await _offline(request, charger_id)
    if why is not None:
        return _error(why)
    least, most = prepay_bounds(tariff, datetime.now(UTC))
    return _answer(
        {
            "tag": "payRequest",
            "callback": f"{connector_url(request, charger_id, number)}/callback",
            "minSendable": least,
            "maxSendable": most,
            "metadata": pay_metadata(charger_id, number, tariff, datetime.now(UTC)),
        }
    )


@router.get("/lnurlp/{charger_id}/{connector_id}/callback", summary="LNURL-pay callback: the prepayment")
async def connector_pay_callback(
    request: Request, charger_id: str, connector_id: str, amount: str = ""
) -> JSONResponse:
    number = _parse_connector(charger_id, connector_id)
    engine = _engine(request)
    if number is None:
        return _error("no such charger or connector")
    if engine is None:
        return _error("satwatt is starting or stopping")
    tariff = await _tariff(request, charger_id)
    if tariff is None:
        return _error("no such charger or connector")
    refusal = _amount_refusal(amount, tariff)
    if refusal is not None:
        return _error(refusal)
    amount_msat = int(amount)
    if await _open_session(request, charger_id, number) is not None:
        return _error("this connector is in use")
    why = await _offline(request, charger_id)
    if why is not None:
        return _error(why)
    metadata = pay_metadata(charger_id, number, tariff, datetime.now(UTC))
    try:
        session_number = await _open_prepaid(
            request, engine, charger_id, number, amount_msat, lnurl.description_hash(metadata)
        )
    except cmd.CommandFailed as exc:
        return _error(f"the charger cannot take a session now ({exc.reason})")
    async with request.app.state.service.db() as db:
        session = await db.get(ChargingSession, session_number)
    bolt11 = await _first_bolt11(request, session_number)
    if session is None or bolt11 is None:
        return _error("the Lightning node is unavailable; try again in a moment")
    k1 = engine.withdraw_k1(session.id)
    return _answer(
        {
            "pr": bolt11,
            "routes": [],
            "successAction": {
                "tag": "url",
                "description": "Charging starts now. Open the session page; scan the sticker again from "
                "there to stop and take back what you did not use.",
                "url": f"{_base(request)}/s/{session.id}/open?k1={k1}",
            },
        }
    )


async def _first_bolt11(request: Request, session_number: int) -> str | None:
    async with request.app.state.service.db() as db:
        return await db.scalar(
            select(LightningInvoice.bolt11)
            .where(LightningInvoice.session_number == session_number)
            .order_by(LightningInvoice.seq)
            .limit(1)
        )


# ------------------------------------------------------------------------------ top-up
async def _session_by_id(request: Request, session_id: str) -> tuple[ChargingSession, Settlement] | None:
    if len(session_id) > 64:
        return None
    async with request.app.state.service.db() as db:
        found = (
            await db.execute(
                select(ChargingSession, Settlement)
                .join(Settlement, Settlement.session_number == ChargingSession.number)
                .where(ChargingSession.id == session_id)
            )
        ).first()
    return None if found is None else (found[0], found[1])


def _topup_metadata(session_id: str) -> str:
    return lnurl.pay_metadata(f"Top up satwatt session {session_id}")


@router.get("/lnurl/topup/{session_id}", summary="LNURL-pay: top up a running prepaid session")
async def topup_request(request: Request, session_id: str, k1: str = "") -> JSONResponse:
    engine = _engine(request)
    found = await _session_by_id(request, session_id)
    if engine is None or found is None or not _k1_ok(engine, session_id, k1):
        return _error("unknown session or wrong k1")
    _session, settlement = found
    state = SessionSettlement.from_dict(settlement.state)
    if not state.prepaid or settlement.closed or state.transaction_ended_at is not None:
        return _error("this session takes no top-up")
    least, most = prepay_bounds(Tariff.from_dict(settlement.tariff), datetime.now(UTC))
    return _answer(
        {
            "tag": "payRequest",
            "callback": f"{_base(request)}/lnurl/topup/{session_id}/callback?k1={k1}",
            "minSendable": least,
            "maxSendable": most,
            "metadata": _topup_metadata(session_id),
        }
    )


@router.get("/lnurl/topup/{session_id}/callback", summary="LNURL-pay callback: a top-up")
async def topup_callback(request: Request, session_id: str, k1: str = "", amount: str = "") -> JSONResponse:
    engine = _engine(request)
    found = await _session_by_id(request, session_id)
    if engine is None or found is None or not _k1_ok(engine, session_id, k1):
        return _error("unknown session or wrong k1")
    session, settlement = found
    refusal = _amount_refusal(amount, Tariff.from_dict(settlement.tariff))
    if refusal is not None:
        return _error(refusal)
    dh = lnurl.description_hash(_topup_metadata(session_id))
    try:
        invoice = await sessions_api.top_up(
            request, request.app.state.registry, session, settlement, int(amount), dh
        )
    except Problem as exc:
        return _error(exc.detail or exc.title)
    return _answer({"pr": invoice.bolt11, "routes": []})


# ------------------------------------------------------------------------------ LNURL-withdraw
async def _stop_and_wait(request: Request, engine: SettlementEngine, session: ChargingSession) -> str | None:
    """Stop a running session (its driver withdraws) and wait until its transaction has ended, so the
    refundable amount is final; why not, or None."""
    number = session.number
    if session.ocpp_transaction_id is None:  # paid but not started yet: call it off
        at = datetime.now(UTC)
        await engine.advance(number, lambda s: record_transaction_ended(s, at))
        await request.app.state.service.abandon_pending_session(session.id, "withdrawn before start")
        return None
    view = engine.view(number)
    if view is not None and view[0].transaction_ended_at is not None:
        return None
    try:
        await request.app.state.registry.execute(
            session.charger_id, cmd.RemoteStop(session.ocpp_transaction_id)
        )
    except cmd.CommandFailed as exc:
        return f"the charger did not take the stop ({exc.reason}); try again"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STOP_WAIT_S
    while loop.time() < deadline:
        if await _transaction_ended(request, engine, number):
            return None
        await asyncio.sleep(0.1)
    return "the charger is still stopping; scan again in a moment"


async def _transaction_ended(request: Request, engine: SettlementEngine, number: int) -> bool:
    """Whether the settlement has seen the transaction end: in memory when this process holds the
    session, else (cluster mode: another process owns the charger) in its committed state."""
    view = engine.view(number)
    if view is not None:
        return view[0].transaction_ended_at is not None
    async with request.app.state.service.db() as db:
        row = await db.get(Settlement, number)
    return (
        row is None or row.closed or SessionSettlement.from_dict(row.state).transaction_ended_at is not None
    )


async def _withdraw_request(
    request: Request,
    engine: SettlementEngine,
    session: ChargingSession,
    settlement: Settlement | None,
    k1: str,
) -> JSONResponse:
    desk = _desk(request)
    if desk is None:
        return _error("satwatt is starting or stopping")
    if session.ended_at is None:
        if settlement is None:
            return _error("this session is not sold")
        if not SessionSettlement.from_dict(settlement.state).prepaid:
            return _error("this session is still running; withdraw from its receipt once it has ended")
        why = await _stop_and_wait(request, engine, session)
        if why is not None:
            return _error(why)
    refundable = await desk.refundable(session.number)
    if refundable.reason is not None:
        return _error(refundable.reason)
    return _answer(
        {
            "tag": "withdrawRequest",
            "callback": f"{_base(request)}/lnurlw/{session.id}/callback",
            "k1": k1,
            "defaultDescription": f"satwatt refund, session {session.id}",
            "minWithdrawable": refundable.amount_msat,
            "maxWithdrawable": refundable.amount_msat,
        }
    )


@router.get("/lnurlw/{session_id}", summary="LNURL-withdraw: what a session did not use (LUD-03)")
async def withdraw_request(request: Request, session_id: str, k1: str = "") -> JSONResponse:
    engine = _engine(request)
    found = await _session_by_id(request, session_id)
    if engine is None or found is None or not _k1_ok(engine, session_id, k1):
        return _error("unknown session or wrong k1")
    return await _withdraw_request(request, engine, found[0], found[1], k1)


@router.get("/lnurlw/{session_id}/callback", summary="LNURL-withdraw callback: pay the wallet's invoice")
async def withdraw_callback(request: Request, session_id: str, k1: str = "", pr: str = "") -> JSONResponse:
    engine = _engine(request)
    desk = _desk(request)
    found = await _session_by_id(request, session_id)
    if engine is None or desk is None or found is None or not _k1_ok(engine, session_id, k1):
        return _error("unknown session or wrong k1")
    if not pr or len(pr) > 4000:
        return _error("pr must be a Lightning invoice")
    try:
        await desk.withdraw(found[0].number, session_id, pr)
    except WithdrawRefused as exc:
        return _error(exc.reason)
    return _answer({"status": "OK"})
