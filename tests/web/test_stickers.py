"""`csms stickers`: an SVG and a PNG per connector, whose QR code is the connector's driver page."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from typer.testing import CliRunner

from csms import lnurl
from csms.cli import cli
from csms.web import qr
from csms.web.stickers import plan
from tests.conftest import RunningServer


async def test_stickers_for_every_connector_point_at_the_driver_pages(
    server: RunningServer, stations: Callable[..., Any], tmp_path: Path
) -> None:
    await stations("ST-1", "1.6", price_msat_per_kwh=250_000, session_fee_msat=3_000)
    await stations("ST*2", "2.0.1")
    env = {
        "CSMS_DATA_DIR": str(server.settings.data_dir),
        "CSMS_DATABASE_URL": server.settings.resolved_database_url,
        "CSMS_PUBLIC_URL": server.http_url,
    }
    out = tmp_path / "stickers"
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["stickers", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "The stickers' LNURL will not work" in result.output  # the test server is plain http
    assert sorted(p.name for p in out.iterdir()) == ["ST-1-1.png", "ST-1-1.svg", "ST_2-1.png", "ST_2-1.svg"]
    svg = (out / "ST-1-1.svg").read_text()
    url = f"{server.http_url}/c/ST-1/1"
    assert ">ST-1</text>" in svg and ">250 sat/kWh + 3 sat per session</text>" in svg and url in svg
    # the QR code drawn is the driver page's URL, with its LNURL-pay as LUD-01's https fallback
    data = f"{url}?lightning={lnurl.encode(f'{server.http_url}/lnurlp/ST-1/1')}"
    assert qr.svg_path(qr.matrix(data, border=0), 54 / len(qr.matrix(data, border=0)), 8, 14) in svg
    image = Image.open(io.BytesIO((out / "ST-1-1.png").read_bytes()))
    assert image.size == (700, 1000) and image.format == "PNG"
    # each sticker's URL opens its connector page (the * of a charger id is escaped)
    async with httpx.AsyncClient() as client:
        for sticker in await plan(server.settings.model_copy(update={"public_url": server.http_url})):
            page = await client.get(sticker.url)
            assert page.status_code == 200 and f'id="charger-id">{sticker.charger_id}<' in page.text
    assert re.search(r"/c/ST%2A2/1", (out / "ST_2-1.svg").read_text())
    # one charger only; an unknown one is a clear error
    only = await asyncio.to_thread(
        CliRunner().invoke, cli, ["stickers", "--charger", "ST-1", "--out", str(tmp_path / "one")], env=env
    )
    assert only.exit_code == 0 and sorted(p.name for p in (tmp_path / "one").iterdir()) == [
        "ST-1-1.png",
        "ST-1-1.svg",
    ]
    unknown = await asyncio.to_thread(
        CliRunner().invoke, cli, ["stickers", "--charger", "NOPE", "--out", str(tmp_path / "x")], env=env
    )
    assert unknown.exit_code == 1 and "no registered charger 'NOPE'" in unknown.output
