"""The web process: the HTTP API with the operations console mounted in it (``stayler api``).

The shell composes the two, so neither the API nor the console imports the other's app: the console
is one of the ``mounts`` of :func:`api.app.create_app`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from core.cli import Subparsers, add, lazy

if TYPE_CHECKING:
    from fastapi import FastAPI

    from core.settings import Settings
    from storage import Storage


def create_web_app(settings: Settings, database_url: str, *, storage: Storage | None = None) -> FastAPI:
    """The API for ``database_url`` with the console under ``/console``."""
    from api.app import create_app
    from console.web import mount_console

    return create_app(settings, database_url, storage=storage, mounts=(mount_console,))


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    """stayler api: migrate, then serve the web process (API plus console) with uvicorn."""
    from api.commands import cmd_api as serve

    return serve(args, settings, app_factory=create_web_app)


def register(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    """Add ``api``: serve the web process."""
    p = add(subparsers, "api", "serve the HTTP API (FastAPI on uvicorn)", lazy("stayler.web", "cmd_api"),
            "Serve the HTTP API: images, conversions (with ?wait=), results, webhooks, stats; "
            "/openapi.json and /docs describe it. Stateless: run as many as needed behind a load balancer.")
    p.add_argument("--host", help="address to bind (default: STAYLER_API_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind (default: STAYLER_API_PORT, 8080)")
