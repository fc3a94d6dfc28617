"""What schemathesis needs to know beyond JSON Schema to generate valid satwatt requests.

Loaded by the schemathesis CLI through ``SCHEMATHESIS_HOOKS=tests.schemathesis_hooks``
(tests/test_api_contract.py does that). Each rule here is one the OpenAPI document states in words and
JSON Schema cannot express:

* ``format: iana-time-zone``: a zone name of the IANA database (``Europe/Berlin``).
* A tariff schedule's windows do not overlap, and a window's end differs from its start.
* A charger's ``tariff_id`` names an existing tariff.
* A command or a password the connected charger's OCPP version cannot carry (a 2.0.1-only trigger to a
  1.6 charger, a password over 1.6's 20 characters) is refused: 422 with reason ``invalid``, or the
  password's length in ``errors``.
* The ledger's window: ``since`` must be before ``until`` (which is now when left out).

``filter_body`` keeps generated bodies within the window rules; ``filter_failure`` accepts a 422 that
refuses a request for one of these rules and for nothing else.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from typing import Any

import schemathesis
from hypothesis import strategies as st

schemathesis.openapi.format("iana-time-zone", st.sampled_from(sorted(zoneinfo.available_timezones())))

_HHMM = re.compile(r"(?:([01][0-9]|2[0-3]):([0-5][0-9])|(24):(00))")
DAY = 24 * 60


def _minute(text: object) -> int | None:
    match = _HHMM.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        return None
    hours, minutes = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
    return int(hours) * 60 + int(minutes)


def _minutes(window: dict[str, Any]) -> set[int] | None:
    """The minutes of the day a window covers; None if it is not a well-formed window."""
    start, end = _minute(window.get("start")), _minute(window.get("end"))
    if start is None or end is None or start == DAY:
        return None
    if start == end % DAY:
        return set()  # an empty (invalid) window
    if start < end:
        return set(range(start, end))
    return set(range(start, DAY)) | set(range(0, end))


def _windows_valid(body: Any) -> bool:
    schedule = body.get("schedule") if isinstance(body, dict) else None
    windows = schedule.get("windows") if isinstance(schedule, dict) else None
    if not isinstance(windows, list):
        return True
    covered: set[int] = set()
    for window in windows:
        minutes = _minutes(window) if isinstance(window, dict) else None
        if minutes is None:
            continue  # malformed: a request meant to be refused, leave it as generated
        if not minutes or covered & minutes:
            return False
        covered |= minutes
    return True


@schemathesis.hook
def filter_body(context: schemathesis.HookContext, body: Any) -> bool:
    operation = context.operation
    if operation is None or not operation.path.startswith("/api/v1/tariffs"):
        return True
    return _windows_valid(body)


#: Refusals for the rules above, as the API words them: (field, message) of a 422's ``errors``.
DOCUMENTED_REFUSALS = (
    (re.compile(r"schedule\.windows\[\d+\]"), re.compile(r"overlaps windows\[\d+\]")),
    (re.compile(r"schedule\.windows\[\d+\]\.end"), re.compile(r"must differ from start")),
    (re.compile(r"schedule\.zone"), re.compile(r"unknown time zone .*")),
    (re.compile(r"tariff_id"), re.compile(r"no such tariff")),
    (re.compile(r"password"), re.compile(r"at most \d+ characters")),
    (re.compile(r"since"), re.compile(r"must be before until \(.*\)")),
)


def _documented_refusal(content: bytes | None) -> bool:
    try:
        problem = json.loads(content or b"")
    except ValueError:
        return False
    if not isinstance(problem, dict):
        return False
    if problem.get("title") == "Command failed" and problem.get("reason") == "invalid":
        return True  # the charger's OCPP version cannot carry this command
    errors = problem.get("errors")
    if not isinstance(errors, list):
        return False
    return bool(errors) and all(
        isinstance(e, dict)
        and any(
            field.fullmatch(str(e.get("field"))) and message.fullmatch(str(e.get("message")))
            for field, message in DOCUMENTED_REFUSALS
        )
        for e in errors
    )


@schemathesis.hook
def filter_failure(
    context: schemathesis.HookContext, failure: Any, case: schemathesis.Case, response: schemathesis.Response
) -> bool:
    """Keep every failure except a 422 that refuses a request only for a rule stated above.

    Some phases (coverage) build requests without ``filter_body``, so such a request can still be sent.
    """
    if getattr(failure, "code", None) != "ST202" or response.status_code != 422:
        return True
    return not _documented_refusal(response.content)
