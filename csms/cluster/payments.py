"""Payments in a cluster: one process follows the node's invoice stream, each settle is credited by the
owner of its session's charger.

The leader (the holder of the ``invoice-stream`` lease) runs the settlement engine's stream loop as one
process does, from the cursor persisted in the database. A settle whose invoice belongs to a session this
process does not own goes to the charger's live owner, which credits it and answers; the leader's
cursor passes a settle only once it is credited, so a leader change replays what was not, and crediting
twice changes nothing. A session whose charger nobody alive owns (its owner died, the charger has not
reconnected) is claimed by the leader itself, which loads it and credits the payment.
"""

from __future__ import annotations

import base64
import logging
from datetime import datetime
from typing import Any

from csms.cluster.lease import Lease
from csms.cluster.link import ClusterError, ClusterLink, RemoteFailure
from csms.cluster.registry import ClusterRegistry
from csms.settlement.engine import NotOwner, SettlementEngine
from lightning import Invoice, InvoiceState

log = logging.getLogger("csms.cluster")

STREAM_LEASE = "invoice-stream"
DELIVERY_ATTEMPTS = 5
DELIVERY_TIMEOUT_S = 30.0


def encode_invoice(invoice: Invoice) -> dict[str, Any]:
    def b64(value: bytes | None) -> str | None:
        return None if value is None else base64.b64encode(value).decode()

    return {
        "payment_hash": b64(invoice.payment_hash),
        "bolt11": invoice.bolt11,
        "amount_msat": invoice.amount_msat,
        "memo": invoice.memo,
        "state": invoice.state.name,
        "created_at": invoice.created_at.isoformat(),
        "expires_at": invoice.expires_at.isoformat(),
        "settled_at": None if invoice.settled_at is None else invoice.settled_at.isoformat(),
        "amount_paid_msat": invoice.amount_paid_msat,
        "add_index": invoice.add_index,
        "settle_index": invoice.settle_index,
        "is_hold": invoice.is_hold,
        "preimage": b64(invoice.preimage),
    }


def decode_invoice(wire: dict[str, Any]) -> Invoice:
    return Invoice(
        payment_hash=base64.b64decode(wire["payment_hash"]),
        bolt11=wire["bolt11"],
        amount_msat=int(wire["amount_msat"]),
        memo=wire["memo"],
        state=InvoiceState[wire["state"]],
        created_at=datetime.fromisoformat(wire["created_at"]),
        expires_at=datetime.fromisoformat(wire["expires_at"]),
        settled_at=None if wire["settled_at"] is None else datetime.fromisoformat(wire["settled_at"]),
        amount_paid_msat=int(wire["amount_paid_msat"]),
        add_index=int(wire["add_index"]),
        settle_index=int(wire["settle_index"]),
        is_hold=bool(wire["is_hold"]),
        preimage=None if wire["preimage"] is None else base64.b64decode(wire["preimage"]),
    )


class ClusterPayments:
    def __init__(self, link: ClusterLink, registry: ClusterRegistry, engine: SettlementEngine) -> None:
        self.link = link
        self.registry = registry
        self.engine = engine
        self.lease = Lease(link, STREAM_LEASE, engine.follow_payments, engine.stop_following_payments)
        engine.owns = registry.ownership.holds
        engine.deliver = self.deliver
        link.handle("payment", self._payment_request)

    def start(self) -> None:
        self.lease.start()

    async def stop(self) -> None:
        await self.lease.stop()

    async def deliver(self, charger_id: str, invoice: Invoice) -> None:
        """Have the owner of ``charger_id`` credit ``invoice``; when nobody alive owns the charger, this
        process claims it and credits it itself."""
        for _ in range(DELIVERY_ATTEMPTS):
            owner = await self.registry.ownership.owner(charger_id)
            if owner is None or owner.process_id == self.link.process_id:
                await self.registry.claim(charger_id, connected=False)
                await self.engine.on_payment(invoice, forwarded=True)
                return
            try:
                await self.link.request(
                    owner.process_id, "payment", {"invoice": encode_invoice(invoice)}, DELIVERY_TIMEOUT_S
                )
                return
            except ClusterError as exc:
                # gone, or no longer the owner: look again (a payment not credited stops the cursor)
                log.info("payment for %s: %s; trying again", charger_id, exc)
        raise ClusterError("contended", f"payment for {charger_id}: no owner took it")

    async def _payment_request(self, payload: dict[str, Any]) -> None:
        try:
            await self.engine.on_payment(decode_invoice(payload["invoice"]), forwarded=True)
        except NotOwner as exc:
            raise RemoteFailure("not_owner", f"{exc} is not owned here") from None
