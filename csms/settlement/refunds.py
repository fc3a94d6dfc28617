"""Paying back what a session did not use (LNURL-withdraw), exactly once.

What is refundable is the bill's (:func:`csms.settlement.bill.compute_bill`: paid invoices' unused Wh
and a fee paid twice or for a session that never ran), once the transaction has ended, less what was
already refunded or is being refunded. The driver's wallet submits an invoice for exactly that amount.

Exactly once, whatever the wallet retries and whatever crashes:

1. The refund is recorded (``refunds`` row, status ``paying``) **before** any payment is attempted, in
   one transaction that also checks the remaining refundable amount. The row's ``active_for`` column
   holds the session number and is unique, so a session has at most one refund that moves money, even
   when two requests (or two processes) race: the second gets an LNURL error and nothing moves.
2. The payment goes to the node with the submitted invoice. The node pays a payment hash at most once
   (LND: a second SendPaymentV2 for a hash paid or in flight is refused with ALREADY_EXISTS, and
   :meth:`lightning.lnd.LndBackend.pay_invoice` then follows the first one with TrackPaymentV2).
3. The outcome is recorded (``paid`` with the routing fee, or ``failed``: then ``active_for`` is cleared
   and the amount is refundable again), with its session event (``refunded``/``refund_failed``) in the
   same transaction.

After a kill -9 between 2 and 3, start-up finds the row still ``paying`` and asks the node again with
the same invoice: it gets the first payment's result (never a second payment).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from csms.charging.session_events import SessionEventLog
from csms.db.models import Refund, Settlement
from csms.db.writer import GroupCommitWriter
from csms.settlement.bill import compute_bill
from csms.settlement.session import SessionSettlement
from csms.settlement.tariff import Tariff
from lightning import Backend, LightningError
from lightning.errors import BackendUnavailable, InvalidRequest, PaymentFailed
from lightning.payreq import PayReq, decode_payreq

log = logging.getLogger("csms.settlement.refunds")

#: How long after the transaction's end a withdraw link (its k1) can be used.
WITHDRAW_WINDOW = timedelta(days=30)
#: A submitted invoice must stay valid at least this long (the payment takes seconds, mainnet more).
MIN_INVOICE_VALIDITY = timedelta(seconds=60)
PAY_TIMEOUT_S = 60
ANSWER_WITHIN_S = 20.0  # the withdraw callback waits this long for the payment's outcome
RETRY_S = 30.0


def fee_limit_msat(amount_msat: int) -> int:
    """Routing fee satwatt accepts to pay a refund (the operator bears it): 1 %, at least 10 sat."""
    return max(amount_msat // 100, 10_000)


@dataclass(frozen=True)
class Refundable:
    """What a session's driver can withdraw now, or why nothing."""

    amount_msat: int
    refunded_msat: int  # already paid back (or being paid)
    reason: str | None = None  # why there is nothing to withdraw (None: amount_msat > 0)


def withdraw_window_closed(state: SessionSettlement, now: datetime) -> bool:
    """Whether the change of a session can no longer be withdrawn (``WITHDRAW_WINDOW`` after its end):
    what is left of it is then retained."""
    ended = state.transaction_ended_at
    return ended is not None and now - ended > WITHDRAW_WINDOW


def refundable_of(state: SessionSettlement, tariff: Tariff, refunded_msat: int, now: datetime) -> Refundable:
    """The remaining refundable amount of a settlement state (pure)."""
    if state.transaction_ended_at is None:
        return Refundable(0, refunded_msat, "the session is still running")
    if withdraw_window_closed(state, now):
        return Refundable(0, refunded_msat, "this withdraw link has expired")
    bill = compute_bill(state, tariff, now)
    remaining = bill.refundable_msat - refunded_msat
    if remaining <= 0:
        reason = "already withdrawn" if refunded_msat > 0 else "nothing to refund"
        return Refundable(0, refunded_msat, reason)
    return Refundable(remaining, refunded_msat)


