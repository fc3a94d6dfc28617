"""``csms stickers``: a printable QR sticker per connector (SVG and PNG) pointing at its driver page,
with the charger's id, the connector and the price."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from markupsafe import escape
from sqlalchemy import select

from csms import lnurl
from csms.api import lnurl as lnurl_api
from csms.db.engine import create_engine, create_session_factory
from csms.db.models import Charger, Connector
from csms.settings import Settings
from csms.settlement.engine import charger_tariff
from csms.settlement.tariff import price_at
from csms.web import qr
from csms.web.pages import sats

# the sticker's size: 70 x 100 mm (SVG); the PNG at 10 px per mm
WIDTH_MM, HEIGHT_MM = 70, 100
PX_PER_MM = 10
TEXT_WIDTH_MM = 62


class StickerError(Exception):
    """Stickers cannot be made; the message says why."""


@dataclass(frozen=True)
class Sticker:
    charger_id: str
    connector_id: int
    url: str
    price_msat_per_kwh: int
    session_fee_msat: int
    lnurl: str = ""  # the connector's LNURL-pay (LUD-01), carried by the QR code as ?lightning=

    @property
    def qr_data(self) -> str:
        """What the QR code holds: the driver page, with the LNURL-pay as LUD-01's https fallback
        (``?lightning=LNURL1...``): a phone's camera opens the page, an LNURL wallet pays."""
        return f"{self.url}?lightning={self.lnurl}" if self.lnurl else self.url

    @property
    def name(self) -> str:
        """A file name for any charger id (ids may hold characters such as # or *)."""
        return f"{re.sub(r'[^A-Za-z0-9._-]', '_', self.charger_id)}-{self.connector_id}"

    @property
    def price_line(self) -> str:
        fee = f" + {sats(self.session_fee_msat)} sat per session" if self.session_fee_msat else ""
        return f"{sats(self.price_msat_per_kwh)} sat/kWh{fee}"


def base_url(settings: Settings) -> str:
    """Where phones reach satwatt: CSMS_PUBLIC_URL, else the address it listens on."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = "localhost" if settings.host in ("0.0.0.0", "::", "") else settings.host
    scheme = "https" if settings.tls_cert else "http"
    return f"{scheme}://{host}:{settings.port}"


async def plan(settings: Settings, charger_id: str | None = None) -> list[Sticker]:
    """One sticker per connector of each registered charger (connector 1 for a charger that has not
    reported its connectors yet)."""
    engine = create_engine(settings.resolved_database_url)
    try:
        db_factory = create_session_factory(engine)
        async with db_factory() as db:
            query = select(Charger).where(Charger.registered.is_(True)).order_by(Charger.id)
            if charger_id is not None:
                query = query.where(Charger.id == charger_id)
            chargers = list(await db.scalars(query))
            if charger_id is not None and not chargers:
                raise StickerError(f"no registered charger {charger_id!r}")
            connectors = list(await db.scalars(select(Connector).where(Connector.connector_id >= 1)))
            base, now, stickers = base_url(settings), datetime.now(UTC), []
            for charger in chargers:
                _, tariff = await charger_tariff(db, charger.id)
                ids = sorted(c.connector_id for c in connectors if c.charger_id == charger.id) or [1]
                stickers += [
                    Sticker(
                        charger.id,
                        number,
                        f"{base}/c/{quote(charger.id, safe='')}/{number}",
                        price_at(tariff, now),
                        tariff.session_fee_msat,
                        lnurl.encode(base + lnurl_api.connector_path(charger.id, number)),
                    )
                    for number in ids
                ]
    finally:
        await engine.dispose()
    return stickers


def svg(sticker: Sticker) -> str:
    """The sticker as SVG, 70 x 100 mm: the QR code of the driver page, the charger and the price."""
    modules = qr.matrix(sticker.qr_data, border=0)
    size = 54  # mm
    scale = size / len(modules)
    x0 = (WIDTH_MM - size) / 2
    font = 'font-family="Helvetica, Arial, sans-serif" text-anchor="middle"'

    def line(y: float, words: str, size_mm: float, extra: str = "") -> str:
        size_mm = min(size_mm, TEXT_WIDTH_MM / (0.6 * max(len(words), 1)))  # long ids and URLs: smaller
        at = f'x="{WIDTH_MM / 2}" y="{y}" font-size="{size_mm:.2f}"'
        return f"<text {at} {font} {extra}>{escape(words)}</text>"

    bold = 'font-weight="700"'
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_MM}mm" height="{HEIGHT_MM}mm" '
        f'viewBox="0 0 {WIDTH_MM} {HEIGHT_MM}">'
        f'<rect width="{WIDTH_MM}" height="{HEIGHT_MM}" rx="4" fill="#fff" '
        'stroke="#f7931a" stroke-width="1.2"/>'
        + line(10, "Charge here, pay with Lightning", 4.2, bold)
        + f'<path fill="#000" shape-rendering="crispEdges" d="{qr.svg_path(modules, scale, x0, 14)}"/>'
        + line(78, sticker.charger_id, 7, bold)
        + line(85, f"connector {sticker.connector_id}", 4.2)
        + line(91, sticker.price_line, 4.2, bold)
        + line(96.5, sticker.url, 2.6, 'fill="#555"')
        + "</svg>\n"
    )


def png(sticker: Sticker) -> bytes:
    """The same sticker as a PNG (700 x 1000 px, 254 dpi)."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    px = PX_PER_MM
    image = Image.new("RGB", (WIDTH_MM * px, HEIGHT_MM * px), "white")
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle(
        (6, 6, WIDTH_MM * px - 7, HEIGHT_MM * px - 7), radius=4 * px, outline="#f7931a", width=12
    )
    code = qr.png(sticker.qr_data, module_px=1).convert("RGB")
    modules = code.width
    size = 54 * px // modules * modules
    image.paste(code.resize((size, size), Image.Resampling.NEAREST), ((WIDTH_MM * px - size) // 2, 14 * px))

    def centred(y_mm: float, text: str, size_mm: float, colour: str = "black") -> None:
        font = ImageFont.load_default(size=round(size_mm * px))
        while font.getlength(text) > TEXT_WIDTH_MM * px and font.size > 8:  # long ids and URLs: smaller
            font = ImageFont.load_default(size=font.size - 2)
        draw.text((WIDTH_MM * px / 2, y_mm * px), text, font=font, fill=colour, anchor="ms")

    centred(10, "Charge here, pay with Lightning", 4.2)
    centred(78, sticker.charger_id, 7)
    centred(85, f"connector {sticker.connector_id}", 4.2)
    centred(91, sticker.price_line, 4.2)
    centred(96.5, sticker.url, 2.6, "#555555")
    buffer = io.BytesIO()
    image.save(buffer, "PNG", dpi=(254, 254))
    return buffer.getvalue()


def write(stickers: list[Sticker], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for sticker in stickers:
        (out / f"{sticker.name}.svg").write_text(svg(sticker))
        (out / f"{sticker.name}.png").write_bytes(png(sticker))
        written += [out / f"{sticker.name}.svg", out / f"{sticker.name}.png"]
    return written
