"""Who is asking: the operator (API key), a payer (payer token) or a driver (session token).

A driver sees only their own session, a payer only the sessions of its id tags; the operator sees all.
Tokens are held as SHA-256 digests; the plain token is shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

from fastapi import Request
from sqlalchemy import select

from csms.api.auth import bearer_token
from csms.api.problems import Problem
from csms.db.models import ChargingSession, Payer, Settlement
from csms.security import ApiKey


@dataclass(frozen=True)
class Principal:
    kind: Literal["operator", "payer", "session"]
    payer_id: str | None = None
    session_number: int | None = None

    def may_see(self, session: ChargingSession, settlement: Settlement | None) -> bool:
        if self.kind == "operator":
            return True
        if self.kind == "payer":
            return settlement is not None and settlement.payer_id == self.payer_id
        return self.session_number == session.number


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(24)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def principal_of(request: Request, token: str | None = None) -> Principal:
    """The caller, from ``Authorization: Bearer`` (or ``token``, for browsers' EventSource)."""
    presented = bearer_token(request) or token
    if presented is None:
        raise Problem(
            401,
            "Authentication required",
            "send Authorization: Bearer <session token, payer token or operator key>",
            headers={"WWW-Authenticate": 'Bearer realm="satwatt"'},
        )
    api_key: ApiKey = request.app.state.api_key
    if api_key.matches(presented):
        return Principal("operator")
    hashed = digest(presented)
    async with request.app.state.service.db() as db:
        payer = await db.scalar(select(Payer.id).where(Payer.token_hash == hashed))
        if payer is not None:
            return Principal("payer", payer_id=payer)
        session_number = await db.scalar(
            select(Settlement.session_number).where(Settlement.token_hash == hashed)
        )
    if session_number is not None:
        return Principal("session", session_number=session_number)
    raise Problem(403, "Forbidden", "this token gives no access here")


async def caller_of(request: Request) -> Principal:
    """FastAPI dependency: the caller, from ``Authorization: Bearer`` only (tokens stay out of URLs)."""
    return await principal_of(request)


async def operator_of(request: Request) -> Principal:
    """FastAPI dependency for what only the operator may see, told apart from no credentials: none is
    401, a payer's or a driver's token (or any other) is 403."""
    caller = await principal_of(request)
    if caller.kind != "operator":
        raise Problem(403, "Forbidden", "only the operator's API key gives access here")
    return caller
