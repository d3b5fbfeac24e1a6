"""``GET /v1/stats``: the schema's stats functions for the caller."""

from __future__ import annotations

from datetime import datetime

import psycopg
from fastapi import APIRouter

from api.auth import Context, Reader
from api.keys import Principal
from api.schemas import StatsOut
from producer.conversions import conversion_stats, image_stats

router = APIRouter(prefix="/v1", tags=["stats"])


def _stats(conn: psycopg.Connection, principal: Principal, date_from: datetime | None,
           date_to: datetime | None) -> StatsOut:
    conversions = conversion_stats(conn, user_id=principal.user_id, vendor_id=principal.vendor_id,
                                   date_from=date_from, date_to=date_to)
    images = image_stats(conn, owner_id=principal.owner_id, owner_type=principal.owner_type)
    return StatsOut(conversions=conversions, images=images)


@router.get("/stats", response_model=StatsOut, summary="Conversion and image statistics")
async def get_stats(ctx: Context, principal: Reader, date_from: datetime | None = None,
                    date_to: datetime | None = None) -> StatsOut:
    """``get_conversion_stats()`` (over ``date_from <= created_at < date_to``) and ``get_image_stats()``."""
    return await ctx.db.run(_stats, principal, date_from, date_to)
