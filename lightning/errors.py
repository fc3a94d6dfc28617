"""Typed errors of the Lightning backends.

Every backend raises these (never returns None, never swallows): the settlement engine can tell a
node that is down (:class:`BackendUnavailable`, retry later) from a request that can never succeed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightning.backend import PaymentResult


class LightningError(Exception):
    """Base class of every error a Lightning backend raises."""


class BackendUnavailable(LightningError):
    """The node cannot be reached, is starting up or is locked; retrying later may succeed."""


class InvoiceNotFound(LightningError):
    """No invoice with that payment hash (or preimage) exists on the node."""


class PermissionDenied(LightningError):
    """The macaroon does not grant this call (e.g. paying with an invoice macaroon)."""


class InvalidRequest(LightningError):
    """The node rejected the arguments (bad amount, bad payment request, expired invoice, ...)."""


class PaymentFailed(LightningError):
    """A payment reached a final failed state; ``reason`` is LND's failure reason name."""

    def __init__(self, reason: str, message: str = "", result: PaymentResult | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.result = result


class InvoiceAlreadySettled(LightningError):
    """The invoice is settled (e.g. cancelling a settled hold invoice)."""


class InvoiceAlreadyCanceled(LightningError):
    """The invoice is canceled (e.g. settling a canceled hold invoice)."""


class DuplicateInvoice(LightningError):
    """An invoice with this payment hash already exists."""


class InvoiceStillOpen(InvalidRequest):
    """A hold invoice cannot be settled before an HTLC has been accepted for it."""


class PaymentInFlight(LightningError):
    """A payment for this hash is already in flight from this node."""
