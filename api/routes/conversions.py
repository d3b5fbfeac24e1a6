"""Conversions: create (idempotent), read (optionally waiting), list, cancel, and their result bytes."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import anyio.to_thread
import psycopg
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import RedirectResponse
from psycopg.rows import dict_row
from psycopg.types.string import TextLoader

from api import idempotency
from api.auth import Context, Producer, Reader
from api.context import ApiContext
from api.keys import Principal
from api.limits import check_metadata
from api.problems import Problem, from_producer
from api.quota import admit
from api.ratelimit import limit_rate
from api.results import conversion_view, location, presign, result_links, thumbnail_key_of, url_ttl_s
from api.schemas import ConversionIn, ConversionOut, ConversionPage, ConversionStatus
from api.waiters import wait_for_end
from producer.conversions import cancel
from producer.errors import ProducerError
from schema import statuses
from schema.queries import Q

router = APIRouter(prefix="/v1", tags=["conversions"])
MAX_WAIT_S = 60


def fetch(conn: psycopg.Connection, principal: Principal, conversion_id: uuid.UUID) -> dict[str, Any]:
    """The caller's conversion, or 404 (also when it is another owner's)."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(Q.conversion_get_owned, {"id": conversion_id, **principal.owner_params()}).fetchone()
    if row is None:
        raise Problem("conversion_not_found")
    return row


def _view(ctx: ApiContext, request: Request, row: dict[str, Any]) -> ConversionOut:
    return conversion_view(row, result_links(row, ctx.storage, str(request.base_url), url_ttl_s(ctx.settings)))


@router.post("/conversions", status_code=202, response_model=ConversionOut, summary="Create a conversion",
             responses={409: {"description": "a request with this Idempotency-Key is still in progress"},
                        422: {"description": "invalid, or the Idempotency-Key was used with another payload"}})
async def create_conversion(ctx: Context, principal: Producer, body: ConversionIn, request: Request,
                            response: Response,
                            idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
                            ) -> ConversionOut:
    """Queue a conversion of ``user_image_id`` wearing ``cloth_image_id``; 202 with ``Location``."""
    check_metadata(body.metadata, max_bytes=ctx.settings.api_max_metadata_bytes,
                   max_depth=ctx.settings.api_max_metadata_depth)
    await limit_rate(ctx, principal, response)

    def work(conn: psycopg.Connection) -> tuple[dict[str, Any], bool]:
        admit(conn, principal, priority=body.priority, conversion_type=body.conversion_type, settings=ctx.settings)
        try:
            conversion_id, replayed = idempotency.create(conn, principal, body, idempotency_key,
                                                         ctx.settings.default_max_retries)
        except ProducerError as exc:
            problem = from_producer(exc)
            if problem.kind.name == "image_wrong_type":
                _hide_inaccessible(conn, principal, body)
            raise problem from exc
        if ctx.waker is not None and not replayed:
            ctx.waker.after_commit(conn)  # a hint: the leader's NOTIFY path stays the guarantee
        return fetch(conn, principal, conversion_id), replayed

    row, replayed = await ctx.db.run(work)
    response.headers["Location"] = location(row["id"])
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return _view(ctx, request, row)


def _hide_inaccessible(conn: psycopg.Connection, principal: Principal, body: ConversionIn) -> None:
    """A wrong-type image the caller may not use reads as missing (its existence is not theirs to know)."""
    for image_id in (body.user_image_id, body.cloth_image_id):
        row = conn.execute(Q.image_check_accessible, {"id": image_id, "owner_id": principal.owner_id,
                                                    "owner_type": principal.owner_type}).fetchone()
        if row is None or not row[0]:
            raise Problem("image_not_found")


@router.get("/conversions/{conversion_id}", response_model=ConversionOut, summary="Read (and wait for) a conversion")
async def get_conversion(ctx: Context, principal: Reader, conversion_id: uuid.UUID, request: Request,
                         wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description=
                                                      "hold up to this many seconds until it ends")] = 0,
                         ) -> ConversionOut:
    """The conversion; with ``wait=N`` the answer comes when it is terminal or after N seconds."""
    if wait <= 0:
        return _view(ctx, request, await ctx.db.run(fetch, principal, conversion_id))
    with ctx.waiters.admit(principal.key_id):
        row = await wait_for_end(request, ctx.hub, conversion_id, wait,
                                 lambda: ctx.db.run(fetch, principal, conversion_id))
    if row is None:  # the client hung up: nobody reads this answer
        return Response(status_code=499)  # type: ignore[return-value]
    return _view(ctx, request, row)


def _encode_cursor(row: dict[str, Any]) -> str:
    raw = f"{row['created_at'].isoformat()}|{row['id']}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, ident = raw.partition("|")
        return datetime.fromisoformat(created), uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Problem("bad_request", "cursor is not one this API returned") from None


