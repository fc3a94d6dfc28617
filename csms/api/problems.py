"""HTTP problem responses (RFC 9457, application/problem+json) for every API error."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

PROBLEM_JSON = "application/problem+json"


class ProblemError(BaseModel):
    field: str = Field(description='Where the value is, dotted ("schedule.windows.0.end"); "(body)" for all.')
    message: str


class ProblemBody(BaseModel):
    """What every error answer carries (RFC 9457)."""

    model_config = ConfigDict(extra="allow", title="Problem")
    type: str = Field(default="about:blank", description="Always about:blank: the status says what kind.")
    title: str = Field(description="A short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str | None = Field(default=None, description="What exactly went wrong with this request.")
    errors: list[ProblemError] | None = Field(default=None, description="Every invalid value (422 only).")
    reason: str | None = Field(
        default=None,
        description="Why a command to a charger failed: not_connected, timeout, call_error, invalid; "
        "or why a session cannot start: not_connected, busy; or why a top-up cannot be made: ended.",
    )


class Problem(Exception):
    """Raise to answer with a problem response."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.type = status, title, detail, type_
        self.headers = headers
        self.extra = extra


def problem_response(
    status: int, title: str, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def invalid(field: str, message: str) -> Problem:
    """A 422 for one invalid value, in the shape request validation uses."""
    return Problem(
        422, "Invalid request", f"{field}: {message}", errors=[{"field": field, "message": message}]
    )


def _field(location: tuple[Any, ...]) -> str:
    parts = [str(p) for p in location if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "(body)"


def _validation_error(error: dict[str, Any], content_type: str | None) -> dict[str, str]:
    """One entry of ``errors``: the field a validation error is about, and what to do.

    FastAPI locates a JSON syntax error at ("body", <character offset>), which is no field: it is the
    body's, with the offset in the message. A body that is not sent as JSON (no Content-Type, or
    another) is not parsed at all: say to send JSON rather than that a dictionary was expected.
    """
    location = tuple(error.get("loc", ()))
    message = str(error.get("msg", "invalid"))
    if error.get("type") == "json_invalid":
        position = location[1] if len(location) > 1 and isinstance(location[1], int) else None
        reason = str((error.get("ctx") or {}).get("error", "")).strip() or "JSON decode error"
        where = f" at character {position}" if position is not None else ""
        return {"field": "(body)", "message": f"not valid JSON: {reason}{where}"}
    if location == ("body",) and "json" not in (content_type or "").lower():
        sent = f"Content-Type: {content_type}" if content_type else "no Content-Type"
        return {
            "field": "(body)",
            "message": f"send the body as JSON with Content-Type: application/json (this request had {sent})",
        }
    if location == ("body",) and error.get("type") == "missing":
        return {"field": "(body)", "message": "a JSON body is required"}
    return {"field": _field(location), "message": message}


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route answers at the request's path (Starlette names only the first route's)."""
    return [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in request.app.router.routes
        )
    ]


def install(app: FastAPI) -> None:
    from csms.api import document

    @app.exception_handler(Problem)
    async def _problem(_request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.title, exc.detail, headers=exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type")
        errors = [_validation_error(dict(e), content_type) for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem_response(422, "Invalid request", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:
            allow = ", ".join(allowed_methods(request))
            return problem_response(
                405,
                "Method not allowed",
                f"{request.method} is not allowed here; allowed: {allow}",
                headers={**(headers or {}), "Allow": allow},
            )
        if exc.status_code == 400:  # FastAPI's only 400: a body that could not be read as text
            message = "not valid JSON text (it must be UTF-8)"
            return problem_response(
                422, "Invalid request", f"(body): {message}", errors=[{"field": "(body)", "message": message}]
            )
        return problem_response(exc.status_code, str(exc.detail), headers=headers)

    document.install(app)
