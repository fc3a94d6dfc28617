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


_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_REV = {c: i for i, c in enumerate(_CHARSET)}


def _bech32_polymod(values: list[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if ((top >> i) & 1) else 0
    return chk


def payment_hash_of(payment_request: str) -> bytes:
    """The payment hash of a BOLT11 invoice, fast (bech32 checksum checked, signature not).

    Full decoding with the ``bolt11`` package costs several milliseconds; a payer that only needs
    the hash to track its payment uses this. The node validates the invoice itself.
    """
    text = payment_request.strip().lower()
    pos = text.rfind("1")
    if not text.startswith("ln") or pos < 3 or len(text) - pos < 7 + 6 + 1:
        raise InvalidRequest("invalid payment request: not a bech32 BOLT11 string")
    hrp, data_part = text[:pos], text[pos + 1 :]
    try:
        words = [_CHARSET_REV[c] for c in data_part]
    except KeyError as exc:
        raise InvalidRequest("invalid payment request: bad bech32 character") from exc
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    if _bech32_polymod(expanded + words) != 1:
        raise InvalidRequest("invalid payment request: bad checksum")
    words = words[:-6]  # checksum
    i = 7  # timestamp
    end = len(words) - 104  # signature (65 bytes = 104 words)
    while i + 3 <= end:
        tag, length = words[i], words[i + 1] * 32 + words[i + 2]
        field = words[i + 3 : i + 3 + length]
        i += 3 + length
        if tag == 1 and length == 52:  # 'p': 256 bits in 52 words (4 padding bits)
            acc = 0
            for w in field:
                acc = acc << 5 | w
            return (acc >> 4).to_bytes(32, "big")
    raise InvalidRequest("invalid payment request: no payment hash")
