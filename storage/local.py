"""A storage backend on a local (or shared network) folder."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from storage.base import StorageError, StoredObject
from storage.keys import validate_key

_POOL_LOCK = threading.Lock()


def _fsync_quietly(fd: int) -> OSError | None:
    """fsync ``fd``; the error instead of raising it (one failed file must not fail the others)."""
    try:
        os.fsync(fd)
    except OSError as exc:
        return exc
    return None


class LocalStorage:
    """Objects as files under ``root``; writes go to a temporary file first, then ``os.replace``."""

    def __init__(self, root: Path, url_prefix: str = "file://") -> None:
        """Use ``root`` (created if missing) as the store's folder; :meth:`check` says if that failed."""
        self.root = root.resolve()
        self.url_prefix = url_prefix
        with contextlib.suppress(OSError):
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
            # Named after the key, so deleting the key also removes a partial write a crash left.
            fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
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

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> list[StoredObject | StorageError]:
        """Write several objects, each exactly as durable and atomic as :meth:`put`, with concurrent fsyncs.

        Every temporary file is written first, then all are fsync'd at once from a small thread pool
        (the filesystem's journal commits them together instead of one commit per file, which made
        sequential fsyncs most of a batch's wall time), then each is renamed into place. A file is
        renamed only after its own data is on disk, as with :meth:`put`. Results are in item order;
        an item that failed is its ``StorageError`` (the others are unaffected).
        """
        if len(items) < 2:
            return [self._put_or_error(key, data) for key, data in items]
        staged: list[tuple[str, Path, str, int, int] | StorageError] = []
        folders: set[Path] = set()  # a result and its thumbnail share a folder: create it once
        for key, data in items:
            tmp_name: str | None = None
            fd = -1
            try:
                path = self.path_for(key)
                if path.parent not in folders:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    folders.add(path.parent)
                fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                staged.append((key, path, tmp_name, fd, len(data)))
            except (OSError, ValueError, StorageError) as exc:  # ValueError: an invalid key
                if fd >= 0:
                    os.close(fd)
                if tmp_name is not None:
                    with contextlib.suppress(OSError):
                        Path(tmp_name).unlink()
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                error = exc if isinstance(exc, StorageError) else StorageError(f"could not write {key}: {reason}")
                staged.append(error)
        synced = list(self._fsync_pool().map(_fsync_quietly, [s[3] for s in staged if not isinstance(s, Exception)]))
        results: list[StoredObject | StorageError] = []
        errors = iter(synced)
        for entry in staged:
            if isinstance(entry, StorageError):
                results.append(entry)
                continue
            key, path, tmp_name, fd, size = entry
            sync_error = next(errors)
            try:
                os.close(fd)
                if sync_error is not None:
                    raise sync_error
                Path(tmp_name).replace(path)
                url = f"file://{path}" if self.url_prefix == "file://" else self.url_for(key)
                results.append(StoredObject(key=key, url=url, size=size))
            except OSError as exc:
                with contextlib.suppress(OSError):
                    Path(tmp_name).unlink()
                results.append(StorageError(f"could not write {key}: {exc.strerror or exc}"))
        return results

    def _put_or_error(self, key: str, data: bytes) -> StoredObject | StorageError:
        try:
            return self.put(key, data)
        except StorageError as exc:
            return exc

    def _fsync_pool(self) -> ThreadPoolExecutor:
        pool: ThreadPoolExecutor | None = self.__dict__.get("_pool")
        if pool is None:
            with _POOL_LOCK:
                pool = self.__dict__.get("_pool")
                if pool is None:
                    pool = self.__dict__["_pool"] = ThreadPoolExecutor(8, thread_name_prefix="storage-fsync")
        return pool

    def get(self, key: str) -> bytes:
        """Read a whole object."""
        path = self.path_for(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            # Name the key, not the host path: the message reaches error_message and the logs.
            raise FileNotFoundError(errno.ENOENT, "no such object", key) from None
        except OSError as exc:
            raise StorageError(f"could not read {key}: {exc.strerror or exc}") from exc

    def delete(self, key: str) -> None:
        """Remove one object if it exists, and any partial write of it a killed writer left behind."""
        path = self.path_for(key)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if path.parent.is_dir():
            for partial in path.parent.glob(f".tmp-{glob.escape(path.name)}.*"):
                partial.unlink(missing_ok=True)

    def delete_many(self, keys: Sequence[str]) -> list[str]:
        """Remove each key as :meth:`delete`; returns the keys that could not be removed."""
        failed: list[str] = []
        for key in keys:
            try:
                self.delete(key)
            except (OSError, ValueError, StorageError):
                failed.append(key)
        return failed

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

    # Bulk deletion and listing (the erasure, the orphans duty and `stayler storage audit`).

    def list_objects(self, prefix: str = "") -> Iterator[tuple[str, float]]:
        """Every file under the root whose key starts with ``prefix`` (partial writes, ``.tmp-*``, left out)."""
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            base = Path(folder).relative_to(self.root).as_posix()
            for name in files:
                if name.startswith("."):
                    continue
                key = name if base == "." else f"{base}/{name}"
                if key.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        yield key, (Path(folder) / name).stat().st_mtime

    def url_for(self, key: str) -> str:
        """``file://`` URL (or the configured prefix) of a key."""
        if self.url_prefix == "file://":
            return f"file://{self.path_for(key)}"
        return f"{self.url_prefix.rstrip('/')}/{key}"

    def presigned_url(self, key: str, ttl_s: int) -> str | None:
        """None: a folder has no time-limited URLs (the API serves such files itself)."""
        return None

    def describe(self) -> str:
        """The folder as a ``file://`` URL."""
        return f"file://{self.root}"

    def check(self) -> None:
        """The folder exists and a probe object can be written, read back and removed."""
        if not self.root.is_dir():
            raise StorageError(f"storage folder {self.root} does not exist")
        probe = f"check/{uuid.uuid4().hex}"
        try:
            self.put(probe, b"ok")
            if self.get(probe) != b"ok":
                raise StorageError(f"storage folder {self.root} returned other bytes than written")
        except (StorageError, OSError) as exc:
            raise StorageError(f"storage folder {self.root} is not usable: {exc}") from exc
        finally:
            with contextlib.suppress(OSError, StorageError):
                self.delete(probe)
                self.path_for(probe).parent.rmdir()
