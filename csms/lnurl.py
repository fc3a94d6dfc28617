"""LNURL (lnurl/luds): LUD-01 bech32 encoding, LUD-17 schemes, LUD-06 metadata, the error body.

Pure functions; the endpoints are in :mod:`csms.api.lnurl`.

* LUD-01: an LNURL is the URL's UTF-8 bytes, bech32-encoded with the human-readable part ``lnurl``
  (no length limit), shown upper-case in QR codes (alphanumeric mode) behind ``lightning:``; a wallet
  that does not know LNURL follows the https fallback ``https://host/...?lightning=LNURL...``.
* LUD-17: the same URL with ``https`` replaced by ``lnurlp`` (pay) or ``lnurlw`` (withdraw).
* LUD-06: the invoice of a pay request carries ``sha256(metadata)`` (the metadata string's UTF-8 bytes,
  exactly as sent) as its description hash.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import quote, urlsplit

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
HRP = "lnurl"


class LnurlError(ValueError):
    """Not a valid LNURL."""


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            if (top >> i) & 1:
                chk ^= _GENERATOR[i]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, *, pad: bool) -> list[int]:
    acc = bits = 0
    out: list[int] = []
    maxv = (1 << to_bits) - 1
    for value in data:
        if value < 0 or value >> from_bits:
            raise LnurlError("invalid data")
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & maxv)
    elif bits >= from_bits or ((acc << (to_bits - bits)) & maxv):
        raise LnurlError("invalid padding")
    return out


def encode(url: str) -> str:
    """LUD-01: the URL as an upper-case bech32 string with the ``lnurl`` prefix."""
    data = _convert_bits(url.encode("utf-8"), 8, 5, pad=True)
    polymod = _polymod(_hrp_expand(HRP) + data + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return (HRP + "1" + "".join(_CHARSET[d] for d in data + checksum)).upper()


def decode(lnurl: str) -> str:
    """The URL an LNURL encodes (either case, not mixed); raises LnurlError."""
    text = lnurl.strip()
    if text.lower().startswith("lightning:"):
        text = text[len("lightning:") :]
    if text != text.lower() and text != text.upper():
        raise LnurlError("mixed case")
    text = text.lower()
    hrp, sep, rest = text.rpartition("1")
    if not sep or hrp != HRP or len(rest) < 6 or any(c not in _CHARSET for c in rest):
        raise LnurlError("not an lnurl")
    data = [_CHARSET.index(c) for c in rest]
    if _polymod(_hrp_expand(hrp) + data) != 1:
        raise LnurlError("bad checksum")
    return bytes(_convert_bits(data[:-6], 5, 8, pad=False)).decode("utf-8")


def lud17(url: str, kind: str) -> str:
    """LUD-17: ``lnurlp://`` or ``lnurlw://`` (``kind`` = "p" or "w") for an https (or http) URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise LnurlError("not an http(s) URL")
    return f"lnurl{kind}://{rest}"


def lightning_uri(url: str) -> str:
    """What a QR code shows: ``lightning:LNURL1...`` (upper case: QR alphanumeric mode)."""
    return "lightning:" + encode(url)


def https_fallback(url: str, base_url: str) -> str:
    """LUD-01's fallback: a web page of the service that carries the LNURL as ``?lightning=``."""
    return f"{base_url.rstrip('/')}/?lightning={quote(encode(url))}"


def pay_metadata(text: str, long_text: str | None = None) -> str:
    """LUD-06 metadata: a JSON array of [type, value] pairs, as the string sent (and hashed)."""
    entries: list[list[Any]] = [["text/plain", text]]
    if long_text:
        entries.append(["text/long-desc", long_text])
    return json.dumps(entries, separators=(",", ":"))


def description_hash(metadata: str) -> bytes:
    """LUD-06: ``sha256(utf8(metadata))``, the invoice's ``h`` tag."""
    return hashlib.sha256(metadata.encode("utf-8")).digest()


def wallet_refusal(base_url: str) -> str | None:
    """Why phone wallets will refuse the LNURLs of a server at ``base_url``, or None: LUD-01 allows
    https, and plain http only for an onion service."""
    parts = urlsplit(base_url)
    if parts.scheme == "https" or (parts.scheme == "http" and (parts.hostname or "").endswith(".onion")):
        return None
    return f"{base_url} is not https: phone wallets refuse LNURL over plain http (LUD-01)"


def error(reason: str) -> dict[str, str]:
    """The LNURL error body (every LUD): ``{"status": "ERROR", "reason": ...}``."""
    return {"status": "ERROR", "reason": reason}
