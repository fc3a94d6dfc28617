"""Who may call the REST API: the operator, with ``Authorization: Bearer <API key>``."""

from __future__ import annotations

from fastapi import Request

from csms.api.problems import Problem
from csms.security import ApiKey


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def require_operator(request: Request) -> None:
    """FastAPI dependency: the request must carry the operator's API key."""
    api_key: ApiKey = request.app.state.api_key
    token = bearer_token(request)
    if token is None:
        raise Problem(
            401,
            "Authentication required",
            "send Authorization: Bearer <operator API key>",
            headers={"WWW-Authenticate": 'Bearer realm="satwatt"'},
        )
    if not api_key.matches(token):
        raise Problem(401, "Invalid API key", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
