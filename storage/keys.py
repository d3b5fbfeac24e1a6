"""Storage keys are built from UUIDs only, so no user-supplied name can reach a path.

Result keys are a function of (conversion, attempt): an attempt that crashed after writing its
file left an object whose key the rescuer can compute and delete.
"""

from __future__ import annotations

import re
import uuid

_KEY = re.compile(r"^[a-z0-9][a-z0-9_\-]*(/[a-z0-9][a-z0-9_\-.]*)*$")
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


class InvalidKeyError(ValueError):
    """A key that is not of the system's own form."""


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise ``InvalidKeyError``."""
    if len(key) > 512 or not _KEY.match(key) or ".." in key:
        raise InvalidKeyError(f"not a valid storage key: {key!r}")
    return key


def extension_for(mime_type: str) -> str:
    """The file extension for a supported image MIME type."""
    try:
        return _EXTENSIONS[mime_type]
    except KeyError:
        raise InvalidKeyError(f"unsupported MIME type for storage: {mime_type!r}") from None


def input_key(image_id: uuid.UUID, mime_type: str) -> str:
    """Key of an uploaded person or garment image."""
    return f"images/{image_id.hex[:2]}/{image_id}.{extension_for(mime_type)}"


def thumbnail_key(image_id: uuid.UUID) -> str:
    """Key of an image's JPEG thumbnail."""
    return f"thumbs/{image_id.hex[:2]}/{image_id}.jpg"


def result_prefix(conversion_id: uuid.UUID) -> str:
    """Prefix of every object any attempt of a conversion may have written."""
    return f"results/{conversion_id}/"


def result_key(conversion_id: uuid.UUID, attempt: int, mime_type: str, *, thumbnail: bool = False) -> str:
    """Key of the result image (or its thumbnail) written by one attempt of a conversion."""
    if thumbnail:
        return f"{result_prefix(conversion_id)}a{attempt}.thumb.jpg"
    return f"{result_prefix(conversion_id)}a{attempt}.{extension_for(mime_type)}"


def attempt_keys(conversion_id: uuid.UUID, attempt: int) -> list[str]:
    """Every key one attempt of a conversion may have written (to clean up after a lost attempt)."""
    keys = [result_key(conversion_id, attempt, mime) for mime in _EXTENSIONS]
    keys.append(result_key(conversion_id, attempt, "image/jpeg", thumbnail=True))
    return keys
