"""The Backend for a real LND (and the simnet): grpc.aio, one long-lived TLS channel, macaroon auth.

Uses LND's compiled stubs from ``lndgrpc.compiled`` directly (never lndgrpc's client classes).
While LND is unreachable or starting up, calls retry with exponential backoff (unary calls up to
``RetryPolicy.unavailable_timeout_s``, then :class:`BackendUnavailable`; streams forever), and
``health`` says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc

from lightning._protos import inv, inv_grpc, ln, ln_grpc, router, router_grpc, state, state_grpc
from lightning.backend import (
    DEFAULT_HOLD_CLTV_EXPIRY,
    DEFAULT_INVOICE_EXPIRY_S,
    BackendHealth,
    Invoice,
    InvoiceCursor,
    InvoiceState,
    NodeInfo,
    PaymentResult,
    PaymentStatus,
)
from lightning.errors import (
    BackendUnavailable,
    DuplicateInvoice,
    InvalidRequest,
    LightningError,
    PaymentFailed,
)
from lightning.keepalive import CLIENT_KEEPALIVE_S, LND_KEEPALIVE, KeepalivePolicy
from lightning.lnd.config import LndConfig
from lightning.lnd.convert import invoice_from_proto, map_rpc_error, payment_from_proto
from lightning.payreq import payment_hash_of, timestamp_and_expiry_of

log = logging.getLogger("lightning.lnd")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2  # +- fraction
    unavailable_timeout_s: float = 30.0  # unary calls give up (BackendUnavailable) after this long

    def delay(self, attempt: int) -> float:
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**attempt)
        return base * (1 + random.uniform(-self.jitter, self.jitter))


class _Macaroon:
    """The macaroon as per-call metadata (hex, key ``macaroon``, as LND reads it); never printed.

    Per-call metadata rather than gRPC call credentials: grpcio runs a call-credentials plugin on a
    new Python thread for every call, which cost a quarter of a busy client's CPU."""

    __slots__ = ("metadata",)

    def __init__(self, macaroon_hex: str) -> None:
        self.metadata: tuple[tuple[str, str], ...] = (("macaroon", macaroon_hex),)

    def __repr__(self) -> str:
        return "_Macaroon(<redacted>)"


