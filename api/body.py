"""What a request body may cost before a route sees it.

* The key is checked **before** a byte of the body is read: a ``/v1`` request with a body and no
  live key is answered 401 (an upload without the ``producer`` scope 403) with its body unread.
* The whole body must arrive within ``STAYLER_API_BODY_TIMEOUT_S`` (408 ``request_timeout``).
* One process holds at most ``STAYLER_API_MAX_SPOOLED_BYTES`` of request bodies at once (uploads
  spool to temporary files): a body that would cross it is answered 503 ``server_busy`` with
  ``Retry-After`` (before it is read when its length is declared).
* A JSON body is parsed strictly first: JSON that PostgreSQL's jsonb cannot hold (NaN, infinities,
  ``1e400``, a NUL character, a lone surrogate) or nests beyond the parser is 422 ``invalid_json``.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.keys import Principal, authenticate
from api.limits import InvalidJsonError, parse_strict
from api.problems import Problem
from api.request_ids import send_problem
from core.settings import Settings

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
UPLOAD_SCOPE = {"/v1/images": "producer"}
RETRY_AFTER_S = 2
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="stayler"'}


def _bearer(scope: Scope) -> str | None:
    header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    kind, _, key = header.partition(" ")
    return key.strip() if kind.lower() == "bearer" and key.strip() else None


class BodyGuardMiddleware:
    """Authenticate, time and count a request body before the route reads it (see the module)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        """Wrap ``app`` with the limits of ``settings``."""
        self.app = app
        self.timeout_s = settings.api_body_timeout_s
        self.max_spooled = settings.api_max_spooled_bytes
        #: Body bytes received by requests still running in this process.
        self.spooled = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse early, then pass the request on with a timed and counted ``receive``."""
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        refusal = await self._authenticate(scope)
        if refusal is not None:
            await send_problem(scope, send, refusal)
            return
        busy = Problem("server_busy", "too many request bodies are being received; try again shortly",
                       headers={"Retry-After": str(RETRY_AFTER_S)})
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and self.spooled + int(declared) > self.max_spooled:
            await send_problem(scope, send, busy)
            return
        deadline = time.monotonic() + self.timeout_s
        held = 0

        async def guarded() -> Message:
            nonlocal held
            try:
                with anyio.fail_after(max(0.0, deadline - time.monotonic())):
                    message = await receive()
            except TimeoutError:
                raise Problem("request_timeout", f"the body must arrive within {self.timeout_s:g} s") from None
            chunk = len(message.get("body", b"")) if message["type"] == "http.request" else 0
            if chunk:
                if self.spooled + chunk > self.max_spooled:
                    raise busy
                self.spooled += chunk
                held += chunk
            return message

        try:
            if self._is_json(scope):
                replay = await self._checked_json(scope, guarded, send)
                if replay is None:
                    return
                await self.app(scope, replay, send)
            else:
                await self.app(scope, guarded, send)
        finally:
            self.spooled -= held

    async def _authenticate(self, scope: Scope) -> Problem | None:
        key = _bearer(scope)
        if key is None:
            return Problem("unauthorized", "send Authorization: Bearer <key>", headers=_CHALLENGE)
        ctx: Any = scope["app"].state.ctx
        try:
            principal: Principal | None = await ctx.db.run(authenticate, key)
        except Problem as problem:
            return problem
        if principal is None:
            return Problem("unauthorized", "the key is unknown or revoked", headers=_CHALLENGE)
        needed = UPLOAD_SCOPE.get(scope["path"])
        if needed is not None and not principal.allows(needed):
            return Problem("forbidden", f"this needs a key with scope {needed!r}; this key has {principal.scope!r}")
        scope.setdefault("state", {})["principal"] = principal
        return None

    @staticmethod
    def _is_json(scope: Scope) -> bool:
        content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1").lower()
        return content_type.split(";")[0].strip() in ("application/json", "") or content_type.endswith("+json")

    async def _checked_json(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Read the (size-limited) JSON body, check it, and return a ``receive`` that replays it."""
        parts: list[bytes] = []
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        except Problem as problem:
            await send_problem(scope, send, problem)
            return None
        raw = b"".join(parts)
        if raw.strip():
            try:
                await anyio.to_thread.run_sync(parse_strict, raw)
            except InvalidJsonError as exc:
                await send_problem(scope, send, Problem("invalid_json", str(exc)))
                return None
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        return replay