def _page(conn: psycopg.Connection, principal: Principal, status: str | None, limit: int,
          after: tuple[datetime, uuid.UUID] | None) -> list[dict[str, Any]]:
    query = Q.conversion_list_user if principal.user_id is not None else Q.conversion_list_vendor
    ids = [r[0] for r in conn.execute(query, {
        "owner_id": principal.owner_id, "status": status, "limit": limit,
        "after_created_at": after[0] if after else None, "after_id": after[1] if after else None}).fetchall()]
    if not ids:
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        cur.adapters.register_loader("jsonb", TextLoader)  # metadata stays the database's JSON text
        return cur.execute(Q.conversion_get_many_owned, {"ids": ids, **principal.owner_params()}).fetchall()


@router.get("/conversions", response_model=ConversionPage, summary="List the caller's conversions")
async def list_conversions(ctx: Context, principal: Reader, request: Request,
                           status: ConversionStatus | None = None,
                           limit: Annotated[int, Query(ge=1, le=200)] = 50,
                           cursor: str | None = None) -> Response:
    """Newest first, keyset-paginated: pass ``next_cursor`` back as ``cursor``.

    A page can hold 200 × 16 KiB of metadata: it is built and serialized in a worker thread, so the
    event loop (and every other request, ``/healthz`` included) never waits for it.
    """
    after = _decode_cursor(cursor) if cursor else None

    rows = await ctx.db.run(_page, principal, status, limit, after)

    def serialize() -> bytes:
        # Each row's metadata is spliced in as the JSON text PostgreSQL produced: never parsed into
        # Python objects and never validated or re-encoded, which was most of a large page's cost.
        items = [_view(ctx, request, {**r, "metadata": None}).model_dump_json(exclude={"metadata"})[:-1]
                 + ',"metadata":' + (r["metadata"] or "{}") + "}" for r in rows]
        next_cursor = _encode_cursor(rows[-1]) if len(rows) == limit else None
        return ('{"items":[' + ",".join(items) + '],"next_cursor":' + json.dumps(next_cursor) + "}").encode()

    return Response(await anyio.to_thread.run_sync(serialize), media_type="application/json")


@router.post("/conversions/{conversion_id}/cancel", response_model=ConversionOut, summary="Cancel a conversion",
             responses={409: {"description": "the conversion already completed or failed"}})
async def cancel_conversion(ctx: Context, principal: Producer, conversion_id: uuid.UUID,
                            request: Request) -> ConversionOut:
    """Cancel through ``cancel_conversion()`` and the owner rule; cancelling twice is fine."""
    def work(conn: psycopg.Connection) -> dict[str, Any]:
        fetch(conn, principal, conversion_id)  # 404 for anyone but the owner, before anything moves
        status = cancel(conn, conversion_id, user_id=principal.user_id, vendor_id=principal.vendor_id)
        if status != statuses.ConversionStatus.CANCELLED:
            raise Problem("invalid_status_transition", f"the conversion already ended: {status}")
        return fetch(conn, principal, conversion_id)

    return _view(ctx, request, await ctx.db.run(work))


async def _object(ctx: ApiContext, principal: Principal, conversion_id: uuid.UUID,
                  which: Literal["result", "thumbnail"]) -> Response:
    row = await ctx.db.run(fetch, principal, conversion_id)
    key = row.get("result_key") if which == "result" else thumbnail_key_of(row)
    if row["status"] != statuses.ConversionStatus.COMPLETED or not key:
        raise Problem("result_not_available", f"the conversion is {row['status']}")
    url = presign(ctx.storage, key, url_ttl_s(ctx.settings))
    if url is not None:
        return RedirectResponse(url, status_code=307)
    try:
        data = await asyncio.to_thread(ctx.storage.get, key)
    except FileNotFoundError:
        raise Problem("result_not_available", "the result file is gone") from None
    media = (row.get("result_mime_type") or "image/jpeg") if which == "result" else "image/jpeg"
    return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=3600"})


_IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}, "image/webp": {}}, "description": "the image"},
    307: {"description": "redirect to a presigned URL (S3 storage)"},
}


@router.get("/conversions/{conversion_id}/result", response_class=Response, responses=_IMAGE_RESPONSES,
            summary="The result image")
async def get_result(ctx: Context, principal: Reader, conversion_id: uuid.UUID) -> Response:
    """The result's bytes, or a redirect to a presigned URL."""
    return await _object(ctx, principal, conversion_id, "result")


@router.get("/conversions/{conversion_id}/thumbnail", response_class=Response, responses=_IMAGE_RESPONSES,
            summary="The result's thumbnail")
async def get_thumbnail(ctx: Context, principal: Reader, conversion_id: uuid.UUID) -> Response:
    """The thumbnail's bytes, or a redirect to a presigned URL."""
    return await _object(ctx, principal, conversion_id, "thumbnail")
