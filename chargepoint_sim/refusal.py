"""Saying plainly why a central system refused a charge point's websocket handshake."""

from __future__ import annotations

from websockets.exceptions import InvalidStatus

# what an HTTP status answering an OCPP-J handshake means for the charger
MEANINGS = {
    401: "unknown charger or wrong password",
    403: "forbidden (this charger may not connect)",
    404: "no such OCPP endpoint, or an invalid charger id",
    429: "too many connections from this address",
}
_MAX_SAID = 120


def refusal_reason(error: BaseException) -> str | None:
    """``refused: 401 unknown charger or wrong password`` (and what the central system said, when it
    said something short and readable) for a handshake answered with an HTTP status; None for other
    connection failures (no answer, a reset, a timeout)."""
    if not isinstance(error, InvalidStatus):
        return None
    response = error.response
    status = response.status_code
    meaning = MEANINGS.get(status) or response.reason_phrase or "refused"
    said = response.body.decode("utf-8", "replace").strip().splitlines()[0] if response.body else ""
    reason = f"refused: {status} {meaning}"
    if said and len(said) <= _MAX_SAID and said.isprintable() and said.lower() not in meaning:
        reason += f" (the central system says: {said})"
    return reason
