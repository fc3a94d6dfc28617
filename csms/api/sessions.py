"""/api/v1/sessions: each charge with its energy, its money and its live event stream.

Drivers start a paid session here (walk-up: no operator key; the session token comes back once) and
follow it with the session token; payers see the sessions of their id tags; the operator sees all.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from csms.api.access import Principal, caller_of, new_token, principal_of
from csms.api.chargers import FAILURE_STATUS
from csms.api.csv_export import csv_response
from csms.api.deps import registry_of, service_of
from csms.api.document import ANY_TOKEN, NO_CREDENTIALS, TOKEN_QUERY, errors
from csms.api.problems import Problem
from csms.api.schemas import CHARGER_ID_PATTERN, INT64_MAX, MeterPoint, Strict, absent
from csms.charging import commands as cmd
from csms.charging.service import ChargingService
from csms.charging.session_events import SessionEventLog
from csms.db.models import Charger, ChargingSession, LightningInvoice, MeterSample, Refund, Settlement
from csms.ocpp.registry import ConnectionRegistry
from csms.settlement.bill import session_view
from csms.settlement.engine import SettlementEngine
from csms.settlement.refunds import refunded_msat, withdraw_window_closed
from csms.settlement.session import SessionSettlement, record_transaction_ended
from csms.settlement.tariff import Tariff, prepay_refusal
from lightning import LightningError

router = APIRouter(prefix="/api/v1/sessions", tags=["sessions"])
Service = Annotated[ChargingService, Depends(service_of)]
Registry = Annotated[ConnectionRegistry, Depends(registry_of)]
Caller = Annotated[Principal, Depends(caller_of)]
OWNER_TIMEOUT_S = 30.0  # cluster mode: a request to the process that holds the charger

STATES = ("pending", "awaiting_payment", "charging", "suspended", "awaiting_payment_final", "ended")
State = Literal["pending", "awaiting_payment", "charging", "suspended", "awaiting_payment_final", "ended"]
#: Who may call the operations below: any token, each seeing what it gives (see csms.api.access).
TOKENS = {"security": ANY_TOKEN}


class InvoiceOut(BaseModel):
    key: str
    kind: str
    payment_hash: str
    bolt11: str | None
    amount_msat: int
    energy_wh: int
    price_msat_per_kwh: int
    fee_msat: int
    status: str
    created_at: datetime
    expires_at: datetime
    paid_at: datetime | None


class SessionOut(BaseModel):
    id: str
    charger_id: str
    connector_id: int | None
    protocol: str | None
    ocpp_transaction_id: str | None
    id_tag: str | None
    id_tag_status: str | None
    state: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    stop_reason: str | None
    meter_start_wh: int | None
    meter_stop_wh: int | None
    energy_wh: int
    power_w: int | None
    offline_events: int
    sold: bool = Field(description="Whether this session is paid for over Lightning (else the operator's).")
    payer_id: str | None = None
    tariff_id: str | None = None
    tariff: dict[str, Any] | None = Field(default=None, description="The tariff the session is sold under.")
    cost_msat: int | None = None
    billed_msat: int | None = None
    paid_msat: int | None = None
    credit_wh: int | None = None
    refundable_msat: int | None = Field(
        default=None, description="Paid and not used, not yet refunded (withdraw it: LNURL-withdraw)"
    )
    refunded_msat: int | None = Field(default=None, description="Paid back to the driver's wallet")
    retained_msat: int | None = Field(
        default=None,
        description="Paid, not used and no longer refundable (see retained_reason): "
        "paid - refunded - refundable - retained + unpaid == cost",
    )
    retained_reason: str | None = None
    unpaid_msat: int | None = None
    outcome: str | None = None


class SessionDetail(SessionOut):
    meter_series: list[MeterPoint]


class WalkUpRequest(Strict):
    charger_id: str = Field(pattern=CHARGER_ID_PATTERN)
    connector_id: int = Field(ge=1, le=1000)


class WalkUpCreated(SessionOut):
    token: str = Field(description="The session's secret token; shown only now.")
    invoice: InvoiceOut | None = Field(description="The first invoice: pay it and the charger starts.")
    events_url: str


def invoice_out(row: LightningInvoice) -> InvoiceOut:
    return InvoiceOut.model_validate(row, from_attributes=True)


def session_out(session: ChargingSession, settlement: Settlement | None, refunded: int = 0) -> SessionOut:
    base = {name: getattr(session, name) for name in SessionOut.model_fields if hasattr(session, name)}
    base["sold"] = settlement is not None
    if settlement is not None:
        state = SessionSettlement.from_dict(settlement.state)
        now = datetime.now(UTC)
        view = session_view(state, Tariff.from_dict(settlement.tariff), now)
        owed = max(0, view.refundable_msat - refunded)
        retained = owed if withdraw_window_closed(state, now) else 0
        base.update(
            payer_id=settlement.payer_id,
            tariff_id=settlement.tariff_id,
            tariff=settlement.tariff,
            cost_msat=view.cost_msat,
            billed_msat=view.billed_msat,
            paid_msat=view.paid_msat,
            credit_wh=view.credit_wh,
            refundable_msat=owed - retained,
            refunded_msat=refunded,
            retained_msat=retained,
            retained_reason="withdraw window expired" if retained else None,
            unpaid_msat=view.unpaid_msat,
            outcome=view.outcome,
            state=view.state.value,
        )
    return SessionOut(**base)


def meter_point(session: ChargingSession, sample: MeterSample) -> MeterPoint:
    delivered = None
    plausible = sample.anomaly is None
    if plausible and sample.energy_register_wh is not None and session.meter_start_wh is not None:
        delivered = max(0, sample.energy_register_wh - session.meter_start_wh)
    return MeterPoint(
        timestamp=sample.timestamp,
        energy_wh=delivered,
        power_w=sample.power_w,
        soc_percent=sample.soc_percent,
        context=sample.context,
        after_end=sample.after_end,
        register_wh=sample.energy_register_wh,
        anomaly=sample.anomaly,
    )


async def _visible(
    service: ChargingService, caller: Principal, session_id: str
) -> tuple[ChargingSession, Settlement | None]:
    async with service.db() as db:
        session = await db.scalar(select(ChargingSession).where(ChargingSession.id == session_id))
        settlement = await db.get(Settlement, session.number) if session is not None else None
    if session is None:
        if caller.kind == "operator":
            raise Problem(404, "Session not found", f"no session with id {session_id!r}")
        raise Problem(403, "Forbidden", "this token gives no access to that session")
    if not caller.may_see(session, settlement):
        raise Problem(403, "Forbidden", "this token gives no access to that session")
    return session, settlement


async def _owned_here(registry: ConnectionRegistry, charger_id: str) -> bool:
    """Whether this process holds the charger's sessions (always, but in cluster mode)."""
    where = await registry.whereabouts(charger_id)
    return where is None or where.process_id in (None, registry.process_id)


