"""Decode a BOLT11 payment request locally (no node needed): what a payer checks before paying."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import bolt11

from lightning.errors import InvalidRequest

_NETWORKS = {"bc": "mainnet", "tb": "testnet", "tbs": "signet", "bcrt": "regtest", "sb": "simnet"}


@dataclass(frozen=True, slots=True)
class PayReq:
    payment_hash: bytes
    amount_msat: int  # 0 = any amount
    payee: str  # hex pubkey (recovered from the signature when not tagged)
    description: str
    created_at: datetime
    expires_at: datetime
    network: str
    min_final_cltv_expiry: int

    def is_expired(self, now: datetime | None = None) -> bool:
        return (now or datetime.now(UTC)) >= self.expires_at


def decode_payreq(payment_request: str) -> PayReq:
    """Parse and check the signature of a BOLT11 invoice; raises InvalidRequest if it is not one."""
    try:
        d = bolt11.decode(payment_request.strip())
    except Exception as exc:
        raise InvalidRequest(f"invalid payment request: {exc}") from exc
    created = datetime.fromtimestamp(d.date, UTC)
    return PayReq(
        payment_hash=bytes.fromhex(d.payment_hash),
        amount_msat=int(d.amount_msat or 0),
        payee=d.payee or "",
        description=d.description or "",
        created_at=created,
        expires_at=created + timedelta(seconds=d.expiry),
        network=_NETWORKS.get(d.currency, d.currency),
        min_final_cltv_expiry=d.min_final_cltv_expiry,
    )