class LndBackend:
    """:class:`lightning.backend.Backend` over LND's gRPC API."""

    def __init__(
        self,
        config: LndConfig,
        *,
        retry: RetryPolicy | None = None,
        call_timeout_s: float = 30.0,
        keepalive_s: float = CLIENT_KEEPALIVE_S,
        keepalive_policy: KeepalivePolicy = LND_KEEPALIVE,
        name: str | None = None,
    ) -> None:
        """``keepalive_s``: ping interval while a call is open; no less than the node's
        ``keepalive_policy`` permits (LND's: 5 s, only with a call open), else ``ValueError``."""
        self.config = config
        self.retry = retry or RetryPolicy()
        self.call_timeout_s = call_timeout_s
        self.keepalive_s = keepalive_s
        self._keepalive_options = keepalive_policy.client_options(keepalive_s)
        self._macaroon = _Macaroon(config.macaroon.hex())
        self.name = name or config.grpc_address
        self._channel: grpc.aio.Channel | None = None
        self._hold_hashes: set[bytes] = set()
        self._closed = False
        # health
        self._reachable = True
        self._last_error: str | None = None
        self._failures = 0
        self._last_success: datetime | None = None
        self._last_failure: datetime | None = None
        self._reconnects = 0

    # ---- channel ---------------------------------------------------------------------------------
    def _open_channel(self) -> grpc.aio.Channel:
        if self._closed:
            raise LightningError("backend is closed")
        if self._channel is None:
            creds = grpc.ssl_channel_credentials(root_certificates=self.config.tls_cert_pem)
            options: list[tuple[str, Any]] = [
                *self._keepalive_options,
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", int(self.retry.max_backoff_s * 1000)),
            ]
            if self.config.tls_server_name:
                options.append(("grpc.ssl_target_name_override", self.config.tls_server_name))
            self._channel = grpc.aio.secure_channel(self.config.grpc_address, creds, options=options)
            self._ln = ln_grpc.LightningStub(self._channel)
            self._inv = inv_grpc.InvoicesStub(self._channel)
            self._router = router_grpc.RouterStub(self._channel)
            self._state = state_grpc.StateStub(self._channel)
        return self._channel

    async def close(self) -> None:
        self._closed = True
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    async def __aenter__(self) -> LndBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- health ----------------------------------------------------------------------------------
    @property
    def health(self) -> BackendHealth:
        return BackendHealth(
            reachable=self._reachable,
            last_error=self._last_error,
            consecutive_failures=self._failures,
            last_success_at=self._last_success,
            last_failure_at=self._last_failure,
            reconnects=self._reconnects,
            extra={"address": self.config.grpc_address},
        )

    def _ok(self) -> None:
        if not self._reachable:
            log.info("LND %s reachable again after %d failed attempts", self.name, self._failures)
        self._reachable = True
        self._failures = 0
        self._last_success = datetime.now(UTC)

    def _unavailable(self, err: LightningError, what: str, delay: float | None) -> None:
        self._reachable = False
        self._failures += 1
        self._last_error = str(err)
        self._last_failure = datetime.now(UTC)
        n = self._failures
        if n == 1 or n % 10 == 0:
            retry = f"; retrying in {delay:.2f}s" if delay is not None else ""
            log.warning("LND %s unavailable (%s, attempt %d): %s%s", self.name, what, n, err, retry)

    def _answered(self, err: LightningError) -> None:
        """The node answered (with an application error): it is reachable."""
        self._ok()

    # ---- unary calls with retry ------------------------------------------------------------------
    async def _unary(self, what: str, call: Callable[[], Awaitable[T]], *, retry: bool = True) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry.unavailable_timeout_s
        attempt = 0
        while True:
            self._open_channel()
            try:
                result = await call()
            except grpc.aio.AioRpcError as exc:
                err = map_rpc_error(exc)
                if not isinstance(err, BackendUnavailable):
                    self._answered(err)
                    raise err from exc
                delay = self.retry.delay(attempt)
                can_retry = retry and loop.time() + delay < deadline
                self._unavailable(err, what, delay if can_retry else None)
                if not can_retry:
                    raise err from exc
                attempt += 1
                await asyncio.sleep(delay)
                continue
            self._ok()
            return result

    # ---- Backend API -----------------------------------------------------------------------------
    async def get_info(self) -> NodeInfo:
        resp = await self._unary(
            "GetInfo",
            lambda: self._ln.GetInfo(
                ln.GetInfoRequest(), timeout=self.call_timeout_s, metadata=self._macaroon.metadata
            ),
        )
        network = resp.chains[0].network if resp.chains else ("testnet" if resp.testnet else "mainnet")
        return NodeInfo(
            pubkey=resp.identity_pubkey,
            alias=resp.alias,
            network=network,
            block_height=resp.block_height,
            synced=resp.synced_to_chain,
        )

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until LND's state service reports SERVER_ACTIVE (LND's readiness signal)."""
        async with asyncio.timeout(timeout_s):
            attempt = 0
            while True:
                self._open_channel()
                try:
                    resp = await self._state.GetState(
                        state.GetStateRequest(), timeout=self.call_timeout_s, metadata=self._macaroon.metadata
                    )
                    if resp.state == state.SERVER_ACTIVE:
                        self._ok()
                        return
                    self._unavailable(
                        BackendUnavailable(f"LND state {state.WalletState.Name(resp.state)}"),
                        "GetState",
                        None,
                    )
                except grpc.aio.AioRpcError as exc:
                    err = map_rpc_error(exc)
                    if not isinstance(err, BackendUnavailable):
                        raise err from exc
                    self._unavailable(err, "GetState", None)
                await asyncio.sleep(self.retry.delay(attempt))
                attempt += 1

    async def create_invoice(
        self,
        amount_msat: int,
        memo: str = "",
        expiry_s: int = DEFAULT_INVOICE_EXPIRY_S,
        preimage: bytes | None = None,
        description_hash: bytes | None = None,
    ) -> Invoice:
        _check_amount(amount_msat)
        if preimage is not None and len(preimage) != 32:
            raise InvalidRequest("preimage must be 32 bytes")
        if description_hash is not None and (len(description_hash) != 32 or memo):
            raise InvalidRequest("description_hash must be 32 bytes, and comes without a memo")
        # The preimage is chosen here when the caller has none: a retried AddInvoice then finds its own
        # earlier attempt (DuplicateInvoice, same hash, amount and memo) instead of leaving an orphan.
        # With one derived by the caller from an idempotency key, creating it again raises
        # DuplicateInvoice, except when our own earlier attempt got through before the link broke.
        preimage = preimage if preimage is not None else secrets.token_bytes(32)
        req = ln.Invoice(
            value_msat=amount_msat,
            memo=memo,
            expiry=expiry_s,
            r_preimage=preimage,
            description_hash=description_hash or b"",
        )
        attempts = 0

        async def add() -> Any:
            nonlocal attempts
            attempts += 1
            return await self._ln.AddInvoice(
                req, timeout=self.call_timeout_s, metadata=self._macaroon.metadata
            )

        try:
            resp = await self._unary("AddInvoice", add)
        except DuplicateInvoice:
            if attempts <= 1:
                raise
            existing = await self.lookup_invoice(hashlib.sha256(preimage).digest())
            if existing.amount_msat != amount_msat or existing.memo != memo:
                raise
            return existing
        # One round trip: the invoice as LookupInvoice would show it now (OPEN), from the request and
        # the node's answer (its hash, payment request and add index; time and expiry as it signed them).
        created, expiry = timestamp_and_expiry_of(resp.payment_request)
        created_at = datetime.fromtimestamp(created, UTC)
        return Invoice(
            payment_hash=bytes(resp.r_hash),
            bolt11=resp.payment_request,
            amount_msat=amount_msat,
            memo=memo,
            state=InvoiceState.OPEN,
            created_at=created_at,
            expires_at=created_at + timedelta(seconds=expiry),
            settled_at=None,
            amount_paid_msat=0,
            add_index=resp.add_index,
            settle_index=0,
            is_hold=False,
            preimage=preimage,
        )

    async def lookup_invoice(self, payment_hash: bytes) -> Invoice:
        _check_hash(payment_hash)
        req = ln.PaymentHash(r_hash=payment_hash)
        resp = await self._unary(
            "LookupInvoice",
            lambda: self._ln.LookupInvoice(
                req, timeout=self.call_timeout_s, metadata=self._macaroon.metadata
            ),
        )
        return invoice_from_proto(resp, self._hold_hashes)

    async def create_hold_invoice(
        self,
        payment_hash: bytes,
        amount_msat: int,
        memo: str = "",
        expiry_s: int = DEFAULT_INVOICE_EXPIRY_S,
        cltv_expiry: int = DEFAULT_HOLD_CLTV_EXPIRY,
    ) -> Invoice:
        _check_hash(payment_hash)
        _check_amount(amount_msat)
        req = inv.AddHoldInvoiceRequest(
            hash=payment_hash, value_msat=amount_msat, memo=memo, expiry=expiry_s, cltv_expiry=cltv_expiry
        )
        self._hold_hashes.add(payment_hash)
        attempts = 0

        async def add() -> Any:
            nonlocal attempts
            attempts += 1
            return await self._inv.AddHoldInvoice(
                req, timeout=self.call_timeout_s, metadata=self._macaroon.metadata
            )

        try:
            await self._unary("AddHoldInvoice", add)
        except DuplicateInvoice:
            # If an earlier attempt of this very call reached LND before the connection broke, the
            # invoice is ours: accept it when it matches.
            if attempts <= 1:
                raise
            existing = await self.lookup_invoice(payment_hash)
            if existing.amount_msat != amount_msat or existing.memo != memo:
                raise
        return await self.lookup_invoice(payment_hash)

    async def settle_hold_invoice(self, preimage: bytes) -> None:
        if len(preimage) != 32:
            raise InvalidRequest("preimage must be 32 bytes")
        req = inv.SettleInvoiceMsg(preimage=preimage)
        await self._unary(
            "SettleInvoice",
            lambda: self._inv.SettleInvoice(
                req, timeout=self.call_timeout_s, metadata=self._macaroon.metadata
            ),
        )

    async def cancel_hold_invoice(self, payment_hash: bytes) -> None:
        _check_hash(payment_hash)
        req = inv.CancelInvoiceMsg(payment_hash=payment_hash)
        await self._unary(
            "CancelInvoice",
            lambda: self._inv.CancelInvoice(
                req, timeout=self.call_timeout_s, metadata=self._macaroon.metadata
            ),
        )

    async def list_invoices(
        self,
        index_offset: int = 0,
        max_invoices: int = 1000,
        pending_only: bool = False,
        reverse: bool = False,
    ) -> tuple[list[Invoice], int, int]:
        """One page of ListInvoices: (invoices, first_index_offset, last_index_offset)."""
        req = ln.ListInvoiceRequest(
            index_offset=index_offset,
            num_max_invoices=max_invoices,
            pending_only=pending_only,
            reversed=reverse,
        )
        resp = await self._unary(
            "ListInvoices",
            lambda: self._ln.ListInvoices(req, timeout=self.call_timeout_s, metadata=self._macaroon.metadata),
        )
        invoices = [invoice_from_proto(m, self._hold_hashes) for m in resp.invoices]
        return invoices, resp.first_index_offset, resp.last_index_offset

    async def _all_invoices(self) -> AsyncIterator[Invoice]:
        offset = 0
        while True:
            page, _, last = await self.list_invoices(index_offset=offset, max_invoices=1000)
            for invoice in page:
                yield invoice
            if len(page) < 1000:
                return
            offset = last

    # ---- invoice stream --------------------------------------------------------------------------
    async def invoice_updates(
        self, cursor: InvoiceCursor, *, on_subscribed: Callable[[bool], None] | None = None
    ) -> AsyncIterator[Invoice]:
        """See :meth:`lightning.backend.Backend.invoice_updates`.

        ``on_subscribed(True)`` once a SubscribeInvoices call is open on a connected channel (an idle
        node sends nothing, not even headers, so this is what "subscribed" can mean), ``False`` when
        it ends or fails (the stream then retries by itself).

        LND replays "index > n" atomically with the live stream, but treats 0 as "no backlog". So
        while an index is 0, the backend reads the history with ListInvoices first (the unsettled
        invoices as adds when ``add_index`` is 0, the settled ones in settle order when
        ``settle_index`` is 0), then subscribes from the indexes it has seen. Once the node has
        any invoice and any settle, nothing can be missed across reconnects. On a node with none,
        an event in the instant between that read and the subscription is found by a second read
        when the first message arrives (which proves the subscription is registered): it is then
        delivered late, with the next event. The caller should still reconcile its open invoices
        with ``lookup_invoice`` at start-up.
        """
        add, settle = cursor.add_index, cursor.settle_index
        attempt = 0
        while True:
            try:
                if add == 0 or settle == 0:
                    scanned = [i async for i in self._all_invoices()]
                    if attempt:
                        self._reconnects += 1
                        attempt = 0
                    if add == 0:
                        for invoice in scanned:
                            if invoice.state is not InvoiceState.SETTLED:
                                yield invoice
                        add = max([0, *(i.add_index for i in scanned)])
                    if settle == 0:
                        settled = [i for i in scanned if i.state is InvoiceState.SETTLED]
                        for invoice in sorted(settled, key=lambda i: i.settle_index):
                            if invoice.settle_index > settle:
                                settle = invoice.settle_index
                                yield invoice
                sub_add, sub_settle = add, settle
                seen_adds: set[int] = set()
                self._open_channel()
                stream = self._ln.SubscribeInvoices(
                    ln.InvoiceSubscription(add_index=add, settle_index=settle),
                    metadata=self._macaroon.metadata,
                )
                rescan = sub_add == 0 or sub_settle == 0
                subscribed = (
                    asyncio.create_task(self._report_subscribed(stream, on_subscribed))
                    if on_subscribed is not None
                    else None
                )
                try:
                    async for msg in stream:
                        if attempt:
                            self._reconnects += 1
                        attempt = 0
                        self._ok()
                        if rescan:
                            # The first message proves the subscription is registered: whatever landed
                            # between our ListInvoices read and the registration is visible now.
                            rescan = False
                            scanned = [i async for i in self._all_invoices()]
                            if sub_add == 0:
                                for invoice in scanned:
                                    if invoice.state is not InvoiceState.SETTLED and invoice.add_index > add:
                                        add = invoice.add_index
                                        yield invoice
                                add = max([add, *(i.add_index for i in scanned)])
                            if sub_settle == 0:
                                settled = [i for i in scanned if i.state is InvoiceState.SETTLED]
                                for invoice in sorted(settled, key=lambda i: i.settle_index):
                                    if invoice.settle_index > settle:
                                        settle = invoice.settle_index
                                        yield invoice
                        invoice = invoice_from_proto(msg, self._hold_hashes)
                        if invoice.state is InvoiceState.SETTLED:
                            if invoice.add_index > sub_add and invoice.add_index not in seen_adds:
                                # The add replay shows an invoice settled meanwhile; the settle replay
                                # delivers it again, in settle order: take it from there.
                                seen_adds.add(invoice.add_index)
                                if sub_settle > 0:
                                    continue
                            if invoice.settle_index <= settle:
                                continue
                            settle = invoice.settle_index
                            yield invoice
                        else:
                            seen_adds.add(invoice.add_index)
                            if invoice.add_index <= add:
                                continue
                            add = invoice.add_index
                            yield invoice
                finally:
                    stream.cancel()  # stop the server-side stream now, not at garbage collection
                    if subscribed is not None:
                        subscribed.cancel()
                    if on_subscribed is not None:
                        on_subscribed(False)
                raise BackendUnavailable("invoice subscription ended by the node")
            except grpc.aio.AioRpcError as exc:
                err = map_rpc_error(exc)
                if not isinstance(err, BackendUnavailable):
                    self._answered(err)
                    raise err from exc
                await self._stream_backoff(err, "SubscribeInvoices", attempt)
                attempt += 1
            except BackendUnavailable as err:
                await self._stream_backoff(err, "SubscribeInvoices", attempt)
                attempt += 1

    async def _report_subscribed(self, stream: Any, on_subscribed: Callable[[bool], None]) -> None:
        """Tell ``on_subscribed`` once the channel carrying ``stream`` is connected and the call is
        still open."""
        channel = self._channel
        if channel is None:
            return
        await channel.channel_ready()
        if not stream.done():  # (a call that fails later reports False from invoice_updates)
            on_subscribed(True)

    async def current_cursor(self) -> InvoiceCursor:
        """The node's latest add and settle indexes: start ``invoice_updates`` here to skip history.

        Reads every invoice once to find the highest settle index (LND keeps no counter of it)."""
        add = settle = 0
        async for invoice in self._all_invoices():
            add = max(add, invoice.add_index)
            settle = max(settle, invoice.settle_index)
        return InvoiceCursor(add, settle)

    async def _stream_backoff(self, err: LightningError, what: str, attempt: int) -> None:
        delay = self.retry.delay(attempt)
        self._unavailable(err, what, delay)
        await asyncio.sleep(delay)

    async def watch_invoice(self, payment_hash: bytes) -> AsyncIterator[Invoice]:
        current = await self.lookup_invoice(payment_hash)  # raises InvoiceNotFound
        last: tuple[Any, ...] | None = None
        attempt = 0
        while True:
            try:
                self._open_channel()
                stream = self._inv.SubscribeSingleInvoice(
                    inv.SubscribeSingleInvoiceRequest(r_hash=payment_hash), metadata=self._macaroon.metadata
                )
                try:
                    async for msg in stream:
                        if attempt:
                            self._reconnects += 1
                        attempt = 0
                        self._ok()
                        current = invoice_from_proto(msg, self._hold_hashes)
                        key = (current.state, current.amount_paid_msat, current.settle_index)
                        if key != last:
                            last = key
                            yield current
                        if current.state.is_final:
                            return
                finally:
                    stream.cancel()  # stop the server-side stream now, not at garbage collection
                raise BackendUnavailable("invoice subscription ended by the node")
            except grpc.aio.AioRpcError as exc:
                err = map_rpc_error(exc)
                if not isinstance(err, BackendUnavailable):
                    self._answered(err)
                    raise err from exc
                await self._stream_backoff(err, "SubscribeSingleInvoice", attempt)
                attempt += 1
            except BackendUnavailable as err:
                await self._stream_backoff(err, "SubscribeSingleInvoice", attempt)
                attempt += 1

    # ---- payments --------------------------------------------------------------------------------
    async def pay_invoice(
        self, bolt11_invoice: str, fee_limit_msat: int, timeout_s: int = 60, amount_msat: int | None = None
    ) -> PaymentResult:
        """Pay via SendPaymentV2 and wait for the final state (a held payment waits for the payee).

        Idempotent per payment hash: after a broken connection it follows the payment with
        TrackPaymentV2, and paying an invoice this node already paid returns that payment.
        Raises :class:`PaymentFailed` (``.reason``, ``.result``) when the payment fails.
        """
        payment_hash = payment_hash_of(bolt11_invoice)  # raises InvalidRequest
        if fee_limit_msat < 0:
            raise InvalidRequest("fee_limit_msat must not be negative")
        if timeout_s <= 0:
            raise InvalidRequest("timeout_s must be positive")
        send_req = router.SendPaymentRequest(
            payment_request=bolt11_invoice,
            fee_limit_msat=fee_limit_msat,
            timeout_seconds=int(timeout_s),
            amt_msat=amount_msat or 0,
            no_inflight_updates=True,
        )
        track_req = router.TrackPaymentRequest(payment_hash=payment_hash, no_inflight_updates=True)
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        tracking = False
        attempt = 0
        while True:
            self._open_channel()
            try:
                stream = (
                    self._router.TrackPaymentV2(track_req, metadata=self._macaroon.metadata)
                    if tracking
                    else self._router.SendPaymentV2(send_req, metadata=self._macaroon.metadata)
                )
                try:
                    async for msg in stream:
                        self._ok()
                        deadline = None
                        result = payment_from_proto(msg, payment_hash)
                        if result.status is PaymentStatus.SUCCEEDED:
                            return result
                        if result.status is PaymentStatus.FAILED:
                            raise PaymentFailed(
                                result.failure_reason or "FAILURE_REASON_ERROR", result=result
                            )
                finally:
                    stream.cancel()  # stop the server-side stream now, not at garbage collection
                raise BackendUnavailable("payment stream ended before a final state")
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                    tracking = True  # already paid or in flight from this node: follow it
                    self._ok()
                    continue
                if tracking and exc.code() == grpc.StatusCode.NOT_FOUND:
                    tracking = False  # the earlier attempt never reached the node: send it
                    self._ok()
                    continue
                err = map_rpc_error(exc)
                if not isinstance(err, BackendUnavailable):
                    self._answered(err)
                    raise err from exc
                unavailable: BackendUnavailable = err
            except BackendUnavailable as err:
                unavailable = err
            if deadline is None:
                deadline = loop.time() + self.retry.unavailable_timeout_s
            delay = self.retry.delay(attempt)
            if loop.time() + delay >= deadline:
                self._unavailable(unavailable, "SendPaymentV2", None)
                raise unavailable
            self._unavailable(unavailable, "SendPaymentV2", delay)
            await asyncio.sleep(delay)
            attempt += 1
            tracking = True  # we cannot tell whether the node got it: look before sending again


def _check_hash(payment_hash: bytes) -> None:
    if not isinstance(payment_hash, bytes | bytearray) or len(payment_hash) != 32:
        raise InvalidRequest("payment_hash must be 32 bytes")


def _check_amount(amount_msat: int) -> None:
    if not isinstance(amount_msat, int) or isinstance(amount_msat, bool) or amount_msat < 0:
        raise InvalidRequest("amount_msat must be a non-negative int")
