"""Result links and the conversion view: presigned URLs when the storage backend makes them, else API URLs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from api.schemas import ConversionOut, ResultOut
from core.settings import Settings
from schema.statuses import ConversionStatus
from storage import LocalStorage, Storage, result_key

DEFAULT_URL_TTL_S = 900


def open_storage(settings: Settings) -> Storage:
    """The configured storage backend (``storage.from_settings`` where the storage package has it)."""
    import storage

    factory = getattr(storage, "from_settings", None)
    if callable(factory):
        backend: Storage = factory(settings)
        return backend
    return LocalStorage(settings.storage_root, settings.storage_url_prefix)


def url_ttl_s(settings: Settings) -> int:
    """Lifetime of presigned result URLs (STAYLER_RESULT_URL_TTL_S)."""
    return int(getattr(settings, "result_url_ttl_s", DEFAULT_URL_TTL_S))


def presign(storage: Storage, key: str, ttl_s: int) -> str | None:
    """A presigned URL of ``key`` when the backend makes them (S3), else None."""
    method = getattr(storage, "presigned_url", None)
    if not callable(method):
        return None
    url = method(key, ttl_s)
    return url if isinstance(url, str) else None


def thumbnail_key_of(row: dict[str, Any]) -> str | None:
    """The key of a result's thumbnail (written beside the result by the same attempt)."""
    key = row.get("result_key")
    if not key:
        return None
    attempt = row.get("result_attempt")
    if attempt and str(attempt).isdigit():
        return result_key(row["id"], int(attempt), row.get("result_mime_type") or "image/jpeg", thumbnail=True)
    return key.rsplit(".", 1)[0] + ".thumb.jpg"


def result_links(row: dict[str, Any], storage: Storage, base_url: str, ttl_s: int) -> ResultOut | None:
    """The ``result`` object of a completed conversion, or None."""
    if row["status"] != ConversionStatus.COMPLETED or row.get("result_image_id") is None or not row.get("result_key"):
        return None
    thumb_key = thumbnail_key_of(row)
    url = presign(storage, row["result_key"], ttl_s)
    thumb = presign(storage, thumb_key, ttl_s) if url and thumb_key else None
    if url and thumb:
        return ResultOut(image_id=row["result_image_id"], url=url, thumbnail_url=thumb,
                         expires_at=datetime.now(UTC) + timedelta(seconds=ttl_s))
    api_url = f"{base_url.rstrip('/')}/v1/conversions/{row['id']}"
    return ResultOut(image_id=row["result_image_id"], url=f"{api_url}/result", thumbnail_url=f"{api_url}/thumbnail")


#: Deeper metadata cannot be serialized in a response; only rows stored before the limit have it.
VIEWABLE_DEPTH = 200


def viewable_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """The metadata to answer with: ``{}`` for a stored document too deep to serialize (the list never 500s)."""
    if not metadata:
        return {}
    from api.limits import depth_of

    return metadata if depth_of(metadata) <= VIEWABLE_DEPTH else {}


def conversion_view(row: dict[str, Any], result: ResultOut | None) -> ConversionOut:
    """The API's view of a ``conversion_get_owned`` row."""
    return ConversionOut(
        id=row["id"], status=row["status"], conversion_type=row["conversion_type"], style_name=row["style_name"],
        user_image_id=row["user_image_id"], cloth_image_id=row["cloth_image_id"], priority=row["priority"],
        metadata=viewable_metadata(row["metadata"]), attempts=row["attempt"] or 0, retry_count=row["retry_count"],
        max_retries=row["max_retries"], error_type=row["error_type"], error_message=row["error_message"],
        processing_time_ms=row["processing_time_ms"], created_at=row["created_at"], updated_at=row["updated_at"],
        started_at=row["started_at"], completed_at=row["completed_at"], result=result)


def location(conversion_id: uuid.UUID) -> str:
    """The conversion's path, for ``Location`` headers."""
    return f"/v1/conversions/{conversion_id}"