async def _on_owner(registry: ConnectionRegistry, charger_id: str, verb: str, payload: dict[str, Any]) -> Any:
    """Cluster mode: have the process that owns the charger do ``verb``; its failure as a problem."""
    try:
        return await registry.to_owner(charger_id, verb, payload, OWNER_TIMEOUT_S)
    except cmd.CommandFailed as exc:
        title = "Charger offline" if exc.reason == "not_connected" else "Request failed"
        raise Problem(FAILURE_STATUS.get(exc.reason, 502), title, str(exc), reason=exc.reason) from None


def _engine(request: Request) -> SettlementEngine:
    engine: SettlementEngine | None = getattr(request.app.state, "settlement", None)
    if engine is None:
        raise Problem(503, "Settlement not running", "satwatt is starting or stopping")
    return engine


@router.post(
    "",
    status_code=201,
    response_model=WalkUpCreated,
    summary="Start a paid session (walk-up): returns the first invoice and a session token",
    responses=errors(404, 409, 422, 503),
    openapi_extra={"security": NO_CREDENTIALS},
)
async def start_session(
    body: WalkUpRequest, request: Request, service: Service, registry: Registry, response: Response
) -> WalkUpCreated:
    async with service.db() as db:
        charger = await db.get(Charger, body.charger_id)
        busy = await db.scalar(
            select(ChargingSession.id).where(
                ChargingSession.charger_id == body.charger_id,
                ChargingSession.connector_id == body.connector_id,
                ChargingSession.ended_at.is_(None),
                ChargingSession.state != "ended",
            )
        )
    if charger is None:
        raise Problem(404, "Charger not found", f"no charger with id {body.charger_id!r}")
    where = await registry.whereabouts(body.charger_id)
    if where is None or not where.connected:
        raise Problem(
            409, "Charger offline", f"charger {body.charger_id} is not connected", reason="not_connected"
        )
    if busy is not None:
        raise Problem(
            409, "Connector busy", f"connector {body.connector_id} has a session in progress", reason="busy"
        )
    token = new_token("st_")
    if where.process_id in (None, registry.process_id):
        number = (await _engine(request).open_walk_up(body.charger_id, body.connector_id, token)).number
    else:  # cluster mode: the process holding the charger sells the session
        number = await _on_owner(
            registry,
            body.charger_id,
            "walk_up",
            {"charger": body.charger_id, "connector": body.connector_id, "token": token},
        )
    async with service.db() as db:
        session_row = await db.get(ChargingSession, number)
        settlement = await db.get(Settlement, number)
        first = await db.scalar(
            select(LightningInvoice)
            .where(LightningInvoice.session_number == number)
            .order_by(LightningInvoice.seq)
            .limit(1)
        )
    assert session_row is not None
    response.headers["Location"] = f"/api/v1/sessions/{session_row.id}"
    out = session_out(session_row, settlement)
    return WalkUpCreated(
        **out.model_dump(),
        token=token,
        invoice=invoice_out(first) if first is not None and first.bolt11 else None,
        events_url=f"/api/v1/sessions/{session_row.id}/events",
    )


