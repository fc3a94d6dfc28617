"""Real macaroons (pymacaroons, serialized in the binary V2 format LND uses) for simnet nodes.

Each node has its own 32-byte root key. The macaroon identifier names the node and the permissions
(LND-style ``entity:action`` pairs), so it cannot be widened; holders may attenuate with a
``time-before <RFC 3339>`` first-party caveat, as LND allows. Any other caveat is refused.
The client sends the macaroon hex-encoded in the gRPC metadata key ``macaroon``, as with LND.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from collections.abc import Iterable

from pymacaroons import MACAROON_V2, Macaroon, Verifier  # type: ignore[import-untyped]
from pymacaroons.serializers import BinarySerializer  # type: ignore[import-untyped]

LOCATION = "lnd"

ADMIN_PERMS = frozenset(
    f"{entity}:{action}"
    for entity in ("address", "info", "invoices", "macaroon", "message", "offchain", "onchain", "peers")
    for action in ("read", "write")
)
INVOICE_PERMS = frozenset(
    {"invoices:read", "invoices:write", "address:read", "address:write", "onchain:read"}
)
READONLY_PERMS = frozenset(p for p in ADMIN_PERMS if p.endswith(":read"))

MACAROON_KINDS: dict[str, frozenset[str]] = {
    "admin": ADMIN_PERMS,
    "invoice": INVOICE_PERMS,
    "readonly": READONLY_PERMS,
}


class MacaroonError(Exception):
    pass


def bake(node: str, root_key: bytes, perms: Iterable[str]) -> bytes:
    """A macaroon for ``node`` granting ``perms``, as raw V2 binary bytes (what LND writes to disk)."""
    ident = json.dumps(
        {"node": node, "perms": sorted(perms), "nonce": secrets.token_hex(8)}, separators=(",", ":")
    )
    mac = Macaroon(location=LOCATION, identifier=ident, key=root_key, version=MACAROON_V2)
    return _to_raw(mac.serialize(serializer=BinarySerializer()))


def _to_raw(serialized: str | bytes) -> bytes:
    text = serialized.decode() if isinstance(serialized, bytes) else serialized
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def attenuate_time_before(raw: bytes, until: dt.datetime) -> bytes:
    mac = Macaroon.deserialize(base64.urlsafe_b64encode(raw).decode(), serializer=BinarySerializer())
    mac = mac.add_first_party_caveat(f"time-before {until.astimezone(dt.UTC).isoformat()}")
    return _to_raw(mac.serialize(serializer=BinarySerializer()))


def identify(raw: bytes) -> tuple[str, frozenset[str], Macaroon]:
    """Parse without verifying: (node, perms, macaroon)."""
    try:
        mac = Macaroon.deserialize(base64.urlsafe_b64encode(raw).decode(), serializer=BinarySerializer())
        ident = json.loads(mac.identifier_bytes.decode())
        return str(ident["node"]), frozenset(ident["perms"]), mac
    except Exception as exc:  # malformed bytes, wrong format
        raise MacaroonError(f"cannot decode macaroon: {exc}") from exc


def verify(mac: Macaroon, root_key: bytes, now: dt.datetime | None = None) -> None:
    current = now or dt.datetime.now(dt.UTC)

    def check(caveat: str) -> bool:
        if caveat.startswith("time-before "):
            try:
                until = dt.datetime.fromisoformat(caveat.removeprefix("time-before ").strip())
            except ValueError:
                return False
            return current < until
        return False

    verifier = Verifier()
    verifier.satisfy_general(check)
    try:
        verifier.verify(mac, root_key)
    except Exception as exc:
        raise MacaroonError(f"verification failed: {exc}") from exc


def valid_until(mac: Macaroon) -> dt.datetime | None:
    """The earliest ``time-before`` of a (verified) macaroon, None if it has none."""
    caveats = [c.caveat_id_bytes.decode("utf-8", "replace") for c in mac.first_party_caveats()]
    limits = [
        dt.datetime.fromisoformat(c.removeprefix("time-before ").strip())
        for c in caveats
        if c.startswith("time-before ")
    ]
    return min(limits) if limits else None
