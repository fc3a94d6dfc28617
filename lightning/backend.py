"""The one Lightning interface the rest of satwatt uses.

Money is always integer millisatoshi. Times are timezone-aware UTC datetimes.
Backends: :class:`lightning.lnd.LndBackend` (a real LND over gRPC, also used against the simnet).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol, runtime_checkable


class InvoiceState(enum.Enum):
    OPEN = "OPEN"
    SETTLED = "SETTLED"
    CANCELED = "CANCELED"
    ACCEPTED = "ACCEPTED"  # hold invoice: an HTLC is held, waiting for settle or cancel

    @property
    def is_final(self) -> bool:
        return self in (InvoiceState.SETTLED, InvoiceState.CANCELED)


class PaymentStatus(enum.Enum):
    IN_FLIGHT = "IN_FLIGHT"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class NodeInfo:
    pubkey: str
    alias: str
    network: str  # "mainnet", "testnet", "regtest", ...
    block_height: int
    synced: bool


@dataclass(frozen=True, slots=True)
class Invoice:
    payment_hash: bytes
    bolt11: str
    amount_msat: int
    memo: str
    state: InvoiceState
    created_at: datetime
    expires_at: datetime
    settled_at: datetime | None
    amount_paid_msat: int
    add_index: int
    settle_index: int
    is_hold: bool
    preimage: bytes | None = None  # known once settled (and always for ordinary invoices)
    # hold invoices: the earliest CLTV expiry height of the HTLCs held (0: none held). The real deadline
    # of a held payment, not the invoice's expiry: the node cancels the HTLC some blocks before it.
    htlc_expiry_height: int = 0

    @property
    def payment_hash_hex(self) -> str:
        return self.payment_hash.hex()


@dataclass(frozen=True, slots=True)
class InvoiceCursor:
    """Where an invoice stream resumes: the last add and settle indexes the caller processed.

    ``0`` means "from the beginning" (unlike LND's own "0 = no backlog"); use
    :meth:`Backend.current_cursor` to skip history. After handling an invoice from
    :meth:`Backend.invoice_updates`, persist ``cursor.advance(invoice)``.
    """

    add_index: int = 0
    settle_index: int = 0

    def advance(self, invoice: Invoice) -> InvoiceCursor:
        add = max(self.add_index, invoice.add_index)
        settle = self.settle_index
        if invoice.state is InvoiceState.SETTLED:
            settle = max(settle, invoice.settle_index)
        if add == self.add_index and settle == self.settle_index:
            return self
        return replace(self, add_index=add, settle_index=settle)


@dataclass(frozen=True, slots=True)
class PaymentResult:
    payment_hash: bytes
    preimage: bytes | None
    status: PaymentStatus
    fee_msat: int
    amount_msat: int
    failure_reason: str | None  # LND's PaymentFailureReason name, e.g. "FAILURE_REASON_NO_ROUTE"


@dataclass(frozen=True, slots=True)
class BackendHealth:
    """Snapshot for health endpoints and metrics."""

    reachable: bool
    last_error: str | None = None
    consecutive_failures: int = 0
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    reconnects: int = 0
    extra: dict[str, str] = field(default_factory=dict)


DEFAULT_INVOICE_EXPIRY_S = 86400
DEFAULT_HOLD_CLTV_EXPIRY = 80


@runtime_checkable
class Backend(Protocol):
    """What satwatt needs from a Lightning node. All errors are :mod:`lightning.errors` types."""

    @property
    def health(self) -> BackendHealth: ...

    async def get_info(self) -> NodeInfo: ...

    async def create_invoice(
        self,
        amount_msat: int,
        memo: str = "",
        expiry_s: int = DEFAULT_INVOICE_EXPIRY_S,
        preimage: bytes | None = None,
        description_hash: bytes | None = None,
    ) -> Invoice:
        """An ordinary invoice; with ``preimage`` (32 bytes) its hash is fixed, so creating it again
        raises DuplicateInvoice instead of making a second one. With ``description_hash`` (32 bytes,
        e.g. LNURL-pay's sha256 of its metadata) the invoice carries that ``h`` tag (``memo`` must then
        be empty: BOLT11 has one or the other)."""
        ...

    async def lookup_invoice(self, payment_hash: bytes) -> Invoice: ...

    def invoice_updates(
        self, cursor: InvoiceCursor, *, on_subscribed: Callable[[bool], None] | None = None
    ) -> AsyncIterator[Invoice]:
        """Adds and settles after ``cursor`` (index > cursor; 0 = from the very beginning), then
        live; survives node restarts and outages (resumes itself from what it yielded).
        ``on_subscribed`` is told True while the node's subscription is open (an idle node sends
        nothing for a long time) and False when it drops.

        Each invoice event is yielded once: an add as the invoice stands when replayed (OPEN, or
        ACCEPTED/CANCELED; an invoice settled meanwhile comes only as its settle), a settle with
        state SETTLED. Settles come in increasing ``settle_index`` order (gaps allowed), so
        persisting ``cursor.advance(invoice)`` after handling each one is safe to resume from.
        Hold-invoice ACCEPTED/CANCELED transitions are not streamed (LND does not); use
        :meth:`watch_invoice`. To skip history, start from :meth:`current_cursor`.
        """
        ...

    async def current_cursor(self) -> InvoiceCursor:
        """The node's latest indexes (a starting point that skips all history)."""
        ...

    async def create_hold_invoice(
        self,
        payment_hash: bytes,
        amount_msat: int,
        memo: str = "",
        expiry_s: int = DEFAULT_INVOICE_EXPIRY_S,
        cltv_expiry: int = DEFAULT_HOLD_CLTV_EXPIRY,
    ) -> Invoice: ...

    async def settle_hold_invoice(self, preimage: bytes) -> None: ...

    async def cancel_hold_invoice(self, payment_hash: bytes) -> None: ...

    def watch_invoice(self, payment_hash: bytes) -> AsyncIterator[Invoice]:
        """Current state first, then every change; ends after SETTLED or CANCELED."""
        ...

    async def pay_invoice(
        self, bolt11: str, fee_limit_msat: int, timeout_s: int = 60, amount_msat: int | None = None
    ) -> PaymentResult:
        """Pay and wait for the final state. Raises PaymentFailed(reason) if it fails."""
        ...

    async def close(self) -> None: ...
