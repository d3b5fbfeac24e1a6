"""Liveness, readiness and the API's own Prometheus metrics."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import Context

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    """Always ok while the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz", summary="The database is reachable", responses={503: {"description": "it is not"}})
async def readyz(ctx: Context) -> dict[str, str]:
    """200 when a database round trip succeeds, else a 503 problem."""
    await anyio.to_thread.run_sync(ctx.db.ping)
    return {"status": "ready"}


@router.get("/metrics", include_in_schema=False)
async def metrics(ctx: Context) -> Response:
    """Prometheus exposition of the API's registry."""
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
