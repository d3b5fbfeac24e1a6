"""``DELETE /v1/images/{id}`` and ``DELETE /v1/conversions/{id}``: rows at once, objects right after.

The SQL functions remove the rows and mark every object in one transaction (``producer.deletion``);
the objects are deleted right after the commit, or by the leader's orphans duty if that fails.
Another owner's image or conversion reads as missing (404), as everywhere else.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from fastapi import APIRouter, Response

from api.auth import Context, Producer
from producer.deletion import delete_conversion, delete_image

router = APIRouter(prefix="/v1", tags=["deletion"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    204: {"description": "deleted (rows at once; stored objects right after, or by the leader soon)"},
    404: {"description": "no such resource of the caller's"},
}


@router.delete("/images/{image_id}", status_code=204, response_class=Response, responses=_RESPONSES,
               summary="Delete an image and everything made from it")
async def delete_image_route(ctx: Context, principal: Producer, image_id: uuid.UUID) -> Response:
    """Delete the caller's person photo or garment, its thumbnail, every conversion that used it (running ones
    are cancelled first; a garment's conversions by other owners too) and their results."""
    def work(conn: psycopg.Connection) -> None:
        delete_image(conn, ctx.storage, image_id, user_id=principal.user_id, vendor_id=principal.vendor_id)

    await ctx.db.run(work)
    return Response(status_code=204)


@router.delete("/conversions/{conversion_id}", status_code=204, response_class=Response, responses=_RESPONSES,
               summary="Delete a conversion and its result")
async def delete_conversion_route(ctx: Context, principal: Producer, conversion_id: uuid.UUID) -> Response:
    """Delete the caller's conversion (cancelled first if it is running), its result and thumbnail."""
    def work(conn: psycopg.Connection) -> None:
        delete_conversion(conn, ctx.storage, conversion_id, user_id=principal.user_id,
                          vendor_id=principal.vendor_id)

    await ctx.db.run(work)
    return Response(status_code=204)
