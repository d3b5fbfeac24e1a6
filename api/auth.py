"""``Authorization: Bearer <key>``: 401 without a live key, 403 when its scope is too small."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from api.context import ApiContext, get_context
from api.keys import Principal, authenticate
from api.problems import Problem

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="stayler"'}


async def current_principal(request: Request, ctx: Annotated[ApiContext, Depends(get_context)]) -> Principal:
    """The principal of the request's key (kept on the request for the access log).

    A request with a body was authenticated before its body was read (``api.body``): that answer is reused.
    """
    early = getattr(request.state, "principal", None)
    if isinstance(early, Principal):
        return early
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Problem("unauthorized", "send Authorization: Bearer <key>", headers=_CHALLENGE)
    principal = await ctx.db.run(authenticate, key.strip())
    if principal is None:
        raise Problem("unauthorized", "the key is unknown or revoked", headers=_CHALLENGE)
    request.state.principal = principal
    return principal


def require(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits keys whose scope includes ``scope``."""
    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.allows(scope):
            raise Problem("forbidden", f"this needs a key with scope {scope!r}; this key has {principal.scope!r}")
        return principal
    return dependency


Reader = Annotated[Principal, Depends(require("read"))]
Producer = Annotated[Principal, Depends(require("producer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Context = Annotated[ApiContext, Depends(get_context)]
