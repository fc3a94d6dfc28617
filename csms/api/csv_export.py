"""CSV downloads: a header row of column names, one row per record, sent as a named attachment.

Used by the session ledger (``/api/v1/sessions/{id}/ledger?format=csv``) and the operator's ledger
(``/api/v1/ledger?format=csv``).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import Response

#: Characters a download's file name keeps; any other becomes "-" (no quotes, no path, no header tricks).
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


#: What a spreadsheet reads as the start of a formula in a cell (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_filename(name: str) -> str:
    return _UNSAFE.sub("-", name)


def cell(value: Any) -> Any:
    """A value as a CSV cell: text a spreadsheet would run as a formula (a charger id may start with
    ``+``, ``-`` or ``@``) is prefixed with ``'``, which spreadsheets show as text; numbers are kept."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_response(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], filename: str) -> Response:
    """The rows as CSV under ``columns`` (keys not among them are left out, missing ones left empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({name: cell(value) for name, value in row.items()} for row in rows)
    return Response(
        buffer.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{safe_filename(filename)}"'},
    )
