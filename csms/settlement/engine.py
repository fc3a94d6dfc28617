"""The settlement engine: runs each paid session's invoice stream against a Lightning node and the
charger (the I/O around the pure policy in :mod:`csms.settlement.policy`).

Every open settlement lives in memory. For every fact (a meter sample, the transaction's start or end,
a settled invoice, the passing of time) the engine applies the fact to that state, runs the policy and
stages, in the same group-commit unit as the fact itself (:mod:`csms.db.writer`), the new state, every
decision as a pending action (the outbox) and every new invoice. Only once that has committed are the
actions carried out (create the invoice at the node, cut the power, resume, stop...) and marked done.

Actions run in two lanes per session, each in order: toward the node (invoices) and toward the charger
(start, suspend, resume, stop). Cutting the power never waits on an unreachable node. A restart at any
point redoes the pending actions, each idempotent:

* an invoice's preimage is derived from its key with a server secret, so re-creating it after a crash
  yields the same payment hash and the node answers "already exists" instead of a second invoice;
* payments come from the node's invoice stream, resumed from the persisted add/settle indexes, and
  open invoices are reconciled with LookupInvoice at start-up; recording a payment twice changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import hashlib
import hmac
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import bindparam, case, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from csms.charging import commands as cmd
from csms.charging.events import SessionUpdate
from csms.charging.service import ChargingService
from csms.charging.session_events import SessionEventLog
from csms.db.models import (
    Charger,
    ChargingSession,
    LightningCursor,
    LightningInvoice,
    Settlement,
    SettlementAction,
    TariffRow,
)
from csms.db.writer import GroupCommitWriter, Unit
from csms.ocpp.registry import ConnectionRegistry
from csms.settlement import policy
from csms.settlement.bill import compute_bill, session_state
from csms.settlement.metrics import SettlementMetrics
from csms.settlement.metrics import now as monotonic_now
from csms.settlement.session import (
    Invoice,
    InvoiceStatus,
    SessionSettlement,
    UnknownInvoiceError,
    open_prepaid_session,
    open_session,
    record_deposit_accepted,
    record_deposit_deadline,
    record_deposit_invoice,
    record_meter,
    record_payment,
    record_prepay_invoice,
    record_transaction_ended,
    record_transaction_started,
)
from csms.settlement.tariff import DEFAULT_TARIFF, Tariff, deposit_amount, price_at
from lightning import Backend, InvoiceCursor, InvoiceState, LightningError
from lightning import Invoice as NodeInvoice
from lightning.errors import BackendUnavailable, DuplicateInvoice, InvoiceAlreadySettled

log = logging.getLogger("csms.settlement")

SUSPEND_PROFILE_ID = 57_001  # the charging profile satwatt sets (limit 0) to cut a non-payer's power
DEFAULT_TARIFF_ID = "default"
CURSOR_NAME = "default"
MAX_ATTEMPTS_BACKOFF_S = 60
MAX_PAYMENTS_IN_FLIGHT = 64
NODE_ACTIONS = frozenset(
    {
        "IssueInvoice",
        "IssueFinalInvoice",
        "ExpireInvoice",
        "CancelInvoice",
        "IssueDeposit",
        "SettleDeposit",
        "CancelDeposit",
    }
)
DEPOSIT_CLTV_BLOCKS = 80  # the deposit hold invoice's final CLTV delta: the HTLC's deadline after acceptance
DEPOSIT_SAFETY_BLOCKS = 18  # settle this many blocks before it (LND cancels a held HTLC 12 before)
HEIGHT_REFRESH_S = 5.0
#: what an invoice's memo adds to "satwatt CP/1: N Wh at P sat/kWh", by the invoice's kind
MEMO_SUFFIX = {"final": " (final)", "prepay": " (prepaid)"}

Fact = Callable[[SessionSettlement], SessionSettlement]
Arrival = tuple[str, float]  # what kind of fact, when it arrived (monotonic_now)
Within = Callable[[Unit, SessionSettlement], None]

_settlements = Settlement.__table__
_invoices = LightningInvoice.__table__
_actions = SettlementAction.__table__
_sessions = ChargingSession.__table__

UPDATE_SETTLEMENT = (
    update(_settlements)
    .where(_settlements.c.session_number == bindparam("b_number"))
    .values(state=bindparam("state"), closed=bindparam("closed"), updated_at=bindparam("at"))
)
SET_BILL = (
    update(_settlements)
    .where(_settlements.c.session_number == bindparam("b_number"))
    .values(bill=bindparam("bill"))
)
INSERT_SETTLEMENT = insert(_settlements)
# the settlement's view of the session's state refines the charging service's (hence late)
UPDATE_SESSION_STATE = (
    update(_sessions).where(_sessions.c.number == bindparam("b_number")).values(state=bindparam("state"))
)
RETIRE_INVOICE = (
    update(_invoices)
    .where(_invoices.c.key == bindparam("b_key"), _invoices.c.status.in_(("creating", "open")))
    .values(status=bindparam("status"))
)
INVOICE_CREATED = (
    update(_invoices)
    .where(_invoices.c.key == bindparam("b_key"))
    .values(
        bolt11=bindparam("bolt11"),
        status=case((_invoices.c.status == "creating", "open"), else_=_invoices.c.status),
    )
)
INVOICE_PAID = (
    update(_invoices)
    .where(_invoices.c.key == bindparam("b_key"), _invoices.c.status != "paid")
    .values(
        status="paid",
        paid_at=bindparam("paid_at"),
        amount_paid_msat=bindparam("amount_paid_msat"),
        settle_index=bindparam("settle_index"),
    )
)
ACTION_DONE = (
    update(_actions)
    .where(_actions.c.key == bindparam("b_key"))
    .values(status="done", done_at=bindparam("at"))
)
ACTION_FAILED = (
    update(_actions)
    .where(_actions.c.key == bindparam("b_key"))
    .values(attempts=bindparam("attempts"), last_error=bindparam("error"))
)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def jsonable(value: Any) -> Any:
    """A decision or bill as JSON-ready data (times as ISO 8601, enums as their value)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    return value


def _projected_power(state: SessionSettlement, sampled_w: int) -> int:
    """The power the policy projects with after this sample.

    A cut charger reports (about) 0 W. While the session is suspended, and for the first sample after
    a resume (taken before the charger may have acted on it), a lower reading does not replace the
    power drawn before the cut: after the resume the projection counts at that power, not at 0 W,
    until a sample shows what the charger really draws. Erring high only cuts a moment early."""
    suspended = state.suspended_since is not None
    resuming = state.resumed_at is not None and (
        state.metered_at is None or state.metered_at <= state.resumed_at
    )
    return max(sampled_w, state.power_w) if suspended or resuming else sampled_w


def _accepted(state: SessionSettlement, *, at: datetime, height: int) -> SessionSettlement:
    return record_deposit_accepted(state, at, height)


