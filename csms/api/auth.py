"""Who may call the REST API: the operator, with ``Authorization: Bearer <API key>``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from csms.api.document import OPERATOR_KEY, SECURITY_SCHEMES
from csms.api.problems import Problem
from csms.security import ApiKey

#: Declares the operator key in the OpenAPI document; the key itself is checked by ``require_operator``.
operator_key = HTTPBearer(
    scheme_name=OPERATOR_KEY, description=SECURITY_SCHEMES[OPERATOR_KEY]["description"], auto_error=False
)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def require_operator(
    request: Request, _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(operator_key)]
) -> None:
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
