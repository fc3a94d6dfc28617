"""LND protobuf messages and gRPC errors -> satwatt's types."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from lightning._protos import ln
from lightning.backend import Invoice, InvoiceState, PaymentResult, PaymentStatus
from lightning.errors import (
    BackendUnavailable,
    DuplicateInvoice,
    InvalidRequest,
    InvoiceAlreadyCanceled,
    InvoiceAlreadySettled,
    InvoiceNotFound,
    InvoiceStillOpen,
    LightningError,
    PaymentInFlight,
    PermissionDenied,
)

_STATES = {
    ln.Invoice.OPEN: InvoiceState.OPEN,
    ln.Invoice.SETTLED: InvoiceState.SETTLED,
    ln.Invoice.CANCELED: InvoiceState.CANCELED,
    ln.Invoice.ACCEPTED: InvoiceState.ACCEPTED,
}
_PAY_STATUS = {
    ln.Payment.IN_FLIGHT: PaymentStatus.IN_FLIGHT,
    ln.Payment.UNKNOWN: PaymentStatus.IN_FLIGHT,
    ln.Payment.SUCCEEDED: PaymentStatus.SUCCEEDED,
    ln.Payment.FAILED: PaymentStatus.FAILED,
}


def _ts(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def invoice_from_proto(msg: Any, hold_hashes: set[bytes] | None = None) -> Invoice:
    """lnrpc.Invoice -> Invoice.

    LND's Invoice has no hold flag: an invoice is a hold invoice if this backend created it as one,
    if it is ACCEPTED, or if it is unsettled without a preimage (LND knows no preimage for it).
    """
    state = _STATES.get(msg.state)
    if state is None:
        raise LightningError(f"unknown invoice state {msg.state}")
    created = _ts(msg.creation_date)
    r_hash = bytes(msg.r_hash)
    is_hold = (
        (hold_hashes is not None and r_hash in hold_hashes)
        or state is InvoiceState.ACCEPTED
        or (state is not InvoiceState.SETTLED and not msg.r_preimage)
    )
    return Invoice(
        payment_hash=r_hash,
        bolt11=msg.payment_request,
        amount_msat=msg.value_msat or msg.value * 1000,
        memo=msg.memo,
        state=state,
        created_at=created,
        expires_at=created + timedelta(seconds=msg.expiry or 3600),
        settled_at=_ts(msg.settle_date) if msg.settle_date and state is InvoiceState.SETTLED else None,
        amount_paid_msat=msg.amt_paid_msat,
        add_index=msg.add_index,
        settle_index=msg.settle_index,
        is_hold=is_hold,
        preimage=bytes(msg.r_preimage) or None,
        htlc_expiry_height=min((h.expiry_height for h in msg.htlcs if h.expiry_height), default=0),
    )


def payment_from_proto(msg: Any, payment_hash: bytes) -> PaymentResult:
    status = _PAY_STATUS.get(msg.status, PaymentStatus.IN_FLIGHT)
    preimage = bytes.fromhex(msg.payment_preimage) if msg.payment_preimage else b""
    reason = None
    if status is PaymentStatus.FAILED:
        reason = ln.PaymentFailureReason.Name(msg.failure_reason)
    return PaymentResult(
        payment_hash=bytes.fromhex(msg.payment_hash) if msg.payment_hash else payment_hash,
        preimage=preimage if status is PaymentStatus.SUCCEEDED and any(preimage) else None,
        status=status,
        fee_msat=msg.fee_msat,
        amount_msat=msg.value_msat,
        failure_reason=reason,
    )


_TRANSIENT_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
}
# LND's texts while it is not (yet) serving: start-up, locked wallet, shutting down.
_TRANSIENT_TEXTS = (
    "in the process of starting up",
    "wallet locked",
    "waiting to start",
    "server is still in the process",
    "not yet ready to accept calls",
    "shutting down",
)
_PERMISSION_TEXTS = (
    "permission denied",
    "verification failed",
    "expected 1 macaroon",
    "unable to decode macaroon",
    "cannot get macaroon",
    "invalid macaroon",
    "macaroon",
)


def map_rpc_error(exc: grpc.aio.AioRpcError) -> LightningError:
    """A gRPC error from LND -> the typed error (LND uses UNKNOWN with a text for most errors)."""
    code = exc.code()
    details = exc.details() or ""
    text = details.lower()
    message = f"{code.name}: {details}" if details else code.name
    if code in _TRANSIENT_CODES or any(t in text for t in _TRANSIENT_TEXTS):
        return BackendUnavailable(message)
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED) or any(
        t in text for t in _PERMISSION_TEXTS
    ):
        return PermissionDenied(message)
    if "invoice with payment hash already exists" in text or "payment addr already exists" in text:
        return DuplicateInvoice(message)
    if "invoice already settled" in text or "invoice is already paid" in text:
        return InvoiceAlreadySettled(message)
    if "invoice already canceled" in text:
        return InvoiceAlreadyCanceled(message)
    if "invoice still open" in text:
        return InvoiceStillOpen(message)
    if "payment is in transition" in text:
        return PaymentInFlight(message)
    if (
        code == grpc.StatusCode.NOT_FOUND
        or "unable to locate invoice" in text
        or "there are no existing invoices" in text
    ):
        return InvoiceNotFound(message)
    if code in (
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
    ):
        return InvalidRequest(message)
    return LightningError(message)
