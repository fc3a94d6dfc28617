"""Lightning backends: one :class:`Backend` interface; ``lnd`` (gRPC) and ``simnet`` (simulated LND)."""

from lightning.backend import (
    DEFAULT_HOLD_CLTV_EXPIRY,
    DEFAULT_INVOICE_EXPIRY_S,
    Backend,
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
    InvoiceAlreadyCanceled,
    InvoiceAlreadySettled,
    InvoiceNotFound,
    InvoiceStillOpen,
    LightningError,
    PaymentFailed,
    PaymentInFlight,
    PermissionDenied,
)
from lightning.payreq import PayReq, decode_payreq

__all__ = [
    "DEFAULT_HOLD_CLTV_EXPIRY",
    "DEFAULT_INVOICE_EXPIRY_S",
    "Backend",
    "BackendHealth",
    "BackendUnavailable",
    "DuplicateInvoice",
    "InvalidRequest",
    "Invoice",
    "InvoiceAlreadyCanceled",
    "InvoiceAlreadySettled",
    "InvoiceCursor",
    "InvoiceNotFound",
    "InvoiceState",
    "InvoiceStillOpen",
    "LightningError",
    "NodeInfo",
    "PayReq",
    "PaymentFailed",
    "PaymentInFlight",
    "PaymentResult",
    "PaymentStatus",
    "PermissionDenied",
    "decode_payreq",
]
