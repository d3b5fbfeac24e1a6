"""The one way every command builds its storage backend: ``STAYLER_STORAGE_URL``.

``file:///path`` is a folder (local or shared), ``s3://bucket/prefix`` an S3-compatible bucket whose
endpoint and credentials come from the standard AWS variables; ``?addressing_style=path`` may
follow for stores that need path-style requests. Unset, the folder under the state directory
(``STAYLER_STORAGE_DIR``) is used, as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from storage.base import Storage
from storage.local import LocalStorage

if TYPE_CHECKING:
    from core.settings import Settings


def from_url(url: str, *, url_prefix: str = "file://") -> Storage:
    """The backend a storage URL names; ``ValueError`` for anything else."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise ValueError(f"a file storage URL is file:///absolute/path, not {url!r}")
        return LocalStorage(Path(unquote(parts.path)), url_prefix)
    if parts.scheme == "s3":
        from storage.s3 import S3Storage

        options = parse_qs(parts.query)
        style = options.get("addressing_style", [None])[0]
        if style not in (None, "path", "virtual", "auto"):
            raise ValueError(f"addressing_style must be path, virtual or auto, not {style!r}")
        return S3Storage(parts.netloc, unquote(parts.path), addressing_style=style)
    raise ValueError(f"STAYLER_STORAGE_URL must be file:///path or s3://bucket/prefix, not {url!r}")


def from_settings(settings: Settings) -> Storage:
    """The configured backend: ``STAYLER_STORAGE_URL``, else the folder ``settings.storage_root``."""
    if settings.storage_url:
        return from_url(settings.storage_url, url_prefix=settings.storage_url_prefix)
    return LocalStorage(settings.storage_root, settings.storage_url_prefix)
