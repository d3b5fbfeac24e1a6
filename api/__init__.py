"""The HTTP API: the service boundary for upstream services (docs/api.md).

``create_app(settings, database_url)`` builds the FastAPI app that ``stayler api`` serves with
uvicorn; ``stayler webhooks`` runs :mod:`api.webhooks.sender`.
"""

from api.app import create_app

__all__ = ["create_app"]
