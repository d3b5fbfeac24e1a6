"""The FastAPI application: routers, problem+json errors, middleware, and the process-wide parts."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from api.body import BodyGuardMiddleware
from api.context import ApiContext
from api.db import Database
from api.decoding import DecodeGate
from api.docs_ui import mount_docs
from api.forwarded import ForwardedMiddleware
from api.metrics import ApiMetrics
from api.middleware import AccessLogMiddleware, BodyLimitMiddleware
from api.problems import MEDIA_TYPE, Problem
from api.ratelimit import rate_limiter
from api.request_ids import RequestIdMiddleware, log_unexpected, request_id_of
from api.results import open_storage
from api.routes import conversions, deletion, health, images, stats, webhooks
from api.waiters import WaiterLimits
from api.waiting import CompletionHub
from core.settings import Settings
from producer import Waker
from producer.images import ImageLimits
from storage import Storage, StorageError

log = logging.getLogger("stayler.api")

DESCRIPTION = """\
Submit virtual try-on conversions, then poll, wait (`?wait=N`) or receive a signed webhook.
Authenticate with `Authorization: Bearer <key>` (`stayler apikeys create`). Errors are RFC 9457
`application/problem+json` documents with a stable `type`.
"""


def _problem_response(request: Request, problem: Problem) -> JSONResponse:
    body = problem.body(instance=request.url.path)
    request_id = request_id_of(request.scope)
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=problem.kind.status, media_type=MEDIA_TYPE,
                        headers=problem.headers or None)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        if exc.kind.name == "internal":  # an unexpected error turned into a problem: its cause is logged once
            log_unexpected(request.scope, exc.__cause__ or exc)
        return _problem_response(request, exc)

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
        name = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden",
                413: "payload_too_large"}.get(exc.status_code, "bad_request")
        detail = exc.detail if name == "bad_request" and isinstance(exc.detail, str) else None
        return _problem_response(request, Problem(name, detail, headers=dict(exc.headers or {})))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) for p in err.get("loc", ())], "msg": err.get("msg", ""), "type": err.get("type", "")}
                  for err in exc.errors()]
        return _problem_response(request, Problem("validation_error", "the request does not match the schema",
                                                  extra={"errors": errors}))

    @app.exception_handler(StorageError)
    async def on_storage(request: Request, exc: StorageError) -> JSONResponse:
        log.warning("storage error on %s: %s", request.url.path, exc)
        return _problem_response(request, Problem("storage_unavailable"))

    @app.exception_handler(Exception)
    async def on_anything(request: Request, exc: Exception) -> JSONResponse:
        log_unexpected(request.scope, exc)  # RequestIdMiddleware takes these first; kept for safety
        return _problem_response(request, Problem("internal"))


def create_app(settings: Settings, database_url: str, *, storage: Storage | None = None,
               mounts: Sequence[Callable[[FastAPI], None]] = ()) -> FastAPI:
    """The API for ``database_url`` with ``settings`` (storage from the settings unless given).

    ``mounts`` add more to the app after the API's routes and before its middleware (the shell mounts
    the console this way: :mod:`stayler.web`), so the API never imports them.
    """
    metrics = ApiMetrics()
    ctx = ApiContext(settings=settings, db=Database(database_url, settings.api_db_pool_size, settings),
                     storage=storage or open_storage(settings), hub=CompletionHub(database_url, settings),
                     metrics=metrics,
                     limits=ImageLimits.from_settings(settings),
                     waker=Waker.from_url(settings.redis_url, settings.queue_name) if settings.redis_url else None,
                     limiter=rate_limiter(settings),
                     decodes=DecodeGate(settings.api_max_concurrent_decodes),
                     waiters=WaiterLimits(settings.api_max_waiters, settings.api_max_waiters_per_key))
    metrics.track_waiting(lambda: ctx.hub.waiting)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.db.open()
        ctx.hub.start()
        try:
            yield
        finally:
            await ctx.hub.stop()
            ctx.db.close()

    app = FastAPI(title="Stayler conversions API", version="1", description=DESCRIPTION, lifespan=lifespan,
                  openapi_url="/openapi.json", docs_url=None, redoc_url=None)
    app.state.ctx = ctx
    _install_error_handlers(app)
    for module in (images, conversions, deletion, stats, webhooks, health):
        app.include_router(module.router)
    mount_docs(app)
    for mount in mounts:
        mount(app)
    app.add_middleware(BodyGuardMiddleware, settings=settings)
    app.add_middleware(BodyLimitMiddleware, upload_limit=settings.api_max_upload_bytes)
    app.add_middleware(AccessLogMiddleware, metrics=metrics)
    app.add_middleware(ForwardedMiddleware, settings=settings)
    app.add_middleware(RequestIdMiddleware)
    app.openapi_tags = [{"name": k} for k in ("images", "conversions", "stats", "webhooks", "health")]
    return app
