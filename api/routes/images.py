"""``POST /v1/images``: validated exactly as the Python producer does, stored through the storage backend."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, File, Form, UploadFile

from api.auth import Context, Producer
from api.keys import Principal
from api.limits import InvalidJsonError, check_metadata, parse_strict
from api.problems import Problem
from api.schemas import ImageOut
from core.settings import Settings
from producer.images import ImageLimits, register_image
from schema.queries import Q
from storage import Storage

router = APIRouter(prefix="/v1", tags=["images"])


def _metadata(text: str | None, settings: Settings) -> dict[str, Any]:
    if not text:
        return {}
    if len(text) > settings.api_max_metadata_bytes:
        raise Problem("metadata_too_large", f"metadata may have at most {settings.api_max_metadata_bytes:,} bytes")
    try:
        value = parse_strict(text.encode("utf-8", "surrogatepass"))
    except InvalidJsonError as exc:
        raise Problem("invalid_json", f"metadata: {exc}") from None
    check_metadata(value, max_bytes=settings.api_max_metadata_bytes, max_depth=settings.api_max_metadata_depth)
    return dict(value)


def _register(conn: psycopg.Connection, storage: Storage, data: bytes, principal: Principal, *, image_type: str,
              limits: ImageLimits, file_name: str | None, album_id: uuid.UUID | None, is_public: bool,
              tags: list[str], metadata: dict[str, Any]) -> ImageOut:
    if album_id is not None:
        row = conn.execute(Q.album_check_owned, {"id": album_id, "owner_id": principal.owner_id,
                                               "owner_type": principal.owner_type}).fetchone()
        if row is None or not row[0]:
            raise Problem("not_found", "the album does not exist")
    record = register_image(conn, storage, data, owner_id=principal.owner_id, owner_type=principal.owner_type,
                            image_type=image_type, limits=limits, file_name=file_name, album_id=album_id,
                            is_public=is_public, tags=tags, metadata=metadata)
    return ImageOut(id=record.id, type=image_type, width=record.width, height=record.height,
                    mime_type=record.mime_type, file_size=record.file_size, is_public=is_public)


@router.post("/images", status_code=201, response_model=ImageOut, summary="Upload and register an image")
async def upload_image(
    ctx: Context,
    principal: Producer,
    file: Annotated[UploadFile, File(description="JPEG, PNG or WebP; the format is read from the content")],
    type: Annotated[Literal["user", "cloth"], Form(description="a person photo (user) or a garment (cloth)")],
    is_public: Annotated[bool, Form()] = False,
    album_id: Annotated[uuid.UUID | None, Form()] = None,
    tags: Annotated[list[str] | None,
                    Form(description="repeat the field for several tags: at most 32 of 1 to 64 characters")] = None,
    metadata: Annotated[str | None, Form(description="a JSON object")] = None,
) -> ImageOut:
    """Validate the image (content sniffing, byte and pixel limits, full decode), store it and its
    thumbnail, and write its row. Bodies over STAYLER_API_MAX_UPLOAD_BYTES are refused unread."""
    meta = _metadata(metadata, ctx.settings)
    async with ctx.decodes.admit():  # bounded: STAYLER_API_MAX_CONCURRENT_DECODES (api.decoding)
        data = await file.read(ctx.limits.max_bytes + 1)
        try:
            return await ctx.db.run(_register, ctx.storage, data, principal, image_type=type, limits=ctx.limits,
                                    file_name=file.filename, album_id=album_id, is_public=is_public,
                                    tags=[t for t in (tags or []) if t], metadata=meta)
        finally:
            del data