@router.get(
    "",
    response_model=list[SessionOut],
    summary="List sessions the caller may see, newest first",
    responses=errors(401, 403, 422),
    openapi_extra=TOKENS,
)
async def list_sessions(
    service: Service,
    caller: Caller,
    charger_id: Annotated[str, Query(default_factory=absent)],  # absent: None (never null)
    state: Annotated[State, Query(default_factory=absent)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> list[SessionOut]:
    query = (
        select(ChargingSession, Settlement)
        .outerjoin(Settlement, Settlement.session_number == ChargingSession.number)
        .order_by(ChargingSession.number.desc())
        .limit(limit)
        .offset(offset)
    )
    if charger_id is not None:
        query = query.where(ChargingSession.charger_id == charger_id)
    if state is not None:
        query = query.where(ChargingSession.state == state)
    if caller.kind == "payer":
        query = query.where(Settlement.payer_id == caller.payer_id)
    elif caller.kind == "session":
        query = query.where(ChargingSession.number == caller.session_number)
    async with service.db() as db:
        rows = (await db.execute(query)).all()
        refunded = await refunded_msat(db, [s.number for s, t in rows if t is not None])
        return [session_out(s, t, refunded.get(s.number, 0)) for s, t in rows]


@router.get(
    "/{session_id}",
    response_model=SessionDetail,
    summary="Show a session with its meter series",
    responses=errors(401, 403, 404),
    openapi_extra=TOKENS,
)
async def get_session(session_id: str, service: Service, caller: Caller) -> SessionDetail:
    session, settlement = await _visible(service, caller, session_id)
    async with service.db() as db:
        samples = await db.scalars(
            select(MeterSample)
            .where(MeterSample.session_number == session.number)
            .order_by(MeterSample.timestamp, MeterSample.id)
        )
        series = [meter_point(session, s) for s in samples]
        refunded = (await refunded_msat(db, [session.number])).get(session.number, 0)
    return SessionDetail(**session_out(session, settlement, refunded).model_dump(), meter_series=series)


@router.get(
    "/{session_id}/invoices",
    response_model=list[InvoiceOut],
    summary="The session's invoices",
    responses=errors(401, 403, 404),
    openapi_extra=TOKENS,
)
async def list_invoices(session_id: str, service: Service, caller: Caller) -> list[InvoiceOut]:
    session, _ = await _visible(service, caller, session_id)
    async with service.db() as db:
        rows = await db.scalars(
            select(LightningInvoice)
            .where(LightningInvoice.session_number == session.number)
            .order_by(LightningInvoice.seq)
        )
        return [invoice_out(r) for r in rows]


@router.post(
    "/{session_id}/stop",
    response_model=SessionOut,
    summary="Stop a session (driver or operator)",
    responses=errors(401, 403, 404, 409, 502, 503, 504),
    openapi_extra=TOKENS,
)
async def stop_session(
    session_id: str, request: Request, service: Service, registry: Registry, caller: Caller
) -> SessionOut:
    session, settlement = await _visible(service, caller, session_id)
    if session.ended_at is not None:
        raise Problem(409, "Session not running", f"session {session_id} has ended")
    if session.ocpp_transaction_id is None and not await _owned_here(registry, session.charger_id):
        await _on_owner(registry, session.charger_id, "stop_pending", {"session": session.id})
    elif session.ocpp_transaction_id is None:  # paid for but not started yet: call it off
        if settlement is not None:
            at = datetime.now(UTC)
            await _engine(request).advance(session.number, lambda s: record_transaction_ended(s, at))
        await service.abandon_pending_session(session.id, "stopped before start")
    else:
        try:
            await registry.execute(session.charger_id, cmd.RemoteStop(session.ocpp_transaction_id))
        except cmd.CommandFailed as exc:
            raise Problem(
                FAILURE_STATUS.get(exc.reason, 502), "Stop failed", str(exc), reason=exc.reason
            ) from None
    session, settlement = await _visible(service, caller, session_id)
    return session_out(session, settlement)


class TopUpRequest(Strict):
    amount_msat: int = Field(
        gt=0,
        le=100_000_000_000,  # the most a tariff's prepay_max_msat can be
        description="Between the tariff's prepay_min_msat and prepay_max_msat",
    )


async def top_up(
    request: Request,
    registry: ConnectionRegistry,
    session: ChargingSession,
    settlement: Settlement | None,
    amount_msat: int,
    description_hash: bytes | None = None,
) -> LightningInvoice:
    """Another prepayment for a running prepaid session (the session page, the API and LNURL-pay all top
    up here): its invoice, created at the node. In cluster mode the charger's owner issues it. Refusals
    are problems: 409 (no such running prepaid session), 422 (amount), 503 (node)."""
    state = SessionSettlement.from_dict(settlement.state) if settlement is not None else None
    if settlement is None or state is None or not state.prepaid:
        raise Problem(409, "No top-up", "only a prepaid session (paid by LNURL-pay) takes a top-up")
    if settlement.closed or state.transaction_ended_at is not None or session.ended_at is not None:
        raise Problem(409, "Session not running", f"session {session.id} has ended or is ending")
    refusal = prepay_refusal(Tariff.from_dict(settlement.tariff), amount_msat, datetime.now(UTC))
    if refusal is not None:
        raise Problem(422, "Amount out of range", refusal)
    if await _owned_here(registry, session.charger_id):
        try:
            key = await _engine(request).top_up(session.number, amount_msat, description_hash)
        except ValueError as exc:  # ended (or stopping) since the row above was read
            raise Problem(409, "Session not running", str(exc), reason="ended") from None
    else:  # cluster mode: the process holding the charger holds the session's state
        payload = {
            "session": session.number,
            "amount_msat": amount_msat,
            "description_hash": description_hash.hex() if description_hash is not None else "",
        }
        key = await _on_owner(registry, session.charger_id, "top_up", payload)  # ended there: 409
    async with request.app.state.service.db() as db:
        invoice = await db.scalar(select(LightningInvoice).where(LightningInvoice.key == key))
    if invoice is None or invoice.bolt11 is None:
        raise Problem(
            503, "Lightning node unavailable", "the top-up's invoice could not be created; try again shortly"
        )
    return invoice


@router.post(
    "/{session_id}/top-ups",
    status_code=201,
    response_model=InvoiceOut,
    summary="Top up a running prepaid session: returns the invoice to pay",
    responses=errors(401, 403, 404, 409, 422, 502, 503, 504),
    openapi_extra=TOKENS,
)
async def create_top_up(
    session_id: str,
    body: TopUpRequest,
    request: Request,
    service: Service,
    registry: Registry,
    caller: Caller,
) -> InvoiceOut:
    session, settlement = await _visible(service, caller, session_id)
    return invoice_out(await top_up(request, registry, session, settlement, body.amount_msat))


#: One server-sent event: its id (for Last-Event-ID), its kind, and its data (a JSON object).
SSE_EVENT = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {
            "type": "string",
            "description": "started, meter, anomaly, invoice, paid, suspended, resumed, stopping, ended, "
            "closed, refunded, refund_failed",
        },
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}


@router.get(
    "/{session_id}/events",
    summary="Server-sent events: meter, anomaly, invoice, paid, suspended, resumed, ended",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": SSE_EVENT}}},
        **errors(401, 403, 404, 422),
    },
    openapi_extra={"security": [*ANY_TOKEN, {TOKEN_QUERY: []}]},
)
async def session_events(
    session_id: str,
    request: Request,
    service: Service,
    last_event_id: Annotated[int, Header(alias="Last-Event-ID", ge=0, le=INT64_MAX, default_factory=absent)],
    token: Annotated[str | None, Query(include_in_schema=False)] = None,  # documented as tokenQuery
    after: Annotated[int, Query(ge=0, le=INT64_MAX, description="Replay events after this id")] = 0,
) -> StreamingResponse:
    caller = await principal_of(request, token)
    session, settlement = await _visible(service, caller, session_id)
    events: SessionEventLog = request.app.state.events
    start = last_event_id if last_event_id is not None else after
    final_kind = "closed" if settlement is not None else "ended"

    async def stream() -> Any:
        yield "retry: 2000\n\n"
        async for event in events.follow(session.number, start):
            if event is None:
                yield ": keep-alive\n\n"
                continue
            data = json.dumps(
                {**event.data, "session_id": session.id, "at": event.created_at.isoformat()}
                if "at" not in event.data
                else {**event.data, "session_id": session.id}
            )
            yield f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n"
            if event.kind == final_kind:
                return

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class LedgerEntry(InvoiceOut):
    node_state: str | None = Field(description="The node's state of the invoice (reconcile=true)")
    node_amount_paid_msat: int | None


