"""``/docs`` works without internet access, ``/`` links the reference and the console, and
``/v1/stats`` answers numbers as JSON numbers (issue 23)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from tests.api.conftest import ApiEnv


class _References(HTMLParser):
    """Every URL a page makes the browser fetch (scripts, stylesheets, icons, images, frames)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and name in ("src", "href") and tag in ("script", "link", "img", "iframe"):
                self.urls.append(value)


def test_docs_references_only_local_assets_that_are_served(api: ApiEnv) -> None:
    with api.anonymous() as client:
        page = client.get("/docs")
        assert page.status_code == 200
        refs = _References()
        refs.feed(page.text)
        assert any(u.endswith("swagger-ui-bundle.js") for u in refs.urls), refs.urls
        assert any(u.endswith("swagger-ui.css") for u in refs.urls), refs.urls
        for url in refs.urls:
            assert url.startswith("/") and not url.startswith("//"), f"/docs loads {url} from elsewhere"
            asset = client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 0, url
        # Nothing inline points outside either (the old page named a CDN in its script and favicon).
        assert not re.search(r"https?://(?!127\.0\.0\.1|localhost)", page.text), page.text
        assert client.get("/openapi.json").status_code == 200


def test_home_page_links_the_reference_and_the_console(api: ApiEnv) -> None:
    with api.anonymous() as client:
        home = client.get("/")
    assert home.status_code == 200 and home.headers["content-type"].startswith("text/html")
    assert 'href="/docs"' in home.text and 'href="/console/"' in home.text


def test_stats_are_numbers(api: ApiEnv) -> None:
    owner = api.owner()
    created = owner.conversion()
    api.complete(created["id"])
    with owner.client("read") as client:
        stats = client.get("/v1/stats").json()
    conversions = stats["conversions"]
    assert conversions["completed_count"] == 1
    assert isinstance(conversions["success_rate"], float) and conversions["success_rate"] == 1.0
    assert isinstance(conversions["avg_processing_time_ms"], float | int)
