"""The HTTP API: the service boundary for upstream services (docs/api.md).

``create_app(settings, database_url)`` builds the FastAPI app that ``stayler api`` serves with
uvicorn (the shell mounts the console in it: :mod:`stayler.web`); ``stayler webhooks`` runs
:mod:`api.webhooks.sender`. ``create_app`` is imported on first use, so registering the API's
commands (:mod:`api.cli`) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from api.app import create_app

        return create_app
    raise AttributeError(f"module 'api' has no attribute {name!r}")
