"""Webhook endpoints of the caller: create (the secret is shown once), list, delete, deliveries."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Query, Response
from psycopg.rows import dict_row

from api.auth import Context, Operator, Reader
from api.keys import Principal
from api.problems import Problem
from api.schemas import DeliveryOut, WebhookCreated, WebhookIn, WebhookOut
from api.webhooks.resolver import Resolver
from api.webhooks.secretbox import SecretBox
from api.webhooks.signing import format_secret, new_secret
from api.webhooks.urlguard import UrlRefusedError, check_url_async
from schema.queries import Q

router = APIRouter(prefix="/v1", tags=["webhooks"])

#: Registration's name lookups run on these few threads of their own, never on the request threads, so
#: names that take long to resolve cannot take the threads other customers' requests need.
RESOLVER = Resolver(threads=4)


def _create(conn: psycopg.Connection, principal: Principal, body: WebhookIn, stored_secret: bytes,
            max_endpoints: int) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(Q.webhook_endpoint_create, {**principal.owner_params(), "url": body.url,
                                                      "events": list(dict.fromkeys(body.events)),
                                                      "secret": stored_secret,
                                                      "max_endpoints": max_endpoints}).fetchone()
    assert row is not None
    return row


@router.post("/webhooks", status_code=201, response_model=WebhookCreated, summary="Add a webhook endpoint")
async def create_webhook(ctx: Context, principal: Operator, body: WebhookIn) -> WebhookCreated:
    """Deliver the given events of the caller's conversions to ``url``, signed with the returned secret."""
    settings = ctx.settings
    try:
        await check_url_async(body.url, RESOLVER, timeout_s=settings.webhook_resolve_timeout_s,
                              allow_private=settings.webhook_allow_private)
    except UrlRefusedError as exc:
        raise Problem("webhook_url_refused", str(exc)) from None
    secret = new_secret()
    stored = SecretBox.from_setting(settings.secret_keys.get_secret_value()).seal(secret)
    row = await ctx.db.run(_create, principal, body, stored, settings.webhook_max_endpoints)
    return WebhookCreated(**row, secret=format_secret(secret))


def _list(conn: psycopg.Connection, principal: Principal) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(Q.webhook_endpoint_list, principal.owner_params()).fetchall()


@router.get("/webhooks", response_model=list[WebhookOut], summary="List webhook endpoints")
async def list_webhooks(ctx: Context, principal: Reader) -> list[WebhookOut]:
    """The caller's endpoints, with whether each is enabled and since when it fails."""
    return [WebhookOut(**row) for row in await ctx.db.run(_list, principal)]


def _delete(conn: psycopg.Connection, principal: Principal, endpoint_id: uuid.UUID) -> None:
    if conn.execute(Q.webhook_endpoint_delete, {"id": endpoint_id, **principal.owner_params()}).fetchone() is None:
        raise Problem("webhook_not_found")


@router.delete("/webhooks/{endpoint_id}", status_code=204, response_class=Response, summary="Remove an endpoint")
async def delete_webhook(ctx: Context, principal: Operator, endpoint_id: uuid.UUID) -> Response:
    """Remove the endpoint and its pending deliveries."""
    await ctx.db.run(_delete, principal, endpoint_id)
    return Response(status_code=204)


def _deliveries(conn: psycopg.Connection, principal: Principal, endpoint_id: uuid.UUID,
                limit: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        if cur.execute(Q.webhook_endpoint_get, {"id": endpoint_id, **principal.owner_params()}).fetchone() is None:
            raise Problem("webhook_not_found")
        return cur.execute(Q.webhook_delivery_list, {"endpoint_id": endpoint_id, "limit": limit}).fetchall()


@router.get("/webhooks/{endpoint_id}/deliveries", response_model=list[DeliveryOut], summary="Delivery log")
async def list_deliveries(ctx: Context, principal: Reader, endpoint_id: uuid.UUID,
                          limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[DeliveryOut]:
    """The endpoint's deliveries, newest first, each with every attempt (status code, latency, error)."""
    return [DeliveryOut(**row) for row in await ctx.db.run(_deliveries, principal, endpoint_id, limit)]
