"""A storage backend on a local (or shared network) folder."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from storage.base import StorageError, StoredObject
from storage.keys import validate_key


class LocalStorage:
    """Objects as files under ``root``; writes go to a temporary file first, then ``os.replace``."""

    def __init__(self, root: Path, url_prefix: str = "file://") -> None:
        """Use ``root`` (created if missing) as the store's folder."""
        self.root = root.resolve()
        self.url_prefix = url_prefix
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        """The file path of ``key``; refuses anything that would leave the root."""
        path = (self.root / validate_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise StorageError(f"key escapes the storage root: {key!r}")
        return path

    def put(self, key: str, data: bytes) -> StoredObject:
        """Write atomically: a temporary file in the same folder, fsync, rename."""
        path = self.path_for(key)
        tmp_name: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            Path(tmp_name).replace(path)
            tmp_name = None
        except OSError as exc:
            raise StorageError(f"could not write {key}: {exc.strerror or exc}") from exc
        finally:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    Path(tmp_name).unlink()
        return StoredObject(key=key, url=self.url_for(key), size=len(data))

    def get(self, key: str) -> bytes:
        """Read a whole object."""
        path = self.path_for(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageError(f"could not read {key}: {exc.strerror or exc}") from exc

    def delete(self, key: str) -> None:
        """Remove one object if it exists."""
        with contextlib.suppress(FileNotFoundError):
            self.path_for(key).unlink()

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under a folder-like prefix such as ``results/<id>/``."""
        folder = self.path_for(prefix.rstrip("/"))
        if not folder.is_dir():
            return 0
        removed = 0
        for child in folder.iterdir():
            if child.is_file():
                child.unlink(missing_ok=True)
                removed += 1
        with contextlib.suppress(OSError):
            folder.rmdir()
        return removed

    def url_for(self, key: str) -> str:
        """``file://`` URL (or the configured prefix) of a key."""
        if self.url_prefix == "file://":
            return f"file://{self.path_for(key)}"
        return f"{self.url_prefix.rstrip('/')}/{key}"
