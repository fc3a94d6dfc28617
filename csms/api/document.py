"""What the OpenAPI document says beyond what FastAPI infers: error answers as problem+json, and who
may call each operation (the security schemes).

Routes declare their error statuses with ``errors(...)``; ``install`` adds the Problem schema and the
security schemes to the document and turns FastAPI's default 422 (``application/json``) into the
problem answer the API really gives.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from csms.api.problems import PROBLEM_JSON, ProblemBody

PROBLEM_REF = "#/components/schemas/Problem"

DESCRIPTIONS = {
    401: "No credentials, or a wrong operator key",
    403: "The token gives no access to this",
    404: "No such resource",
    409: "Conflicts with the current state (already exists, busy, charger offline, session ended)",
    422: "Invalid request: every invalid value is in `errors`",
    502: "The charger answered with an error (a CALLERROR)",
    503: "Settlement is not running (satwatt is starting or stopping)",
    504: "The charger did not answer in time",
}

OPERATOR_KEY = "operatorKey"
PAYER_TOKEN = "payerToken"
SESSION_TOKEN = "sessionToken"
TOKEN_QUERY = "tokenQuery"

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    OPERATOR_KEY: {
        "type": "http",
        "scheme": "bearer",
        "description": "The operator's API key (`csms api-key`): everything.",
    },
    PAYER_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "description": "A payer's token (pt_...), shown once when the payer is made: the sessions of its "
        "id tags.",
    },
    SESSION_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "description": "A session's token (st_...), shown once by `POST /api/v1/sessions`: that session.",
    },
    TOKEN_QUERY: {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "Any of the three tokens as `?token=`, for browsers' EventSource (it cannot send "
        "headers).",
    },
}

#: Operations any caller with a token may use; each sees what its token gives it.
ANY_TOKEN: list[dict[str, list[str]]] = [{OPERATOR_KEY: []}, {PAYER_TOKEN: []}, {SESSION_TOKEN: []}]
#: An operation anyone may call.
NO_CREDENTIALS: list[dict[str, list[str]]] = []


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route for the error statuses it answers, each a problem+json body."""
    return {
        code: {
            "description": DESCRIPTIONS[code],
            "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}},
        }
        for code in codes
    }


def _problem_schemas() -> dict[str, Any]:
    schema = ProblemBody.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    return {**definitions, "Problem": schema}


def _can_be_invalid(operation: dict[str, Any]) -> bool:
    """Whether a request can fail validation: it has a body, or a parameter more than any text."""
    return "requestBody" in operation or any(
        parameter.get("schema") != {"type": "string", "title": parameter["schema"].get("title")}
        for parameter in operation.get("parameters", [])
    )


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Add the Problem schema and the security schemes; every 422 answer is a problem."""
    components = document.setdefault("components", {})
    components.setdefault("schemas", {}).update(_problem_schemas())
    components["securitySchemes"] = SECURITY_SCHEMES
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            invalid = operation.get("responses", {}).get("422")
            if invalid is None or PROBLEM_JSON in invalid.get("content", {}):
                continue
            if _can_be_invalid(operation):  # FastAPI's default 422 is a problem here too
                operation["responses"]["422"] = errors(422)[422]
            else:
                del operation["responses"]["422"]
    schemas = components["schemas"]
    text = repr(document["paths"])
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused in schemas and f"/{unused}'" not in text:
            del schemas[unused]
    return document


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and /openapi.json) return the completed document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
