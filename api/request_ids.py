"""One id per request: in the ``X-Request-ID`` header, in every problem body, and in the single log
line of an unexpected error, so a customer's report leads to its traceback."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import MEDIA_TYPE, Problem

log = logging.getLogger("stayler.api")
HEADER = b"x-request-id"


def request_id_of(scope: Scope) -> str | None:
    """The id :class:`RequestIdMiddleware` gave the request, if any."""
    state: Any = scope.get("state") or {}
    value = state.get("request_id") if isinstance(state, dict) else None
    return str(value) if value else None


def log_unexpected(scope: Scope, exc: BaseException) -> None:
    """Log an unexpected error once, with its traceback and the request id."""
    request_id = request_id_of(scope)
    log.error("unexpected error on %s %s (request %s)", scope.get("method"), scope.get("path"), request_id,
              exc_info=exc, extra={"request_id": request_id})


async def send_problem(scope: Scope, send: Send, problem: Problem) -> None:
    """Answer ``problem`` from ASGI code outside the routes (the connection is closed afterwards)."""
    doc = problem.body()
    request_id = request_id_of(scope)
    if request_id:
        doc["request_id"] = request_id
    body = json.dumps(doc).encode()
    headers = [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    headers += [(k.lower().encode(), v.encode()) for k, v in (problem.headers or {}).items()]
    await send({"type": "http.response.start", "status": problem.kind.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestIdMiddleware:
    """Give each request an id (``X-Request-ID`` on the answer); an exception no handler took is logged
    here once and answered as the ``internal`` problem carrying that id."""

    def __init__(self, app: ASGIApp) -> None:
        """Wrap ``app``."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Tag, pass on, and catch what escaped."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = False

        async def tagged(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), (HEADER, request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        except Exception as exc:
            log_unexpected(scope, exc)
            if not started:
                await send_problem(scope, tagged, Problem("internal"))
