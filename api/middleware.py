"""ASGI middleware: request body limits, and one access-log line plus metrics per request."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import ApiMetrics
from api.problems import MEDIA_TYPE, Problem

log = logging.getLogger("stayler.api.access")

#: Largest body of any request but an image upload.
MAX_JSON_BYTES = 1024 * 1024
UPLOAD_PATHS = ("/v1/images",)


async def _send_problem(send: Send, problem: Problem) -> None:
    body = json.dumps(problem.body()).encode()
    await send({"type": "http.response.start", "status": problem.kind.status,
                "headers": [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Refuse bodies over the limit before they are read whole.

    A declared ``Content-Length`` over the limit is answered 413 at once, without reading the body.
    A body without one (chunked) is counted as it streams; the read that crosses the limit raises a
    413 problem inside the handler, so at most the limit plus one chunk is ever buffered.
    """

    def __init__(self, app: ASGIApp, upload_limit: int, json_limit: int = MAX_JSON_BYTES) -> None:
        """Wrap ``app``; uploads may have ``upload_limit`` bytes, anything else ``json_limit``."""
        self.app = app
        self.upload_limit = upload_limit
        self.json_limit = json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then count the streamed one."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit if scope["path"] in UPLOAD_PATHS else self.json_limit
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = Problem("payload_too_large", f"the request body may have at most {limit:,} bytes")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_problem(send, too_large)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large
            return message

        await self.app(scope, counted, send)


class AccessLogMiddleware:
    """One structured line per request (route, status, latency, the key's owner) and the request metrics."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        """Wrap ``app``, counting into ``metrics``."""
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and log it when the response has started."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def tracking(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        finally:
            elapsed = time.perf_counter() - start
            route_obj: Any = scope.get("route")
            route = getattr(route_obj, "path", None) or "unmatched"
            principal = (scope.get("state") or {}).get("principal")
            owner = principal.owner_label if principal is not None else None
            self.metrics.observe(route, scope["method"], status, elapsed)
            log.info("%s %s %s", scope["method"], route, status,
                     extra={"route": route, "method": scope["method"], "status": status,
                            "latency_ms": round(elapsed * 1000, 2), "owner": owner})
