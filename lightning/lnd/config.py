"""Connection settings for an LND node: host:port + TLS cert + macaroon, or an lndconnect URI.

The macaroon is a secret: it is never part of ``repr()`` and never logged.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

if TYPE_CHECKING:
    from lightning.simnet import Simnet

DEFAULT_GRPC_PORT = 10009
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class LndConfigError(ValueError):
    """The settings cannot describe a usable LND connection (the message names the problem)."""


@dataclass(frozen=True)
class LndConfig:
    grpc_address: str  # "host:port"
    tls_cert_pem: bytes | None  # None: trust the system CAs (an LND behind a CA-signed cert)
    macaroon: bytes = field(repr=False)  # raw macaroon bytes (sent hex-encoded)
    tls_server_name: str | None = None  # override the TLS name checked against the cert

    def __post_init__(self) -> None:
        if not self.macaroon:
            raise LndConfigError("macaroon is empty")
        _split_host_port(self.grpc_address)

    @classmethod
    def from_paths(cls, grpc_address: str, tls_cert_path: str | Path, macaroon_path: str | Path) -> LndConfig:
        cert = _read(tls_cert_path, "TLS cert")
        if b"-----BEGIN CERTIFICATE-----" not in cert:
            try:
                cert = _der_to_pem(cert)
            except ValueError as exc:
                raise LndConfigError(f"TLS cert {tls_cert_path} is neither PEM nor DER") from exc
        macaroon = _read(macaroon_path, "macaroon")
        stripped = macaroon.strip()
        # Accept a hex-encoded macaroon file too (some setups export it that way).
        if stripped and all(c in b"0123456789abcdefABCDEF" for c in stripped) and len(stripped) % 2 == 0:
            macaroon = bytes.fromhex(stripped.decode())
        return cls(grpc_address=grpc_address, tls_cert_pem=cert, macaroon=macaroon)

    @classmethod
    def from_lndconnect(cls, uri: str) -> LndConfig:
        parsed = parse_lndconnect(uri)
        return cls(
            grpc_address=parsed.grpc_address, tls_cert_pem=parsed.tls_cert_pem, macaroon=parsed.macaroon
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, prefix: str = "CSMS_") -> LndConfig:
        """``{prefix}LND_CONNECT`` (lndconnect URI), else ``{prefix}LND_GRPC`` + ``LND_TLS_CERT`` +
        ``LND_MACAROON`` (paths)."""
        env = os.environ if environ is None else environ
        uri = env.get(f"{prefix}LND_CONNECT", "").strip()
        if uri:
            return cls.from_lndconnect(uri)
        names = (f"{prefix}LND_GRPC", f"{prefix}LND_TLS_CERT", f"{prefix}LND_MACAROON")
        missing = [n for n in names if not env.get(n, "").strip()]
        if missing:
            raise LndConfigError(
                f"set {prefix}LND_CONNECT, or all of {', '.join(names)} (missing: {', '.join(missing)})"
            )
        return cls.from_paths(env[names[0]].strip(), env[names[1]].strip(), env[names[2]].strip())

    @classmethod
    def from_simnet(cls, simnet: Simnet, node: str, kind: str = "admin") -> LndConfig:
        return cls.from_paths(simnet.address, simnet.tls_cert_path, simnet.macaroon_path(node, kind))


@dataclass(frozen=True)
class LndConnect:
    host: str
    port: int
    tls_cert_pem: bytes | None
    macaroon: bytes = field(repr=False)

    @property
    def grpc_address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_lndconnect(uri: str) -> LndConnect:
    """Parse ``lndconnect://host[:port]?cert=<base64url DER>&macaroon=<base64url>``.

    As lndconnect defines: the cert is the DER certificate, base64url without padding (optional: when
    absent the node's cert must be trusted by the system CAs); the macaroon is base64url (no padding).
    The port defaults to 10009.
    """
    text = uri.strip()
    parts = urlsplit(text)
    if parts.scheme.lower() != "lndconnect":
        raise LndConfigError("not an lndconnect URI (expected lndconnect://host:port?...)")
    host = parts.hostname
    if not host:
        raise LndConfigError("lndconnect URI has no host")
    try:
        port = parts.port or DEFAULT_GRPC_PORT
    except ValueError as exc:
        raise LndConfigError(f"lndconnect URI has an invalid port: {exc}") from exc
    # parse_qs would turn '+' into ' '; base64url has no '+', but be lenient with standard base64.
    query = parse_qs(parts.query.replace("+", "%2B"), keep_blank_values=True)
    macs = query.get("macaroon", [])
    if len(macs) != 1 or not macs[0]:
        raise LndConfigError("lndconnect URI needs exactly one non-empty macaroon parameter")
    macaroon = _b64decode(macs[0], "macaroon")
    cert_pem: bytes | None = None
    certs = query.get("cert", [])
    if len(certs) > 1:
        raise LndConfigError("lndconnect URI has more than one cert parameter")
    if certs and certs[0]:
        raw = unquote(certs[0])
        if "BEGIN CERTIFICATE" in raw:  # some tools put a PEM in there
            cert_pem = raw.encode()
        else:
            try:
                cert_pem = _der_to_pem(_b64decode(raw, "cert"))
            except ValueError as exc:
                raise LndConfigError(f"lndconnect cert is not a DER certificate: {exc}") from exc
    return LndConnect(host=host, port=port, tls_cert_pem=cert_pem, macaroon=macaroon)


def _b64decode(value: str, what: str) -> bytes:
    text = unquote(value).strip().replace("\n", "")
    text = text.replace("+", "-").replace("/", "_").rstrip("=")  # accept standard base64 as well
    if not _B64URL.fullmatch(text):
        raise LndConfigError(f"lndconnect {what} is not valid base64url")
    try:
        out = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise LndConfigError(f"lndconnect {what} is not valid base64url") from exc
    if not out:
        raise LndConfigError(f"lndconnect {what} is empty")
    return out


def _der_to_pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)


def _read(path: str | Path, what: str) -> bytes:
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise LndConfigError(f"cannot read {what} {p}: {exc.strerror or exc}") from exc
    if not data:
        raise LndConfigError(f"{what} {p} is empty")
    return data


def _split_host_port(address: str) -> tuple[str, int]:
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep:
            raise LndConfigError(f"gRPC address {address!r} must be host:port")
    try:
        port = int(port_text)
    except ValueError as exc:
        raise LndConfigError(f"gRPC address {address!r} has an invalid port") from exc
    if not host or not 0 < port < 65536:
        raise LndConfigError(f"gRPC address {address!r} must be host:port")
    return host, port
