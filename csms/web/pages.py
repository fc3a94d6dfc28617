"""Rendering pages: the Jinja2 templates, the number formats they use, and HTML error pages."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")

STATE_LABELS = {
    "pending": "starting",
    "awaiting_payment": "awaiting payment",
    "charging": "charging",
    "suspended": "suspended (payment due)",
    "awaiting_payment_final": "ended, final invoice due",
    "ended": "ended",
}
#: Headers of every page: no caching of anything personal, no framing, no referrer leaking paths.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
}


def sats(msat: int | None) -> str:
    """Millisatoshi as sats: whole sats plainly, fractions to the msat (``1,234``, ``0.5``)."""
    if msat is None:
        return "–"
    whole, rest = divmod(abs(msat), 1000)
    text = f"{whole:,}" + (f".{rest:03d}".rstrip("0") if rest else "")
    return ("-" if msat < 0 else "") + text


def kwh(wh: int | None) -> str:
    return "–" if wh is None else f"{wh / 1000:,.3f}"


def kw(w: int | None) -> str:
    return "–" if w is None else f"{w / 1000:,.1f}"


def when(value: datetime | None) -> str:
    """A time for a table: HH:MM:SS UTC today, else the date too."""
    if value is None:
        return "–"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if value.date() == datetime.now(UTC).date():
        return value.strftime("%H:%M:%S")
    return value.strftime("%Y-%m-%d %H:%M")


TEMPLATES.env.filters.update(sats=sats, kwh=kwh, kw=kw, when=when)
TEMPLATES.env.globals.update(state_label=lambda s: STATE_LABELS.get(s, s))


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(
        request, template, context, status_code=status_code, headers=PAGE_HEADERS
    )


def problem_page(request: Request, status_code: int, title: str, detail: str) -> HTMLResponse:
    """A clear error page (unknown charger, bad token...), never a stack trace."""
    return render(request, "problem.html", status_code, title=title, detail=detail)


MAX_FORM_BYTES = 4096


async def form(request: Request) -> dict[str, str]:
    """The fields of a small url-encoded form (the pages post nothing else); the first of each name.
    An over-long or unreadable body gives no fields."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in fields.items()}


def whole_number(text: str | None, maximum: int) -> int | None:
    """``text`` as a whole number from 0 to ``maximum`` written in ASCII digits, else None (never an
    exception: "²" is a digit to ``str.isdigit`` but not to ``int``)."""
    if not text or len(text) > len(str(maximum)) or not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if number <= maximum else None
