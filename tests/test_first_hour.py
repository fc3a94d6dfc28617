"""The first hour of a new user (issue 9): each point a new user ran into, tested as they met it."""

from __future__ import annotations

from html.parser import HTMLParser

import httpx

from tests.conftest import RunningServer


class _AssetLinks(HTMLParser):
    """Every URL a page loads by itself: scripts, stylesheets, icons."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.urls.append(values["src"] or "")
        if tag == "link" and values.get("href"):
            self.urls.append(values["href"] or "")


async def _page_assets(client: httpx.AsyncClient, path: str) -> tuple[str, list[str]]:
    page = await client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    parser = _AssetLinks()
    parser.feed(page.text)
    return page.text, parser.urls


async def test_docs_pages_load_everything_from_satwatt_itself(server: RunningServer) -> None:
    """Point 1: /docs and /redoc were blank without internet access (Swagger UI and ReDoc from a CDN)."""
    async with server.api(key=None) as client:
        for path, script in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
            html, urls = await _page_assets(client, path)
            assert any(url.endswith(script) for url in urls), (path, urls)
            assert "cdn.jsdelivr.net" not in html and "fonts.googleapis.com" not in html
            for url in urls:
                assert url.startswith("/"), f"{path} loads {url} from elsewhere"
                asset = await client.get(url)
                assert asset.status_code == 200, url
                if url.endswith(".js"):
                    assert "javascript" in asset.headers["content-type"]
                    assert len(asset.content) > 100_000, f"{url} is not the real bundle"
            assert "/openapi.json" in html
        assert (await client.get("/openapi.json")).json()["info"]["title"] == "satwatt"
        assert (await client.get("/docs/oauth2-redirect")).status_code == 200
