"""A storage backend on any S3-compatible object store (AWS S3, MinIO, Ceph RGW, R2, moto).

The client is boto3, the reference SDK: it reads the standard AWS variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, profiles, instance roles)
exactly as every other AWS tool does, retries throttling and 5xx answers itself, signs presigned
URLs, and its low-level client is thread-safe, which ``put_many`` relies on. obstore was weighed: it
is faster per request, but the bytes here are small images whose time goes to the round trip, and
it adds a second credential chain to document; boto3 is the lower-risk choice.

Guarantees, as with the folder backend: an object is written with one ``PutObject``, which S3 makes
visible whole or not at all (never a partial object); it is conditional (``If-None-Match: *``) so a
write-once key is never silently replaced, and a repeat of the same bytes (a client retry after a
lost answer) is recognised and succeeds. Stores that do not implement conditional writes answer
501, after which this backend falls back to plain puts.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from storage.base import StorageError, StoredObject
from storage.keys import validate_key

log = logging.getLogger(__name__)

_CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "AccessDenied",
                     "403", "InvalidClientTokenId", "AuthorizationHeaderMalformed"}
_MISSING_BUCKET_CODES = {"NoSuchBucket"}
_DELETE_BATCH = 1000  # the most keys one DeleteObjects call accepts


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _status(exc: Exception) -> int:
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class S3Storage:
    """Objects under ``prefix`` in ``bucket``; ``original_url`` values are ``s3://bucket/prefix/key``."""

    def __init__(self, bucket: str, prefix: str = "", *, addressing_style: str | None = None,
                 max_workers: int = 8, client: Any | None = None) -> None:
        """Use ``bucket`` (which must exist) under ``prefix``; the client is made on first use in each process."""
        if not bucket:
            raise ValueError("an S3 storage URL needs a bucket: s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        if self.prefix:
            validate_key(self.prefix.rstrip("/"))
        self.addressing_style = addressing_style
        self.max_workers = max_workers
        self.conditional = True
        self._client = client
        self._pid = os.getpid() if client is not None else -1
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The boto3 S3 client of this process (boto3 clients must not cross a fork)."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    import boto3
                    from botocore.config import Config

                    s3_options = {"addressing_style": self.addressing_style} if self.addressing_style else {}
                    config = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5,
                                    read_timeout=30, max_pool_connections=max(10, self.max_workers * 2),
                                    s3=s3_options)
                    for name in ("botocore", "boto3"):  # their INFO lines ("Found credentials…") are noise here
                        if logging.getLogger(name).level == logging.NOTSET:
                            logging.getLogger(name).setLevel(logging.WARNING)
                    self._client = boto3.session.Session().client("s3", config=config)
                    self._pool = None
                    self._pid = os.getpid()
        return self._client

    def object_key(self, key: str) -> str:
        """The bucket key of a storage key (the prefix prepended)."""
        return self.prefix + validate_key(key)

    def describe(self) -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.bucket}/{self.prefix}"

    def url_for(self, key: str) -> str:
        """The stable ``s3://bucket/prefix/key`` URL of a key."""
        return f"s3://{self.bucket}/{self.object_key(key)}"

    def presigned_url(self, key: str, ttl_s: int) -> str | None:
        """A presigned GET URL valid for ``ttl_s`` seconds (signed locally: no request is made)."""
        return str(self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.object_key(key)}, ExpiresIn=int(ttl_s)))

    def _fail(self, action: str, key: str, exc: Exception) -> StorageError:
        """One line naming the cause an operator can act on."""
        code = _error_code(exc)
        if code in _MISSING_BUCKET_CODES or (action == "reach" and _status(exc) == 404):
            return StorageError(f"S3 bucket {self.bucket!r} does not exist (endpoint {self._endpoint()})")
        if code in _CREDENTIAL_CODES:
            return StorageError(f"S3 refused the credentials for bucket {self.bucket!r} ({code}): check "
                                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy")
        if type(exc).__name__ == "NoCredentialsError":
            return StorageError("no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                                "(or a profile or instance role)")
        reason = f"{code}: {getattr(exc, 'response', {}).get('Error', {}).get('Message', '')}" if code else str(exc)
        return StorageError(f"could not {action} {key} in {self.describe()}: {reason}")

    def _endpoint(self) -> str:
        try:
            return str(self.client.meta.endpoint_url)
        except Exception:
            return "unknown"

    def put(self, key: str, data: bytes) -> StoredObject:
        """One ``PutObject`` (visible whole or not at all), conditional on the key being new."""
        from botocore.exceptions import BotoCoreError, ClientError

        name = self.object_key(key)
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": name, "Body": data,
                                "ContentType": _CONTENT_TYPES.get(key.rsplit(".", 1)[-1], "application/octet-stream")}
        try:
            try:
                self.client.put_object(**args, **({"IfNoneMatch": "*"} if self.conditional else {}))
            except ClientError as exc:
                status = _status(exc)
                if status == 501 and self.conditional:
                    log.warning("the S3 store does not implement conditional writes; using plain puts",
                                extra={"storage": self.describe()})
                    self.conditional = False
                    self.client.put_object(**args)
                elif status in (409, 412):  # already there (a retried put of ours) or a concurrent put
                    if self._read(name) != data:
                        raise StorageError(f"could not write {key}: another object already has this key") from None
                else:
                    raise
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("write", key, exc) from exc
        return StoredObject(key=key, url=f"s3://{self.bucket}/{name}", size=len(data))

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> list[StoredObject | StorageError]:
        """Write the items concurrently from a small thread pool; results (or errors) in item order."""
        if len(items) < 2:
            return [self._put_or_error(key, data) for key, data in items]
        return list(self._executor().map(lambda item: self._put_or_error(*item), items))

    def _put_or_error(self, key: str, data: bytes) -> StoredObject | StorageError:
        try:
            return self.put(key, data)
        except StorageError as exc:
            return exc
        except ValueError as exc:  # an invalid key
            return StorageError(f"could not write {key}: {exc}")

    def _executor(self) -> ThreadPoolExecutor:
        self.client  # noqa: B018 - a fork resets the pool together with the client
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="storage-s3")
            return self._pool

    def _read(self, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=name)["Body"].read())
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise

    def get(self, key: str) -> bytes:
        """Read a whole object; ``FileNotFoundError`` naming the key when there is none."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            data = self._read(self.object_key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("read", key, exc) from exc
        if data is None:
            raise FileNotFoundError(errno.ENOENT, "no such object", key)
        return data

    def delete(self, key: str) -> None:
        """Remove one object (S3 answers success when it does not exist)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("delete", key, exc) from exc

    def delete_many(self, keys: Sequence[str]) -> list[str]:
        """One ``DeleteObjects`` per 1,000 keys; returns the keys S3 did not remove (or that were never sent).

        A batch the store refuses as a whole (down, throttled past the client's retries) leaves its
        keys and every later batch's keys in the answer, with one warning, so a dead store costs one
        request, not one per key.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        failed: list[str] = []
        names: dict[str, str] = {}
        for key in keys:
            try:
                names[self.object_key(key)] = key
            except ValueError:  # an invalid key can never be removed
                failed.append(key)
        pending = list(names)
        for start in range(0, len(pending), _DELETE_BATCH):
            batch = pending[start:start + _DELETE_BATCH]
            try:
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": n} for n in batch], "Quiet": True})
            except (ClientError, BotoCoreError) as exc:
                log.warning("could not delete objects", extra={"storage": self.describe(),
                                                               "error": str(self._fail("delete", batch[0], exc)),
                                                               "keys": len(pending) - start})
                failed.extend(names[n] for n in pending[start:])
                break
            failed.extend(names[e["Key"]] for e in answer.get("Errors", []) if e.get("Key") in names)
        return failed

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under a folder-like prefix such as ``results/<id>/``."""
        from botocore.exceptions import BotoCoreError, ClientError

        folder = self.object_key(prefix.rstrip("/")) + "/"
        removed = 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder)
            names = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
            for start in range(0, len(names), _DELETE_BATCH):
                batch = names[start:start + _DELETE_BATCH]
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": n} for n in batch], "Quiet": True})
                errors = answer.get("Errors", [])
                if errors:
                    first = errors[0]
                    raise StorageError(f"could not delete {first.get('Key')} in {self.describe()}: "
                                       f"{first.get('Code')} ({len(errors)} objects left)")
                removed += len(batch)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("delete", prefix, exc) from exc
        return removed

    # Bulk deletion and listing (the erasure, the orphans duty and `stayler storage audit`).

    def list_objects(self, prefix: str = "") -> Iterator[tuple[str, float]]:
        """Every object under this store's prefix whose key starts with ``prefix``, page by page."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(self.prefix):], obj["LastModified"].timestamp()
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("list", self.describe(), exc) from exc

    def check(self) -> None:
        """The bucket exists, the credentials are accepted, and a probe object can be listed, written and removed."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("reach", self.describe(), exc) from exc
        probe = f"check/{uuid.uuid4().hex}"
        try:
            self.put(probe, b"ok")
        finally:
            try:
                self.delete(probe)
            except StorageError:
                log.warning("could not remove the storage probe object", extra={"key": probe})