def check_invoice(payreq: PayReq, amount_msat: int, network: str | None, now: datetime) -> str | None:
    """Why the wallet's invoice cannot take this refund, or None (pure)."""
    if payreq.amount_msat == 0:
        return "the invoice must name an amount"
    if payreq.amount_msat != amount_msat:
        return f"the invoice is for {payreq.amount_msat} msat; the refund is {amount_msat} msat"
    if payreq.expires_at - now < MIN_INVOICE_VALIDITY:
        return "the invoice has expired (or expires within a minute)"
    if network is not None and payreq.network != network:
        return f"the invoice is for {payreq.network}, not {network}"
    return None


async def refunded_msat(db: AsyncSession, numbers: list[int]) -> dict[int, int]:
    """What was paid back (or is being paid back) to each session's driver (LNURL-withdraw)."""
    if not numbers:
        return {}
    rows = await db.execute(
        select(Refund.session_number, func.sum(Refund.amount_msat))
        .where(Refund.session_number.in_(numbers), Refund.status.in_(("paying", "paid")))
        .group_by(Refund.session_number)
    )
    return {number: int(total or 0) for number, total in rows.all()}


class WithdrawRefused(Exception):
    """The withdraw cannot be made; ``reason`` is the LNURL error's reason (nothing moved)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RefundDesk:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        writer: GroupCommitWriter,
        backend: Backend,
        events: SessionEventLog,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = sessionmaker
        self.writer = writer
        self.backend = backend
        self.events = events
        self.clock = clock
        self._locks: dict[int, asyncio.Lock] = {}
        self._paying: dict[str, asyncio.Task[None]] = {}
        self._network: str | None = None
        self._retry: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Finish the refunds a previous run recorded and did not see through (a kill -9 included)."""
        self._retry = asyncio.create_task(self._resume_loop(), name="refunds-resume")

    async def stop(self) -> None:
        tasks = [t for t in (self._retry, *self._paying.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _resume_loop(self) -> None:
        while True:
            try:
                await self.resume()
            except Exception:
                log.exception("resuming refunds failed")
            await asyncio.sleep(RETRY_S)

    async def resume(self) -> None:
        async with self.db() as db:
            rows = list(await db.scalars(select(Refund).where(Refund.status == "paying")))
        for row in rows:
            self._pay(row.key, row.session_number, row.bolt11, row.amount_msat, row.fee_limit_msat)

    # ------------------------------------------------------------------ figures
    async def refundable(self, session_number: int) -> Refundable:
        await self.writer.barrier()  # the settlement's latest state may still be on its way
        async with self.db() as db:
            row = await db.get(Settlement, session_number)
            refunded = (await refunded_msat(db, [session_number])).get(session_number, 0)
        if row is None:
            return Refundable(0, 0, "this session is not sold")
        state = SessionSettlement.from_dict(row.state)
        return refundable_of(state, Tariff.from_dict(row.tariff), refunded, self.clock())

    async def _node_network(self) -> str | None:
        if self._network is None:
            with contextlib.suppress(LightningError):
                self._network = (await self.backend.get_info()).network
        return self._network

    # ------------------------------------------------------------------ the withdraw
    async def withdraw(self, session_number: int, session_id: str, bolt11: str) -> None:
        """Pay the remaining refundable amount to ``bolt11`` (exactly that amount). Returns once the
        payment succeeded or is under way (LUD-03: the wallet then waits for it); raises
        WithdrawRefused when it cannot be made or failed (nothing moved)."""
        try:
            payreq = decode_payreq(bolt11)
        except InvalidRequest as exc:
            raise WithdrawRefused(f"not a valid invoice: {exc}") from None
        lock = self._locks.setdefault(session_number, asyncio.Lock())
        async with lock:
            refundable = await self.refundable(session_number)
            if refundable.reason is not None:
                raise WithdrawRefused(refundable.reason)
            network = await self._node_network()
            reason = check_invoice(payreq, refundable.amount_msat, network, self.clock())
            if reason is not None:
                raise WithdrawRefused(reason)
            attempt = 1 + await self._attempts(session_number)
            key = f"{session_id}/refund/{attempt}"
            limit = fee_limit_msat(refundable.amount_msat)
            try:
                async with self.db.begin() as db:
                    db.add(
                        Refund(
                            key=key,
                            session_number=session_number,
                            active_for=session_number,
                            amount_msat=refundable.amount_msat,
                            bolt11=bolt11.strip(),
                            payment_hash=payreq.payment_hash.hex(),
                            fee_limit_msat=limit,
                            fee_msat=None,
                            status="paying",
                            failure=None,
                            created_at=self.clock(),
                            paid_at=None,
                        )
                    )
            except IntegrityError:
                raise WithdrawRefused("a withdraw for this session is already under way or done") from None
        task = self._pay(key, session_number, bolt11.strip(), refundable.amount_msat, limit)
        done, _ = await asyncio.wait({task}, timeout=ANSWER_WITHIN_S)
        if done:
            async with self.db() as db:
                row = await db.get(Refund, key)
            if row is not None and row.status == "failed":
                raise WithdrawRefused(f"the payment failed: {row.failure}")

    async def _attempts(self, session_number: int) -> int:
        async with self.db() as db:
            count = await db.scalar(select(func.count()).where(Refund.session_number == session_number))
        return int(count or 0)

    def _pay(self, key: str, number: int, bolt11: str, amount_msat: int, limit: int) -> asyncio.Task[None]:
        running = self._paying.get(key)
        if running is not None and not running.done():
            return running
        task = asyncio.create_task(self._pay_once(key, number, bolt11, amount_msat, limit))
        self._paying[key] = task
        task.add_done_callback(lambda t: self._paying.pop(key) if self._paying.get(key) is t else None)
        return task

    async def _pay_once(self, key: str, number: int, bolt11: str, amount_msat: int, limit: int) -> None:
        """Pay the recorded refund (or find the payment made before a crash: same invoice, same hash)
        and record the outcome. A node that cannot be reached leaves it ``paying`` for the next try."""
        try:
            result = await self.backend.pay_invoice(bolt11, fee_limit_msat=limit, timeout_s=PAY_TIMEOUT_S)
        except PaymentFailed as exc:
            await self._record(key, number, "failed", failure=exc.reason)
            return
        except InvalidRequest as exc:  # refused outright (expired, already paid...): nothing moved
            await self._record(key, number, "failed", failure=str(exc))
            return
        except BackendUnavailable as exc:
            log.warning("refund %s: node unavailable (%s); retried later", key, exc)
            return
        except LightningError as exc:
            log.warning("refund %s: %s; retried later", key, exc)
            return
        await self._record(key, number, "paid", fee_msat=result.fee_msat, amount_msat=amount_msat)

    async def _record(
        self,
        key: str,
        number: int,
        status: str,
        *,
        failure: str | None = None,
        fee_msat: int | None = None,
        amount_msat: int | None = None,
    ) -> None:
        """The refund's outcome and its session event, in one transaction (a crash leaves both or
        neither: the row stays ``paying`` and the next resume records it)."""
        now = self.clock()
        values: dict[str, Any] = {"status": status}
        data: dict[str, Any] = {"key": key, "status": status}
        if status == "failed":
            values.update(active_for=None, failure=failure[:500] if failure else None)
            data["failure"] = failure
        else:
            values.update(fee_msat=fee_msat, paid_at=now)
            data.update(amount_msat=amount_msat, fee_msat=fee_msat)
        async with self.db.begin() as db:
            changed = await db.execute(
                update(Refund).where(Refund.key == key, Refund.status == "paying").values(**values)
            )
            if getattr(changed, "rowcount", 1) == 0:
                return  # recorded already (a resume raced the first attempt)
            kind = "refunded" if status == "paid" else "refund_failed"
            await SessionEventLog.add(db, number, kind, data, now)
        self.events.notify(number)
        log.info("refund %s: %s%s", key, status, f" ({failure})" if failure else "")
