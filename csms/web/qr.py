"""QR codes as SVG (pages and stickers) and PNG (stickers), drawn from the code's module matrix."""

from __future__ import annotations

from typing import TYPE_CHECKING

import qrcode
from qrcode.constants import ERROR_CORRECT_M

if TYPE_CHECKING:
    from PIL import Image


def matrix(data: str, border: int = 4) -> list[list[bool]]:
    """The QR code's modules (True = dark), with a quiet zone of ``border`` modules."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=border)
    code.add_data(data)
    code.make(fit=True)
    return [list(row) for row in code.get_matrix()]


def svg_path(modules: list[list[bool]], scale: float = 1.0, x0: float = 0, y0: float = 0) -> str:
    """An SVG path drawing the dark modules, one rectangle per run of dark modules in a row."""
    parts: list[str] = []
    for y, row in enumerate(modules):
        x = 0
        while x < len(row):
            if not row[x]:
                x += 1
                continue
            start = x
            while x < len(row) and row[x]:
                x += 1
            run = (x - start) * scale
            parts.append(f"M{x0 + start * scale:g},{y0 + y * scale:g}h{run:g}v{scale:g}h{-run:g}z")
    return "".join(parts)


def svg(data: str, *, title: str = "") -> str:
    """A standalone SVG of the QR code (scales to its container; crisp at any size)."""
    modules = matrix(data)
    size = len(modules)
    label = f"<title>{_escape(title)}</title>" if title else ""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" '
        f'shape-rendering="crispEdges" role="img">{label}'
        f'<rect width="{size}" height="{size}" fill="#fff"/>'
        f'<path fill="#000" d="{svg_path(modules)}"/></svg>'
    )


def png(data: str, module_px: int = 10) -> Image.Image:
    """The QR code as a black-on-white image, ``module_px`` pixels per module."""
    from PIL import Image, ImageDraw

    modules = matrix(data)
    size = len(modules) * module_px
    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    for y, row in enumerate(modules):
        for x, dark in enumerate(row):
            if dark:
                draw.rectangle(
                    (x * module_px, y * module_px, (x + 1) * module_px - 1, (y + 1) * module_px - 1), fill=0
                )
    return image


def lightning_uri(bolt11: str) -> str:
    """The ``lightning:`` URI of an invoice, upper-cased for a QR code (alphanumeric mode: a smaller
    code; wallets accept both cases)."""
    return f"lightning:{bolt11}".upper()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
