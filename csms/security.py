"""Secrets: charger passwords (hashed with scrypt) and the operator's API key.

Nothing here logs a secret. Verifying a scrypt hash costs tens of milliseconds of CPU, so it runs in
a worker thread, and a successful verification is remembered in the charger's row (as a digest keyed
with a secret of the data directory, never the password), so a reconnect storm of a whole fleet, even
after a restart, does not re-run scrypt for every charger.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import secrets
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

log = logging.getLogger("csms.security")

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
API_KEY_HASH_FILE = "api-key.sha256"


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    encoded_salt, encoded_digest = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${encoded_salt}${encoded_digest}"


# OCPP's passwordString characters (2.0.1 part 2, primitive datatypes); 1.6 takes any bytes (as hex)
CHARGER_PASSWORD_PATTERN = r"^[A-Za-z0-9*\-_=:+|@.]+$"
CHARGER_PASSWORD_MIN = 16  # both versions
CHARGER_PASSWORD_MAX = {"1.6": 20, "2.0.1": 40}  # 1.6: AuthorizationKey is at most 40 hex digits
_GENERATED_ALPHABET = string.ascii_letters + string.digits


def generate_charger_password(length: int = 20) -> str:
    """A random charger password (20 letters and digits, about 119 bits) that both versions accept."""
    return "".join(secrets.choice(_GENERATED_ALPHABET) for _ in range(length))


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest_b64)
        digest = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt_b64),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


class PasswordVerifier:
    """Checks charger passwords: against the keyed digest of the last password that passed (a few
    microseconds), else with scrypt in a worker thread, at most ``SCRYPT_AT_ONCE`` at a time (each
    takes tens of milliseconds and 16 MB)."""

    SCRYPT_AT_ONCE = 2

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._slots: asyncio.Semaphore | None = None
        self.scrypt_checks = 0

    def check_digest(self, charger_id: str, password: str, stored: str) -> str:
        """What a successful check leaves behind: bound to the charger, its stored hash (a new password
        invalidates it) and the password, keyed with a secret the database does not hold."""
        message = "\0".join((charger_id, stored, password)).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    async def verify(
        self, charger_id: str, password: str, stored: str, remembered: str | None = None
    ) -> tuple[bool, str | None]:
        """Whether ``password`` is right; and the digest to remember when scrypt just confirmed it."""
        digest = self.check_digest(charger_id, password, stored)
        if remembered is not None and hmac.compare_digest(remembered, digest):
            return True, None
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.SCRYPT_AT_ONCE)
        async with self._slots:
            self.scrypt_checks += 1
            ok = await asyncio.to_thread(verify_password, password, stored)
        return ok, digest if ok else None


def data_secret(data_dir: Path, name: str) -> bytes:
    """A 32-byte server secret kept in the data directory (created on first use, mode 600)."""
    path = data_dir / name
    if path.is_file():
        return bytes.fromhex(path.read_text().strip())
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret.hex() + "\n")
    temporary.replace(path)
    return secret


def client_certificate_cn(scope: Mapping[str, Any]) -> str | None:
    """The common name of the client certificate a TLS connection presented (already verified against
    CSMS_TLS_CLIENT_CA in the TLS handshake), from the ASGI TLS extension; None without one."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    if not chain:
        return None
    try:
        certificate = x509.load_pem_x509_certificate(chain[0].encode())
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    if len(names) != 1 or not isinstance(names[0].value, str):
        return None  # none, or ambiguous: never guess which one names the charger
    return names[0].value


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class ApiKey:
    """The operator's bearer key, held only as its SHA-256 digest."""

    def __init__(self, digest: bytes) -> None:
        self._digest = digest

    @classmethod
    def from_plain(cls, key: str) -> ApiKey:
        return cls(_sha256(key))

    def matches(self, presented: str) -> bool:
        return hmac.compare_digest(_sha256(presented), self._digest)

    def digest(self) -> bytes:
        """The digest presented keys are checked against now (empty: none matches); other credentials
        made from the key, such as a dashboard login, are tied to it so that a new key ends them."""
        return self._digest


class StoredApiKey(ApiKey):
    """The key whose digest is kept in the data directory, re-read when the file changes.

    ``csms api-key --rotate`` replaces the file (a new inode); the running server notices on the next
    operator request (one ``stat``, microseconds) and from then on only the new key matches. A missing or
    damaged file matches nothing (fail closed) until a new key is made.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        super().__init__(b"")
        self._reload()

    def _reload(self) -> None:
        try:
            status = self.path.stat()
            seen = (status.st_ino, status.st_mtime_ns, status.st_size)
            if seen == self._seen:
                return
            digest = _read_digest(self.path)
        except (OSError, ValueError) as exc:
            if self._seen != (0, 0, 0):
                log.error(
                    "the API key file %s is unusable (%s): operator requests are refused until "
                    "`csms api-key --rotate` makes a new key",
                    self.path,
                    type(exc).__name__,
                )
            self._seen, self._digest = (0, 0, 0), b""
            return
        if self._seen is not None:
            log.info("the operator API key was changed (%s): the previous key no longer works", self.path)
        self._seen, self._digest = seen, digest

    def matches(self, presented: str) -> bool:
        self._reload()
        return bool(self._digest) and super().matches(presented)

    def digest(self) -> bytes:
        self._reload()
        return self._digest


def _read_digest(path: Path) -> bytes:
    """The SHA-256 digest kept in ``path`` (hex); ValueError if it holds none."""
    digest = bytes.fromhex(path.read_text().strip())
    if len(digest) != hashlib.sha256().digest_size:
        raise ValueError("not a SHA-256 digest")
    return digest


def generate_api_key() -> str:
    return "sw_" + secrets.token_urlsafe(32)


def load_or_create_api_key(data_dir: Path, configured: str | None) -> tuple[ApiKey, str | None]:
    """The API key to check requests against, and the new plain key when one was just generated.

    A configured key (CSMS_API_KEY) wins. Otherwise the digest stored in the data directory is used,
    and followed (:class:`StoredApiKey`); on first start a key is generated, only its digest is stored,
    and the plain key is returned once so that the caller prints it (``csms api-key --rotate`` makes a
    new one, which a running server takes at once).
    """
    if configured:
        return ApiKey.from_plain(configured), None
    path = data_dir / API_KEY_HASH_FILE
    if not path.is_file():
        _, key = rotate_api_key(data_dir)
        return StoredApiKey(path), key
    try:
        _read_digest(path)
    except ValueError:
        raise ValueError(f"{path} is damaged: delete it, or run `csms api-key --rotate`") from None
    return StoredApiKey(path), None


def rotate_api_key(data_dir: Path) -> tuple[ApiKey, str]:
    key = generate_api_key()
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / API_KEY_HASH_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(_sha256(key).hex() + "\n")
    temporary.chmod(0o600)
    temporary.replace(path)
    return ApiKey.from_plain(key), key