async def charger_tariff(db: AsyncSession, charger_id: str) -> tuple[str, Tariff]:
    """The tariff a charger sells under (its own, else the default), in one query."""
    assigned = select(Charger.tariff_id).where(Charger.id == charger_id).scalar_subquery()
    rows = list(
        await db.scalars(
            select(TariffRow).where(
                TariffRow.id.in_([func.coalesce(assigned, DEFAULT_TARIFF_ID), DEFAULT_TARIFF_ID])
            )
        )
    )
    row = next((r for r in rows if r.id != DEFAULT_TARIFF_ID), None) or next(iter(rows), None)
    if row is None:
        return DEFAULT_TARIFF_ID, DEFAULT_TARIFF
    return row.id, Tariff.from_dict(row.definition)


class PaymentDelivery(Protocol):
    async def __call__(self, charger_id: str, invoice: NodeInvoice) -> None:
        """Have the owner of ``charger_id`` credit ``invoice`` (cluster mode: csms.cluster.payments)."""


class NotOwner(Exception):
    """The session's charger is owned by another process of the cluster."""


@dataclass
class _Open:
    """An open settlement: the policy's state and the tariff it was sold under."""

    state: SessionSettlement
    tariff: Tariff
    shown_state: str | None = None  # the session state last written to its row
    charger_id: str | None = None
    connector_id: int | None = None

    @property
    def label(self) -> str | None:
        """ "charger/connector", for invoice memos."""
        return None if self.charger_id is None else f"{self.charger_id}/{self.connector_id}"


@dataclass(frozen=True)
class _Action:
    """A pending action as read from the outbox."""

    key: str
    session_number: int
    kind: str
    payload: dict[str, Any]
    attempts: int