class RefundOut(BaseModel):
    key: str
    amount_msat: int = Field(description="Paid back to the driver's wallet (LNURL-withdraw)")
    fee_msat: int | None = Field(description="Routing fee satwatt paid on top (the operator's cost)")
    payment_hash: str
    status: str = Field(description="paying, paid or failed (a failed one moved nothing)")
    failure: str | None
    created_at: datetime
    paid_at: datetime | None


class Ledger(BaseModel):
    session: SessionOut
    invoices: list[LedgerEntry]
    refunds: list[RefundOut] = Field(description="Payments back to the driver")
    bill: dict[str, Any] | None
    reconciled: bool
    mismatches: list[str] = Field(description="Invoices whose paid state differs from the node's")


LEDGER_COLUMNS = (
    "key",
    "kind",
    "payment_hash",
    "amount_msat",
    "energy_wh",
    "price_msat_per_kwh",
    "fee_msat",
    "status",
    "created_at",
    "expires_at",
    "paid_at",
    "node_state",
    "node_amount_paid_msat",
)
#: a refund in the CSV ledger: a row of kind "refund" (its amount goes out), the same columns
REFUND_ROW = {"kind": "refund", "energy_wh": 0, "price_msat_per_kwh": 0, "fee_msat": 0}


@router.get(
    "/{session_id}/ledger",
    summary="The session's ledger (JSON or CSV), reconciled with the node",
    responses={
        200: {
            "model": Ledger,
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "The ledger: JSON, or CSV with `format=csv`",
        },
        **errors(401, 403, 404, 422, 503),
    },
    openapi_extra=TOKENS,
)
async def ledger(
    session_id: str,
    request: Request,
    service: Service,
    caller: Caller,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
    reconcile: Annotated[bool, Query(description="Ask the Lightning node about every invoice")] = False,
) -> Response:
    session, settlement = await _visible(service, caller, session_id)
    async with service.db() as db:
        rows = list(
            await db.scalars(
                select(LightningInvoice)
                .where(LightningInvoice.session_number == session.number)
                .order_by(LightningInvoice.seq)
            )
        )
        refund_rows = list(
            await db.scalars(
                select(Refund).where(Refund.session_number == session.number).order_by(Refund.created_at)
            )
        )
    refunds = [RefundOut.model_validate(r, from_attributes=True).model_dump(mode="json") for r in refund_rows]
    refunded = sum(r["amount_msat"] for r in refunds if r["status"] in ("paying", "paid"))
    entries: list[dict[str, Any]] = []
    for row in rows:
        entry = invoice_out(row).model_dump(mode="json")
        entry["node_state"] = entry["node_amount_paid_msat"] = None
        if reconcile and row.bolt11:
            try:
                node = await _engine(request).backend.lookup_invoice(bytes.fromhex(row.payment_hash))
                entry["node_state"], entry["node_amount_paid_msat"] = node.state.value, node.amount_paid_msat
            except LightningError as exc:
                entry["node_state"] = f"unknown: {type(exc).__name__}"
        entries.append(entry)
    if format == "csv":
        refund_lines = (
            {
                **REFUND_ROW,
                "key": r["key"],
                "payment_hash": r["payment_hash"],
                "amount_msat": r["amount_msat"],
                "status": r["status"],
                "created_at": r["created_at"],
                "paid_at": r["paid_at"],
            }
            for r in refunds
        )
        return csv_response([*entries, *refund_lines], LEDGER_COLUMNS, f"satwatt-{session.id}.csv")
    summary = session_out(session, settlement, refunded).model_dump(mode="json")
    mismatches = [
        e["key"]
        for e in entries
        if reconcile
        and e["node_state"] is not None
        and ((e["status"] == "paid") != (e["node_state"] == "SETTLED"))
    ]
    body = {
        "session": summary,
        "invoices": entries,
        "refunds": refunds,
        "bill": settlement.bill if settlement else None,
        "reconciled": reconcile,
        "mismatches": mismatches,
    }
    return Response(json.dumps(body), media_type="application/json")
