"""The human entry points of the API: ``/`` (links) and ``/docs`` (Swagger UI from the package, no CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static" / "swagger-ui"
ASSETS = "/static/swagger-ui"

HOME = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Stayler conversions API</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}
a{display:block;margin:.4rem 0}</style></head>
<body><h1>Stayler conversions API</h1>
<p>Virtual try-on conversions over HTTP: register images, create conversions, wait for them or
receive a signed webhook, fetch the result.</p>
<a href="/docs">/docs: the interactive API reference (Swagger UI)</a>
<a href="/openapi.json">/openapi.json: the machine-readable contract</a>
<a href="/console/">/console: the operations console (staff keys with a console grant)</a>
<a href="/readyz">/readyz: readiness</a>
</body></html>
"""


def mount_docs(app: FastAPI) -> None:
    """Serve ``/`` and ``/docs`` on ``app``, with Swagger UI's files from this package."""
    app.mount(ASSETS, StaticFiles(directory=STATIC), name="swagger-ui")

    @app.get("/", include_in_schema=False)
    async def home() -> HTMLResponse:
        return HTMLResponse(HOME)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} – reference",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None})
