"""Registering an image: validate with Pillow, store under a system key, write its row and usage."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import psycopg

from core.settings import Settings
from imaging import ImageError, decode_image, make_thumbnail
from producer.errors import ProducerError, database_errors
from schema.queries import Q
from storage import Storage, StorageError, input_key, thumbnail_key

OWNER_TYPES = ("user", "vendor")
INPUT_TYPES = ("user", "cloth")
#: The bounds register_image() enforces (migration 0490), checked here before anything is stored.
MAX_TAGS = 32
MAX_TAG_CHARS = 64


@dataclass(frozen=True)
class ImageLimits:
    """What an image may be: bytes, pixels, and the thumbnail's longer side."""

    max_bytes: int
    max_pixels: int
    thumbnail_size: int = 256
    #: Memory a decode may need, estimated from the header (imaging.budget); None: unbounded.
    max_decode_bytes: int | None = None
    #: Seconds after which an upload's objects that no row claims are deleted (STAYLER_ORPHAN_GRACE_S).
    orphan_grace_s: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        """The limits configured by STAYLER_MAX_IMAGE_BYTES / _PIXELS / STAYLER_MAX_DECODE_BYTES,
        STAYLER_THUMBNAIL_SIZE and STAYLER_ORPHAN_GRACE_S."""
        return cls(settings.max_image_bytes, settings.max_image_pixels, settings.thumbnail_size,
                   settings.max_decode_bytes, orphan_grace_s=settings.orphan_grace_s)


@dataclass(frozen=True)
class ImageRecord:
    """A registered image."""

    id: uuid.UUID
    file_path: str
    original_url: str
    thumbnail_url: str
    mime_type: str
    width: int
    height: int
    file_size: int


def display_name(name: str | None, fallback: str) -> str:
    """A file name kept for display only (never used as a path): base name, printable, bounded."""
    if not name:
        return fallback
    base = PurePath(name.replace("\\", "/")).name
    clean = "".join(ch for ch in base if ch.isprintable() and ch not in "\x00/").strip()
    return clean[:255] or fallback


def check_tags(tags: Sequence[str]) -> None:
    """Refuse (``invalid_argument``) more than MAX_TAGS tags or a tag outside 1..MAX_TAG_CHARS characters."""
    if len(tags) > MAX_TAGS:
        raise ProducerError("invalid_argument", f"{len(tags)} tags; at most {MAX_TAGS} are allowed")
    if any(not 1 <= len(tag) <= MAX_TAG_CHARS for tag in tags):
        raise ProducerError("invalid_argument", f"every tag must have 1 to {MAX_TAG_CHARS} characters")


def register_image(conn: psycopg.Connection, storage: Storage, data: bytes, *, owner_id: uuid.UUID,
                   owner_type: str, image_type: str, limits: ImageLimits, file_name: str | None = None,
                   album_id: uuid.UUID | None = None, is_public: bool = False,
                   is_free: bool = True, tags: Sequence[str] = (), metadata: Mapping[str, Any] | None = None
                   ) -> ImageRecord:
    """Validate and store an image, then register it with ``register_image()`` (its row and ``upload`` usage).

    The format is decided from the content (JPEG, PNG or WebP), the whole image is decoded before
    anything is stored, and a failure to write the rows deletes the stored files again. The key is
    the one ``register_image()`` derives from the id (``storage.keys.input_key``), so this API and a
    plain-SQL producer register images the same way.
    """
    if owner_type not in OWNER_TYPES:
        raise ProducerError("invalid_argument", f"owner_type must be one of {OWNER_TYPES}, not {owner_type!r}")
    if image_type not in INPUT_TYPES:
        raise ProducerError("invalid_argument", f"image type must be one of {INPUT_TYPES}, not {image_type!r}")
    check_tags(tags)
    if len(data) > limits.max_bytes:
        raise ProducerError("image_too_large",
                            f"the file is {len(data):,} bytes; the limit is {limits.max_bytes:,}")
    try:
        decoded = decode_image(data, max_pixels=limits.max_pixels, max_bytes=limits.max_bytes,
                               max_decode_bytes=limits.max_decode_bytes)
    except ImageError as exc:
        raise ProducerError(exc.error_type, f"not accepted: {exc}") from exc

    image_id = uuid.uuid4()
    key = input_key(image_id, decoded.mime_type)
    thumb_key = thumbnail_key(image_id)
    keys = [key, thumb_key]
    # Durable markers first: a process that dies between the writes and the row leaves objects that
    # the leader's orphans duty deletes after the grace period (leader/sweep.py).
    with database_errors("registering the image"), conn.transaction():
        conn.execute(Q.storage_markers_add, {"keys": keys, "grace_s": limits.orphan_grace_s})
    stored = storage.put(key, data)
    thumb = storage.put(thumb_key, make_thumbnail(decoded.to_pil(), limits.thumbnail_size))
    try:
        with database_errors("registering the image"), conn.transaction():
            row = conn.execute(Q.storage_markers_take, {"keys": keys}).fetchone()
            if row is None or row[0] != len(keys):
                raise StorageError("the upload outlived its grace period (STAYLER_ORPHAN_GRACE_S) and its "
                                   "objects were cleaned up; upload it again")
            conn.execute(Q.register_image, {
                "image_id": image_id, "owner_id": owner_id, "owner_type": owner_type, "album_id": album_id,
                "file_path": key, "file_name": display_name(file_name, key.rsplit("/", 1)[-1]),
                "original_url": stored.url, "thumbnail_url": thumb.url, "file_size": len(data),
                "mime_type": decoded.mime_type, "width": decoded.width, "height": decoded.height,
                "type": image_type, "is_public": is_public, "is_free": is_free, "tags": list(tags),
                "metadata": json.dumps(dict(metadata or {})),
            })
    except BaseException:
        # Best effort: whatever is left keeps its marker and goes with the orphans duty.
        with contextlib.suppress(Exception):
            if not storage.delete_many(keys):
                conn.execute(Q.storage_marker_delete, {"keys": keys})
        raise
    return ImageRecord(image_id, key, stored.url, thumb.url, decoded.mime_type, decoded.width, decoded.height,
                       len(data))
