"""The operator's login to the dashboard: the API key, checked once, becomes a signed HttpOnly cookie.

The cookie (``SameSite=Strict``, path ``/dashboard``) holds when it was issued, a random nonce and an
HMAC of both under a server secret kept in the data directory; it never holds the key. Each login has
its own CSRF token (an HMAC of its nonce) that every command from the page must carry in a form field
or the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from fastapi import Request, Response

from csms.security import data_secret
from csms.web.pages import whole_number

COOKIE = "sw_operator"
PATH = "/dashboard"
MAX_AGE_S = 12 * 3600
SECRET_FILE = "web-login.key"


@dataclass(frozen=True)
class Login:
    nonce: str
    csrf: str


def _secret(request: Request) -> bytes:
    """The signing key of logins: the server secret (read from the data directory on each use, a few
    bytes, so that the processes of one machine agree on it even if two created it at once) bound to the
    operator key's digest, so that ``csms api-key --rotate`` ends every login made with the old key."""
    key_digest: bytes = request.app.state.api_key.digest()
    if not key_digest:
        return b""
    server = data_secret(request.app.state.settings.data_dir, SECRET_FILE)
    return hmac.new(server, key_digest, hashlib.sha256).digest()


def _mac(secret: bytes, text: str) -> str:
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


def log_in(request: Request, response: Response) -> Login:
    secret = _secret(request)
    issued, nonce = int(time.time()), secrets.token_urlsafe(18)
    value = f"{issued}.{nonce}.{_mac(secret, f'{issued}.{nonce}')}"
    response.set_cookie(
        COOKIE,
        value,
        max_age=MAX_AGE_S,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return Login(nonce, _mac(secret, f"csrf.{nonce}")[:32])


def log_out(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")


def current(request: Request) -> Login | None:
    """The operator's login carried by this request, if it is valid and not expired."""
    value = request.cookies.get(COOKIE, "")
    parts = value.split(".")
    if len(parts) != 3 or whole_number(parts[0], 2**63 - 1) is None:
        return None
    issued, nonce, mac = parts
    secret = _secret(request)
    if not secret:  # no usable operator key: nobody is logged in
        return None
    if not hmac.compare_digest(mac, _mac(secret, f"{issued}.{nonce}")):
        return None
    if not 0 <= time.time() - int(issued) <= MAX_AGE_S:
        return None
    return Login(nonce, _mac(secret, f"csrf.{nonce}")[:32])


def csrf_ok(login: Login, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(presented, login.csrf)