class SettlementEngine:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        writer: GroupCommitWriter,
        service: ChargingService,
        registry: ConnectionRegistry,
        backend: Backend,
        events: SessionEventLog,
        *,
        secret: bytes,
        tick_s: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = sessionmaker
        self.writer = writer
        self.service = service
        self.registry = registry
        self.backend = backend
        self.events = events
        self.secret = secret
        self.tick_s = tick_s
        self.clock = clock
        self._open: dict[int, _Open] = {}
        # an open session's invoices by payment hash (for payments from the invoice stream)
        self._by_payment_hash: dict[str, tuple[int, str]] = {}
        # pending actions per (session, lane), in order; a lane being drained is in _draining
        self._queued: dict[tuple[int, str], deque[_Action]] = {}
        self._draining: dict[tuple[int, str], asyncio.Future[None]] = {}
        self._retry_at: dict[tuple[int, str], datetime] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self.cursor = InvoiceCursor()
        self._cursor_lock = asyncio.Lock()
        self.stream_connected = asyncio.Event()
        self.metrics = SettlementMetrics()
        # cluster mode: whether this process owns a charger (and so its sessions' settlement), and where
        # a payment for a session owned elsewhere goes (csms.cluster.payments)
        self.owns: Callable[[str], bool] = lambda _charger_id: True
        self.deliver: PaymentDelivery | None = None
        self._released: set[int] = set()  # sessions handed to another process: their actions are theirs
        self._follower: asyncio.Task[None] | None = None
        self._deposit_watches: set[tuple[int, str]] = set()  # held-deposit watchers running
        self._block_height: int | None = None
        self._height_read_at = float("-inf")
        self._invoice_arrived: dict[str, Arrival] = {}  # invoice key -> the fact that decided it
        self._resume_arrived: dict[int, float] = {}  # session -> the settle event that resumes it
        insert_for = sqlite_insert if writer.engine.dialect.name == "sqlite" else postgresql_insert
        self._insert_action = insert_for(_actions).on_conflict_do_nothing()
        self._insert_invoice = insert_for(_invoices).on_conflict_do_nothing()
        cursor_insert = insert_for(LightningCursor.__table__)
        self._save_cursor_statement = cursor_insert.on_conflict_do_update(
            index_elements=["name"],
            set_={
                "add_index": cursor_insert.excluded.add_index,
                "settle_index": cursor_insert.excluded.settle_index,
                "updated_at": cursor_insert.excluded.updated_at,
            },
        )
        service.subscribe(self)
        service.cost_of = self.cost_msat

    # ------------------------------------------------------------------ lifecycle
    async def start(self, *, owned_only: bool = False, follow_payments: bool = True) -> None:
        """Load the open settlements (every one; with ``owned_only``, none: a process in a cluster loads
        those of each charger it comes to own, see :meth:`adopt`), redo their pending actions, and tick.
        With ``follow_payments`` the node's invoice stream is followed now (in a cluster, by the leader
        only: :meth:`follow_payments`)."""
        await self.ensure_default_tariff()
        if not owned_only:
            await self._load_open()
            pending = await self._load_outbox()
            for number in pending:
                self._spawn(self._drain(number))
            self._watch_open_deposits(list(self._open))
        self._loops = [asyncio.create_task(self._ticker(), name="settlement-ticker")]
        if follow_payments:
            await self.follow_payments()
        log.info("settlement engine started: %d open sessions", len(self._open))

    async def _load_open(self, charger_id: str | None = None) -> list[int]:
        """Open settlements from the log into memory (all, or one charger's); their numbers."""
        query = (
            select(Settlement, ChargingSession.charger_id, ChargingSession.connector_id)
            .join(ChargingSession, ChargingSession.number == Settlement.session_number)
            .where(Settlement.closed.is_(False))
        )
        if charger_id is not None:
            query = query.where(ChargingSession.charger_id == charger_id)
        loaded: list[int] = []
        async with self.db() as db:
            for row, charger, connector_id in await db.execute(query):
                entry = _Open(
                    SessionSettlement.from_dict(row.state),
                    Tariff.from_dict(row.tariff),
                    charger_id=charger,
                    connector_id=connector_id,
                )
                self._open[row.session_number] = entry
                self._released.discard(row.session_number)
                loaded.append(row.session_number)
                for open_invoice in entry.state.invoices:
                    self._by_payment_hash[self.payment_hash(open_invoice.key)] = (
                        row.session_number,
                        open_invoice.key,
                    )
                requested = entry.state.remote_start_requested_at
                if requested is not None and entry.state.transaction_started_at is None:
                    deadline = requested + self.service.remote_start_timeout
                    self.service.expect_start(row.session_number, deadline)
        return loaded

    async def follow_payments(self) -> None:
        """Follow the node's invoice stream from the persisted cursor, and reconcile open invoices."""
        async with self.db() as db:
            cursor = await db.get(LightningCursor, CURSOR_NAME)
        if cursor is not None:
            self.cursor = InvoiceCursor(cursor.add_index, cursor.settle_index)
        else:
            # First start against this node: skip its history (other applications' invoices); every
            # invoice satwatt makes from now on comes after this cursor.
            try:
                self.cursor = await self.backend.current_cursor()
                await self._save_cursor()
            except LightningError as exc:
                log.warning(
                    "cannot read the node's invoice indexes yet (%s); starting from the beginning", exc
                )
        self._follower = asyncio.create_task(self._payments(), name="settlement-payments")
        self._spawn(self.reconcile())

    async def stop_following_payments(self) -> None:
        """Stop following the invoice stream (in a cluster: another process leads now)."""
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await follower
        self.stream_connected.clear()

    @property
    def follows_payments(self) -> bool:
        return self._follower is not None

    # ------------------------------------------------------------------ ownership (cluster mode)
    async def adopt(self, charger_id: str) -> None:
        """This process now owns ``charger_id``: load its sessions' settlement and redo their pending
        actions (the previous owner let its writes commit before letting go). Whatever this process still
        held of them (from an ownership lost without a release) is dropped first: the log is the truth."""
        self._forget({n for n, entry in self._open.items() if entry.charger_id == charger_id})
        numbers = await self._load_open(charger_id)
        self._watch_open_deposits(numbers)
        for number in numbers:
            if await self._load_outbox(number):
                self._spawn(self._drain(number))
        if numbers:
            log.info("%s: took over %d open settlements", charger_id, len(numbers))

    async def release(self, charger_id: str) -> None:
        """Another process takes ``charger_id`` over: finish what is under way for its sessions, let the
        writes commit, and forget them here."""
        numbers = {n for n, entry in self._open.items() if entry.charger_id == charger_id}
        self._released.update(numbers)
        for _ in range(3):
            running = [f for (n, _lane), f in self._draining.items() if n in numbers]
            if running:
                await asyncio.wait(running, timeout=10)
            await self.writer.barrier()
            if not any(n in numbers for n, _lane in self._draining):
                break
        self._forget(numbers)

    def _forget(self, numbers: set[int]) -> None:
        for number in numbers:
            entry = self._open.pop(number, None)
            if entry is not None:
                for known in entry.state.invoices:
                    self._by_payment_hash.pop(self.payment_hash(known.key), None)
            self._resume_arrived.pop(number, None)
            for lane in ("node", "charger"):
                self._queued.pop((number, lane), None)
                self._retry_at.pop((number, lane), None)

    async def stop(self) -> None:
        await self.stop_following_payments()
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        for task in [*self._loops, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._loops.clear()
        self._tasks.clear()

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        async def guarded() -> None:
            try:
                await coroutine
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("settlement task failed")

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def ensure_default_tariff(self) -> None:
        async with self.db.begin() as db:
            if await db.get(TariffRow, DEFAULT_TARIFF_ID) is None:
                db.add(
                    TariffRow(
                        id=DEFAULT_TARIFF_ID, name=DEFAULT_TARIFF.name, definition=DEFAULT_TARIFF.to_dict()
                    )
                )

    def preimage(self, key: str) -> bytes:
        return hmac.new(self.secret, key.encode(), hashlib.sha256).digest()

    def payment_hash(self, key: str) -> str:
        return hashlib.sha256(self.preimage(key)).hexdigest()

    # ------------------------------------------------------------------ facts from charging
    def session_changed(self, update: SessionUpdate, unit: Unit) -> None:
        """A meter sample or the transaction's end: settled in the same unit as the fact itself."""
        entry = self._open.get(update.session_number)
        if entry is None:
            return  # not sold, or already settled
        arrived = (update.kind, monotonic_now())
        fact: Fact
        if update.kind == "meter":
            energy, power, at = update.energy_wh, update.power_w or 0, update.at

            def fact(state: SessionSettlement) -> SessionSettlement:
                return record_meter(
                    state, energy, _projected_power(state, power), max(at, state.metered_at or at)
                )
        else:
            energy, at = update.energy_wh, update.at

            def fact(state: SessionSettlement) -> SessionSettlement:
                return record_transaction_ended(state, at, energy)

        self._step(update.session_number, entry, fact, unit, arrived=arrived)

    def sells(self, session_number: int) -> bool:
        return session_number in self._open

    async def reload(self, session_number: int) -> None:
        await self.writer.barrier()
        async with self.db() as db:
            row = await db.get(Settlement, session_number)
        previous = self._open.pop(session_number, None)
        if row is not None and not row.closed:
            self._open[session_number] = _Open(
                SessionSettlement.from_dict(row.state),
                Tariff.from_dict(row.tariff),
                charger_id=previous.charger_id if previous is not None else None,
                connector_id=previous.connector_id if previous is not None else None,
            )

    async def session_started(self, update: SessionUpdate) -> None:
        """A transaction started: sold if its id tag belongs to a payer (or it is a paid walk-up)."""
        arrived = ("started", monotonic_now())
        if update.session_number not in self._open:
            await self._open_for_payer(update)
        if update.session_number in self._open:
            at = update.at
            await self.advance(
                update.session_number,
                lambda state: record_transaction_started(state, at),
                arrived=arrived,
            )

    async def _open_for_payer(self, update: SessionUpdate) -> None:
        """A transaction started with an id tag that belongs to a payer: that payer pays for it."""
        if update.payer_id is None:
            return  # an operator's tag or satwatt's remote start: not sold by settlement
        async with self.db() as db:
            tariff_id, tariff = await charger_tariff(db, update.charger_id)
        state = open_session(update.session_id, update.at, remote_start=False)
        unit = Unit()
        unit.add(
            INSERT_SETTLEMENT,
            self._settlement_row(update.session_number, state, tariff_id, tariff, payer_id=update.payer_id),
        )
        await self.writer.commit(unit)
        self._open[update.session_number] = _Open(
            state, tariff, charger_id=update.charger_id, connector_id=update.connector_id
        )

    def _settlement_row(
        self,
        number: int,
        state: SessionSettlement,
        tariff_id: str,
        tariff: Tariff,
        *,
        payer_id: str | None = None,
        token_hash: str | None = None,
    ) -> dict[str, Any]:
        return {
            "session_number": number,
            "payer_id": payer_id,
            "token_hash": token_hash,
            "tariff_id": tariff_id,
            "tariff": tariff.to_dict(),
            "state": state.to_dict(),
            "closed": False,
            "bill": None,
            "updated_at": self.clock(),
        }

    # ------------------------------------------------------------------ walk-up sessions
    async def open_walk_up(self, charger_id: str, connector_id: int, token: str) -> Any:
        """A driver asks to charge: the session and its first invoice; the charger starts once it is paid."""
        session = await self.service.create_pending_session(charger_id, connector_id)
        now = self.clock()
        async with self.db() as db:
            tariff_id, tariff = await charger_tariff(db, charger_id)
        arrived = ("request", monotonic_now())
        deposit = tariff.deposit_msat > 0  # Distributed Charge's manual pay: a hold-invoice deposit
        state = (
            open_prepaid_session(session.id, now)
            if deposit
            else open_session(session.id, now, remote_start=True)
        )
        entry = _Open(state, tariff, charger_id=charger_id, connector_id=connector_id)
        unit = Unit()
        unit.add(
            INSERT_SETTLEMENT,
            self._settlement_row(session.number, state, tariff_id, tariff, token_hash=token_digest(token)),
        )
        self._open[session.number] = entry
        if deposit:
            self._stage_prepay(session.number, entry, unit, deposit_amount(tariff, now), b"", deposit=True)
            await self.writer.commit(unit)
            self.events.notify(session.number)
            await self._drain(session.number)
            return session
        result = self._step(session.number, entry, None, unit, arrived=arrived)
        await self.writer.commit(unit)
        self.events.notify(session.number)
        if result.decisions:
            await self._drain(session.number)
        return session

    # ------------------------------------------------------------------ prepaid sessions (LNURL-pay)
    def withdraw_k1(self, session_id: str) -> str:
        """The session's LNURL-withdraw secret (``k1``), derived from its id with the server secret: the
        prepaid session's driver gets it with the payment's success action (it is also their session
        token, ``st_`` + k1), and a receipt shows it to whoever holds the session."""
        return hmac.new(self.secret, f"lnurlw/{session_id}".encode(), hashlib.sha256).hexdigest()

    async def open_prepaid(
        self, charger_id: str, connector_id: int, amount_msat: int, description_hash: bytes
    ) -> tuple[Any, str]:
        """A driver's LNURL-pay to a free connector: a prepaid session and its prepayment invoice (with
        the LNURL metadata's description hash); the charger starts once it is paid. The session and
        its token (``st_`` + the withdraw k1)."""
        session = await self.service.create_pending_session(charger_id, connector_id)
        now = self.clock()
        async with self.db() as db:
            tariff_id, tariff = await charger_tariff(db, charger_id)
        token = "st_" + self.withdraw_k1(session.id)
        state = open_prepaid_session(session.id, now)
        entry = _Open(state, tariff, charger_id=charger_id, connector_id=connector_id)
        unit = Unit()
        unit.add(
            INSERT_SETTLEMENT,
            self._settlement_row(session.number, state, tariff_id, tariff, token_hash=token_digest(token)),
        )
        self._open[session.number] = entry
        self._stage_prepay(session.number, entry, unit, amount_msat, description_hash)
        await self.writer.commit(unit)
        self.events.notify(session.number)
        await self._drain(session.number)
        return session, token

    async def top_up(self, number: int, amount_msat: int, description_hash: bytes | None = None) -> str:
        """Another prepayment for a running prepaid session; the new invoice's key. Its invoice carries
        ``description_hash`` (an LNURL-pay top-up) or, without one, a memo (a plain invoice)."""
        entry = self._open.get(number)
        if entry is None or not entry.state.prepaid:
            raise ValueError("not a running prepaid session")
        state = entry.state
        if state.transaction_ended_at is not None or state.stop_requested_at is not None:
            raise ValueError("the session is ending")
        unit = Unit()
        key = self._stage_prepay(number, entry, unit, amount_msat, description_hash)
        try:
            await self.writer.commit(unit)
        except Exception:
            await self.reload(number)
            raise
        await self._drain(number)
        return key

    def _stage_prepay(
        self,
        number: int,
        entry: _Open,
        unit: Unit,
        amount_msat: int,
        description_hash: bytes | None,
        *,
        deposit: bool = False,
    ) -> str:
        """Record the prepayment invoice (a fact: the driver's amount) and stage its creation at the node
        in the outbox, with the same idempotent action as the policy's invoices."""
        now = self.clock()
        price = price_at(entry.tariff, now)
        expires_at = now + timedelta(seconds=entry.tariff.invoice_expiry_s)
        key = entry.state.invoice_key(entry.state.next_seq)

        record = record_deposit_invoice if deposit else record_prepay_invoice

        def fact(state: SessionSettlement) -> SessionSettlement:
            return record(state, amount_msat, price, entry.tariff.session_fee_msat, now, expires_at)

        def stage(unit: Unit, state: SessionSettlement) -> None:
            invoice = state.invoice(key)
            payload = {
                "key": key,
                "seq": invoice.seq,
                "at": now.isoformat(),
                "energy_wh": invoice.energy_wh,
                "price_msat_per_kwh": price,
                "fee_msat": invoice.fee_msat,
                "amount_msat": amount_msat,
                "expires_at": expires_at.isoformat(),
                "kind": "deposit" if deposit else "prepay",
                "description_hash": description_hash.hex() if description_hash is not None else "",
            }
            action = self._stage_action(
                unit, number, key, "IssueDeposit" if deposit else "IssueInvoice", payload, now
            )
            self._stage_invoice_row(unit, number, invoice)
            unit.on_commit(lambda: self._enqueue([action]))

        self._step(number, entry, fact, unit, within=stage)
        return key

    # ------------------------------------------------------------------ the core step
    def _step(
        self,
        number: int,
        entry: _Open,
        fact: Fact | None,
        unit: Unit,
        within: Within | None = None,
        *,
        arrived: Arrival | None = None,
    ) -> policy.Step:
        """Record ``fact``, run the policy and stage the new state and every decision in ``unit``; the
        decisions are carried out once ``unit`` has committed."""
        now = self.clock()
        state = entry.state if fact is None else fact(entry.state)
        result = policy.step(state, entry.tariff, now)
        if result.decisions:
            log.debug("session %s: %s", number, ", ".join(type(d).__name__ for d in result.decisions))
        closed = result.state.closed_at is not None
        unit.add(
            UPDATE_SETTLEMENT,
            {"b_number": number, "state": result.state.to_dict(), "closed": closed, "at": now},
            key=number,
        )
        shown = session_state(result.state).value
        if shown != entry.shown_state:
            unit.add(UPDATE_SESSION_STATE, {"b_number": number, "state": shown}, key=number, late=True)
        actions = [self._stage_decision(unit, number, decision, now) for decision in result.decisions]
        if arrived is not None:
            for decision in result.decisions:
                self._note_arrival(number, decision, arrived)
        if within is not None:
            within(unit, result.state)
        if closed:
            self._open.pop(number, None)
            self._resume_arrived.pop(number, None)
            for closed_invoice in result.state.invoices:
                self._by_payment_hash.pop(self.payment_hash(closed_invoice.key), None)
        else:
            self._open[number] = dataclasses.replace(entry, state=result.state, shown_state=shown)
        notify = self.events.notify
        unit.on_commit(lambda: notify(number))
        if actions:
            unit.on_commit(lambda: self._enqueue(actions))
        return result

    def _note_arrival(self, number: int, decision: policy.Decision, arrived: Arrival) -> None:
        """Remember when the fact behind an invoice or a payment's resume arrived (for the metrics)."""
        if isinstance(decision, policy.IssueInvoice | policy.IssueFinalInvoice):
            self._invoice_arrived[decision.key] = arrived
        elif isinstance(decision, policy.Resume) and arrived[0] == "payment":
            self._resume_arrived[number] = arrived[1]

    async def advance(
        self,
        number: int,
        fact: Fact | None,
        *,
        within: Within | None = None,
        arrived: Arrival | None = None,
    ) -> policy.Step | None:
        """Record ``fact`` for a session (open or not), commit, then carry the decisions out."""
        entry = self._open.get(number)
        if entry is None:  # closed (or never sold): its last state may still be on its way to the log
            await self.writer.barrier()
            async with self.db() as db:
                found = (
                    await db.execute(
                        select(Settlement, ChargingSession.charger_id)
                        .join(ChargingSession, ChargingSession.number == Settlement.session_number)
                        .where(Settlement.session_number == number)
                    )
                ).first()
            if found is None:
                return None
            row, charger_id = found
            if not row.closed and not self.owns(charger_id):
                raise NotOwner(charger_id)
            entry = self._open.get(number) or _Open(
                SessionSettlement.from_dict(row.state), Tariff.from_dict(row.tariff)
            )
        unit = Unit()
        result = self._step(number, entry, fact, unit, within, arrived=arrived)
        try:
            await self.writer.commit(unit)
        except Exception:
            await self.reload(number)  # memory must not keep what the log does not
            raise
        return result

    def _stage_action(
        self, unit: Unit, number: int, key: str, kind: str, payload: dict[str, Any], now: datetime
    ) -> _Action:
        """Stage an action in the outbox; the action to carry out once committed."""
        unit.add(
            self._insert_action,
            {
                "key": key,
                "session_number": number,
                "kind": kind,
                "payload": payload,
                "status": "pending",
                "attempts": 0,
                "last_error": None,
                "created_at": now,
                "done_at": None,
            },
        )
        return _Action(key, number, kind, payload, 0)

    def _stage_invoice_row(self, unit: Unit, number: int, invoice: Invoice) -> None:
        """Stage the ledger row of an invoice about to be created at the node (and know its hash)."""
        self._by_payment_hash[self.payment_hash(invoice.key)] = (number, invoice.key)
        unit.add(
            self._insert_invoice,
            {
                "key": invoice.key,
                "session_number": number,
                "seq": invoice.seq,
                "kind": invoice.kind.value,
                "payment_hash": self.payment_hash(invoice.key),
                "bolt11": None,
                "amount_msat": invoice.amount_msat,
                "energy_wh": invoice.energy_wh,
                "price_msat_per_kwh": invoice.price_msat_per_kwh,
                "fee_msat": invoice.fee_msat,
                "status": "creating",
                "created_at": invoice.created_at,
                "expires_at": invoice.expires_at,
                "paid_at": None,
                "amount_paid_msat": None,
                "settle_index": None,
            },
        )

    def _stage_decision(self, unit: Unit, number: int, decision: policy.Decision, now: datetime) -> _Action:
        """Stage ``decision`` in the outbox (and what it records at once); the action to carry out."""
        action = self._stage_action(
            unit, number, decision.key, type(decision).__name__, jsonable(decision), now
        )
        if isinstance(decision, policy.IssueInvoice | policy.IssueFinalInvoice):
            self._stage_invoice_row(unit, number, policy.issued_invoice(decision))
        elif isinstance(decision, policy.ExpireInvoice | policy.CancelInvoice | policy.CancelDeposit):
            status = "expired" if isinstance(decision, policy.ExpireInvoice) else "canceled"
            unit.add(RETIRE_INVOICE, {"b_key": decision.invoice_key, "status": status})
        elif isinstance(decision, policy.CloseSession):
            unit.add(SET_BILL, {"b_number": number, "bill": jsonable(decision.bill)})
            SessionEventLog.stage(
                unit,
                number,
                "closed",
                {
                    "outcome": decision.outcome.value,
                    "cost_msat": decision.bill.cost_msat,
                    "paid_msat": decision.bill.paid_msat,
                    "refundable_msat": decision.bill.refundable_msat,
                    "unpaid_msat": decision.bill.shortfall_msat
                    if decision.outcome.value == "unpaid_debt"
                    else 0,
                },
                now,
            )
        return action

    # ------------------------------------------------------------------ carrying decisions out
    @staticmethod
    def _lane(kind: str) -> str:
        return "node" if kind in NODE_ACTIONS else "charger"

    def _enqueue(self, actions: list[_Action]) -> None:
        """Committed decisions join their session's lanes (in memory; the outbox has them too), and the
        lanes are drained."""
        actions = [a for a in actions if a.session_number not in self._released]
        self._queue_actions(actions)
        for number, lane in {(a.session_number, self._lane(a.kind)) for a in actions}:
            self._spawn(self._drain_lane(number, lane))

    async def _load_outbox(self, number: int | None = None) -> set[int]:
        """Pending actions from the outbox into the lanes (at start-up, or for one session): the sessions
        that have some."""
        query = select(SettlementAction).where(SettlementAction.status == "pending")
        if number is not None:
            query = query.where(SettlementAction.session_number == number)
        async with self.db() as db:
            rows = list(await db.scalars(query.order_by(SettlementAction.created_at, SettlementAction.key)))
        for key in [k for k in self._queued if number is None or k[0] == number]:
            if key not in self._draining:
                del self._queued[key]
        self._queue_actions([_Action(r.key, r.session_number, r.kind, r.payload, r.attempts) for r in rows])
        return {r.session_number for r in rows}

    def _queue_actions(self, actions: list[_Action]) -> None:
        for action in actions:
            queue = self._queued.setdefault((action.session_number, self._lane(action.kind)), deque())
            if all(queued.key != action.key for queued in queue):
                queue.append(action)

    async def _drain(self, number: int, *, from_log: bool = False) -> None:
        """Carry out a session's pending actions: the node's lane and the charger's lane, each in order
        and independent of the other (an unreachable node never delays cutting the power). With
        ``from_log``, the session's pending actions are read from the outbox first (recovery)."""
        if from_log:
            await self._load_outbox(number)
        await asyncio.gather(self._drain_lane(number, "node"), self._drain_lane(number, "charger"))

    async def _drain_lane(self, number: int, lane: str) -> None:
        key = (number, lane)
        if number in self._released:
            return  # handed over: its new owner carries its actions out
        running = self._draining.get(key)
        if running is not None:  # the running drain takes what was queued meanwhile: wait for it
            await asyncio.shield(running)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._draining[key] = done
        try:
            queue = self._queued.get(key)
            while queue:
                action = queue[0]
                unit = Unit()
                try:
                    await self._perform(number, action, unit)
                except (LightningError, cmd.CommandFailed) as exc:
                    queue[0] = dataclasses.replace(action, attempts=action.attempts + 1)
                    await self._failed(action, lane, exc)
                    return  # keep the order: later actions of this lane wait for this one
                unit.add(ACTION_DONE, {"b_key": action.key, "at": self.clock()})
                await self.writer.commit(unit)
                queue.popleft()
                self._retry_at.pop(key, None)
                self.events.notify(number)
            self._queued.pop(key, None)
        finally:
            del self._draining[key]
            done.set_result(None)

    async def _failed(self, action: _Action, lane: str, exc: Exception) -> None:
        attempts = action.attempts + 1
        unit = Unit()
        unit.add(ACTION_FAILED, {"b_key": action.key, "attempts": attempts, "error": str(exc)[:500]})
        await self.writer.commit(unit)
        delay = min(MAX_ATTEMPTS_BACKOFF_S, 2 ** min(attempts, 6))
        self._retry_at[(action.session_number, lane)] = self.clock() + timedelta(seconds=delay)
        log.warning(
            "settlement action %s failed (attempt %d, retry in %d s): %s", action.key, attempts, delay, exc
        )

    async def _perform(self, number: int, action: _Action, unit: Unit) -> None:
        """Carry out one action; what it did goes into ``unit``, committed with the action marked done."""
        kind, payload = action.kind, action.payload
        if kind in ("IssueInvoice", "IssueFinalInvoice"):
            await self._create_invoice(number, action, unit)
        elif kind in ("ExpireInvoice", "CancelInvoice", "CancelDeposit"):
            await self._cancel_invoice(payload["invoice_key"])
        elif kind == "IssueDeposit":
            await self._create_deposit(number, action, unit)
        elif kind == "SettleDeposit":
            with contextlib.suppress(InvoiceAlreadySettled):
                await self.backend.settle_hold_invoice(self.preimage(payload["invoice_key"]))
        elif kind == "RemoteStart":
            await self._remote_start(number)
        elif kind == "Suspend":
            await self._suspend(number, payload.get("reason", ""), unit)
        elif kind == "Resume":
            await self._resume(number, unit)
        elif kind == "StopTransaction":
            await self._stop(number, payload.get("reason", ""), unit)
        elif kind == "CloseSession":
            pass  # recorded with the decision itself
        else:  # pragma: no cover - a decision type the engine does not know
            raise RuntimeError(f"unknown settlement action {kind}")

    async def _create_invoice(self, number: int, action: _Action, unit: Unit) -> None:
        """Create the invoice at the node from the decision itself (nothing read back from the log).
        Its preimage derives from its key, so a second attempt after a crash finds the first one's."""
        key, payload = action.key, action.payload
        arrived = self._invoice_arrived.pop(key, None)
        entry = self._open.get(number)
        if entry is None:
            return  # the session is settled: an invoice it never issued is not needed any more
        status = next((i.status for i in entry.state.invoices if i.key == key), None)
        if status is not InvoiceStatus.OPEN:
            return  # paid, expired or canceled before it reached the node
        label = entry.label
        if label is None:
            session = await self._session(number)
            label = f"{session.charger_id}/{session.connector_id}"
        final = action.kind == "IssueFinalInvoice"
        kind = payload.get("kind") or ("final" if final else "increment")
        expires_at = datetime.fromisoformat(payload["expires_at"])
        expiry_s = max(1, int((expires_at - self.clock()).total_seconds()))
        description_hash = (
            bytes.fromhex(payload["description_hash"]) if payload.get("description_hash") else None
        )
        memo = (
            ""  # an LNURL-pay invoice is described by its metadata's hash (BOLT11: one or the other)
            if description_hash is not None
            else f"satwatt {label}: {payload['energy_wh']} Wh at "
            f"{payload['price_msat_per_kwh'] // 1000} sat/kWh" + MEMO_SUFFIX.get(kind, "")
        )
        preimage = self.preimage(key)
        if arrived is not None:
            self.metrics.observe_invoice_request(*arrived)
        try:
            invoice = await self.backend.create_invoice(
                payload["amount_msat"], memo, expiry_s, preimage=preimage, description_hash=description_hash
            )
            self.metrics.issued.inc()
        except DuplicateInvoice:  # created before a crash: the same preimage gives the same invoice
            invoice = await self.backend.lookup_invoice(hashlib.sha256(preimage).digest())
        unit.add(INVOICE_CREATED, {"b_key": key, "bolt11": invoice.bolt11})
        event = {
            "key": key,
            "kind": kind,
            "payment_hash": hashlib.sha256(preimage).hexdigest(),
            "bolt11": invoice.bolt11,
            "amount_msat": payload["amount_msat"],
            "energy_wh": payload["energy_wh"],
            "price_msat_per_kwh": payload["price_msat_per_kwh"],
            "fee_msat": payload["fee_msat"],
            "expires_at": expires_at.isoformat(),
        }
        SessionEventLog.stage(unit, number, "invoice", event, self.clock())
        if invoice.state is InvoiceState.SETTLED:
            self._spawn(self.on_payment(invoice))

    async def _create_deposit(self, number: int, action: _Action, unit: Unit) -> None:
        """Create the deposit's hold invoice (its hash derives from its key, like every invoice's), then
        watch it for the HTLC being held."""
        key, payload = action.key, action.payload
        entry = self._open.get(number)
        if (
            entry is None
            or entry.state.deposit is None
            or entry.state.deposit.status is not InvoiceStatus.OPEN
        ):
            return
        expires_at = datetime.fromisoformat(payload["expires_at"])
        expiry_s = max(1, int((expires_at - self.clock()).total_seconds()))
        payment_hash = hashlib.sha256(self.preimage(key)).digest()
        memo = f"satwatt {entry.label}: deposit, returned once the energy is paid"
        try:
            invoice = await self.backend.create_hold_invoice(
                payment_hash, payload["amount_msat"], memo, expiry_s, DEPOSIT_CLTV_BLOCKS
            )
        except DuplicateInvoice:
            invoice = await self.backend.lookup_invoice(payment_hash)
        unit.add(INVOICE_CREATED, {"b_key": key, "bolt11": invoice.bolt11})
        event = {
            "key": key,
            "kind": "deposit",
            "payment_hash": payment_hash.hex(),
            "bolt11": invoice.bolt11,
            "amount_msat": payload["amount_msat"],
            "energy_wh": payload["energy_wh"],
            "price_msat_per_kwh": payload["price_msat_per_kwh"],
            "fee_msat": payload["fee_msat"],
            "expires_at": expires_at.isoformat(),
        }
        SessionEventLog.stage(unit, number, "invoice", event, self.clock())
        unit.on_commit(lambda: self._watch_deposit(number, key))

    def _watch_open_deposits(self, numbers: list[int]) -> None:
        """Watch the deposits of sessions loaded from the log (after a restart, or a charger adopted)."""
        for number in numbers:
            entry = self._open.get(number)
            deposit = None if entry is None else entry.state.deposit
            if deposit is not None and deposit.status is InvoiceStatus.OPEN:
                self._watch_deposit(number, deposit.key)

    def _watch_deposit(self, number: int, key: str) -> None:
        if (number, key) in self._deposit_watches:
            return
        self._deposit_watches.add((number, key))

        async def watch() -> None:
            try:
                payment_hash = hashlib.sha256(self.preimage(key)).digest()
                while number in self._open:
                    try:
                        async for invoice in self.backend.watch_invoice(payment_hash):
                            if invoice.state is InvoiceState.ACCEPTED:
                                await self.advance(
                                    number,
                                    functools.partial(
                                        _accepted, at=self.clock(), height=invoice.htlc_expiry_height
                                    ),
                                )
                        return
                    except LightningError as exc:
                        log.warning("watching the deposit of session %s: %s (retrying)", number, exc)
                        await asyncio.sleep(2)
            finally:
                self._deposit_watches.discard((number, key))

        self._spawn(watch())

    async def _refresh_height(self) -> None:
        try:
            self._block_height = (await self.backend.get_info()).block_height
        except LightningError as exc:
            log.warning("cannot read the block height (held deposits' deadlines): %s", exc)

    def _deposit_deadlines(self, now: datetime, unit: Unit) -> None:
        """Held deposits whose HTLC's CLTV deadline is near (the block height, not the invoice's expiry)
        get the deadline recorded, and the policy settles them."""
        held = [
            (n, e)
            for n, e in self._open.items()
            if e.state.deposit_held and e.state.deposit_deadline_at is None
        ]
        if not held:
            return
        loop_time = asyncio.get_running_loop().time()
        if loop_time - self._height_read_at >= HEIGHT_REFRESH_S:
            self._height_read_at = loop_time
            self._spawn(self._refresh_height())
        if self._block_height is None:
            return
        for number, entry in held:
            if self._block_height >= entry.state.deposit_expiry_height - DEPOSIT_SAFETY_BLOCKS:
                self._step(number, entry, lambda s: record_deposit_deadline(s, now), unit)

    async def _cancel_invoice(self, key: str) -> None:
        async with self.db() as db:
            row = await db.get(LightningInvoice, key)
        if row is None or row.bolt11 is None:
            return
        try:
            await self.backend.cancel_hold_invoice(bytes.fromhex(row.payment_hash))
        except InvoiceAlreadySettled:
            await self.on_payment(await self.backend.lookup_invoice(bytes.fromhex(row.payment_hash)))
        except LightningError as exc:
            if isinstance(exc, BackendUnavailable):
                raise
            log.info("invoice %s not canceled at the node (%s); it expires there by itself", key, exc)

    async def _session(self, number: int) -> Any:
        """The session as the charging service holds it in memory (its charger is connected here), else
        its row: what an action toward the charger needs (charger, connector, transaction, ended)."""
        entry = self._open.get(number)
        if entry is not None and entry.charger_id is not None:
            live = self.service.session_state(entry.charger_id, number)
            if live is not None:
                return live
        async with self.db() as db:
            session = await db.get(ChargingSession, number)
        assert session is not None
        return session

    async def _remote_start(self, number: int) -> None:
        session = await self._session(number)
        try:
            result = await self.registry.execute(
                session.charger_id,
                cmd.RemoteStart(
                    id_tag=session.id_tag or "",
                    connector_id=session.connector_id,
                    remote_start_id=session.remote_start_id,
                ),
            )
        except cmd.CommandFailed as exc:
            if exc.reason in ("not_connected", "timeout"):
                raise
            result = cmd.CommandResult("Rejected", {"error": str(exc)})
        if result.accepted:
            self.service.start_accepted(number)
            return
        log.warning(
            "%s refused the remote start of paid session %s: %s",
            session.charger_id,
            session.id,
            result.status,
        )
        await self.service.abandon_pending_session(session.id, f"remote start {result.status}")
        at = self.clock()
        await self.advance(number, lambda s: record_transaction_ended(s, at))

    async def _suspend(self, number: int, reason: str, unit: Unit) -> None:
        session = await self._session(number)
        if session.ended_at is not None:
            return  # nothing to cut: not carried out, so no event (and its resume writes none either)
        if session.ocpp_transaction_id is None:
            # the policy saw the transaction start, the row does not show it yet: try again, never
            # mark a suspension done that was not carried out
            raise cmd.CommandFailed("not_connected", f"session {number}: transaction id not known yet")
        limit = cmd.SetPowerLimit(
            session.connector_id or 1, 0, SUSPEND_PROFILE_ID, session.ocpp_transaction_id
        )
        how = "charging profile"
        try:
            result = await self.registry.execute(session.charger_id, limit)
            accepted = result.accepted
        except cmd.CommandFailed as exc:
            if exc.reason in ("not_connected", "timeout"):
                raise
            accepted = False
        if not accepted:  # a charger without smart charging: stop the transaction instead
            how = "remote stop"
            await self.registry.execute(session.charger_id, cmd.RemoteStop(session.ocpp_transaction_id))
        SessionEventLog.stage(unit, number, "suspended", {"reason": reason, "how": how}, self.clock())

    async def _resume(self, number: int, unit: Unit) -> None:
        arrived = self._resume_arrived.pop(number, None)
        session = await self._session(number)
        if session.ended_at is not None:
            return  # the transaction ended meanwhile: nothing to resume, so no event
        if arrived is not None:
            self.metrics.observe_resume(arrived)
        await self.registry.execute(
            session.charger_id, cmd.ClearPowerLimit(SUSPEND_PROFILE_ID, session.connector_id)
        )
        SessionEventLog.stage(unit, number, "resumed", {}, self.clock())

    async def _stop(self, number: int, reason: str, unit: Unit) -> None:
        session = await self._session(number)
        if session.ended_at is None and session.ocpp_transaction_id is not None:
            await self.registry.execute(session.charger_id, cmd.RemoteStop(session.ocpp_transaction_id))
        SessionEventLog.stage(unit, number, "stopping", {"reason": reason}, self.clock())

    # ------------------------------------------------------------------ payments
    async def on_payment(
        self, invoice: NodeInvoice, *, arrived: float | None = None, forwarded: bool = False
    ) -> None:
        """The node settled an invoice; credit it to its session once. ``arrived``: when the settle
        event was read from the invoice stream (monotonic_now), for the resume latency. In a cluster, a
        payment for a session whose charger another process owns goes to that owner; ``forwarded``: it
        came from another process, which must look again if this one no longer owns the charger."""
        if invoice.state is not InvoiceState.SETTLED:
            return
        payment_hash = invoice.payment_hash_hex
        known = self._by_payment_hash.get(payment_hash)
        if known is not None:  # an open session's invoice: all it needs is in memory
            number, key = known
            entry = self._open.get(number)
            ours = None if entry is None else next((i for i in entry.state.invoices if i.key == key), None)
        if known is None or ours is None:  # a settled session's (or none of ours): ask the log
            await self.writer.barrier()
            async with self.db() as db:
                found = (
                    await db.execute(
                        select(LightningInvoice, ChargingSession.charger_id)
                        .join(ChargingSession, ChargingSession.number == LightningInvoice.session_number)
                        .where(LightningInvoice.payment_hash == payment_hash)
                    )
                ).first()
            if found is None or found[0].status == "paid":
                return  # not one of ours, or already credited
            row, charger_id = found
            if not self.owns(charger_id):
                if forwarded or self.deliver is None:
                    raise NotOwner(charger_id)
                await self.deliver(charger_id, invoice)
                return
            number, key, amount_msat, energy_wh = row.session_number, row.key, row.amount_msat, row.energy_wh
        elif ours.status is InvoiceStatus.PAID:
            return  # already credited (the stream and a reconciliation raced)
        else:
            amount_msat, energy_wh = ours.amount_msat, ours.energy_wh
        paid_at = invoice.settled_at or self.clock()
        event = {
            "key": key,
            "payment_hash": payment_hash,
            "amount_msat": amount_msat,
            "energy_wh": energy_wh,
        }

        def fact(state: SessionSettlement) -> SessionSettlement:
            try:
                return record_payment(state, key, paid_at)
            except UnknownInvoiceError:
                return state

        def mark(unit: Unit, _state: SessionSettlement) -> None:
            unit.add(
                INVOICE_PAID,
                {
                    "b_key": key,
                    "paid_at": paid_at,
                    "amount_paid_msat": invoice.amount_paid_msat,
                    "settle_index": invoice.settle_index,
                },
            )
            SessionEventLog.stage(unit, number, "paid", event, self.clock())
            unit.on_commit(self.metrics.settled.inc)

        await self.advance(
            number, fact, within=mark, arrived=None if arrived is None else ("payment", arrived)
        )
        self._spawn(self._send_running_cost(number))

    async def reconcile(self) -> None:
        """Ask the node about every invoice we still think is open (payments missed while down)."""
        async with self.db() as db:
            rows = list(await db.scalars(select(LightningInvoice).where(LightningInvoice.status == "open")))
        for row in rows:
            try:
                invoice = await self.backend.lookup_invoice(bytes.fromhex(row.payment_hash))
            except LightningError as exc:
                log.warning("reconciling invoice %s failed: %s", row.key, exc)
                continue
            await self.on_payment(invoice)

    async def _payments(self) -> None:
        """Follow the node's invoice stream. Settles of different sessions are credited in parallel; the
        persisted cursor only moves past a settle once it (and every one before it) is credited."""
        delay = 1.0
        while True:
            pending: deque[tuple[NodeInvoice, asyncio.Task[None] | None]] = deque()
            try:
                async for invoice in self.backend.invoice_updates(
                    self.cursor, on_subscribed=self._stream_subscribed
                ):
                    self.stream_connected.set()
                    delay = 1.0
                    task = None
                    if invoice.state is InvoiceState.SETTLED:
                        task = asyncio.create_task(self.on_payment(invoice, arrived=monotonic_now()))
                        task.add_done_callback(
                            lambda _t, queue=pending: self._spawn(self._retire(queue, wait=False))
                        )
                    pending.append((invoice, task))
                    await self._retire(pending, wait=len(pending) >= MAX_PAYMENTS_IN_FLIGHT)
            except asyncio.CancelledError:
                raise
            except LightningError as exc:
                log.warning("invoice stream interrupted: %s (retrying in %.0f s)", exc, delay)
            except Exception:
                log.exception("invoice stream failed (retrying in %.0f s)", delay)
            self.stream_connected.clear()
            with contextlib.suppress(Exception):
                await self._retire(pending, wait=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            await self.reconcile()

    def _stream_subscribed(self, subscribed: bool) -> None:
        """The node's invoice subscription is open (or not): /healthz and /metrics say so, also while
        no invoice comes (an idle satwatt after a restart)."""
        if subscribed:
            self.stream_connected.set()
        else:
            self.stream_connected.clear()

    async def _retire(
        self, pending: deque[tuple[NodeInvoice, asyncio.Task[None] | None]], *, wait: bool
    ) -> None:
        """Advance and persist the cursor over the stream events handled so far, in stream order."""
        async with self._cursor_lock:
            cursor = self.cursor
            while pending:
                invoice, task = pending[0]
                if task is not None:
                    if not task.done():
                        if not wait:
                            break
                        await asyncio.wait({task})
                    task.result()  # a payment not credited stops the cursor before it: it is replayed
                pending.popleft()
                cursor = cursor.advance(invoice)
            if cursor != self.cursor:
                self.cursor = cursor
                await self._save_cursor()

    async def _save_cursor(self) -> None:
        unit = Unit()
        unit.add(
            self._save_cursor_statement,
            {
                "name": CURSOR_NAME,
                "add_index": self.cursor.add_index,
                "settle_index": self.cursor.settle_index,
                "updated_at": self.clock(),
            },
            key=CURSOR_NAME,
        )
        await self.writer.commit(unit)

    # ------------------------------------------------------------------ time
    async def _ticker(self) -> None:
        """A tick every ``tick_s`` (fixed rate: the time a tick takes does not lengthen the period, which
        bounds how much energy passes the allowance before the check sees it)."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self.tick_s
            if due < loop.time():  # fell behind (a long tick): the next one now, no burst to catch up
                due = loop.time()
            await asyncio.sleep(due - loop.time())
            try:
                await self.tick()
            except Exception:
                log.exception("settlement tick failed")

    async def tick(self) -> None:
        """Step every open session whose policy has something to decide now; retry failed actions."""
        now = self.clock()
        arrived = ("tick", monotonic_now())
        unit = Unit()
        self._deposit_deadlines(now, unit)
        for number, entry in list(self._open.items()):
            if policy.decide(entry.state, entry.tariff, now):
                self._step(number, entry, None, unit, arrived=arrived)
        await self.writer.commit(unit)
        for (number, lane), when in list(self._retry_at.items()):
            if when <= now:
                self._retry_at.pop((number, lane), None)
                self._spawn(self._drain_lane(number, lane))
        await self.service.sweep()

    # ------------------------------------------------------------------ figures
    @property
    def open_count(self) -> int:
        return len(self._open)

    def view(self, number: int) -> tuple[SessionSettlement, Tariff] | None:
        entry = self._open.get(number)
        return (entry.state, entry.tariff) if entry is not None else None

    async def cost_msat(self, session_number: int) -> int | None:
        """The session's cost so far (the final cost once the transaction ended), None if not sold."""
        entry = self._open.get(session_number)
        if entry is None:
            await self.writer.barrier()
            async with self.db() as db:
                row = await db.get(Settlement, session_number)
            if row is None:
                return None
            entry = _Open(SessionSettlement.from_dict(row.state), Tariff.from_dict(row.tariff))
        return compute_bill(entry.state, entry.tariff, self.clock()).cost_msat

    async def _send_running_cost(self, number: int) -> None:
        """Tell the charger the running cost (each protocol adapter says it its own way)."""
        session = await self._session(number)
        cost = await self.cost_msat(number)
        if cost is None or session.ocpp_transaction_id is None or session.ended_at is not None:
            return
        try:
            await self.registry.execute(
                session.charger_id, cmd.CostUpdate(session.ocpp_transaction_id, cost, session.energy_wh)
            )
        except cmd.CommandFailed as exc:
            log.debug("%s did not take the running cost: %s", session.charger_id, exc)
