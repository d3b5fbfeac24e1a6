"""The storage contract, against the folder and a real S3 server alike."""

from __future__ import annotations

import errno
import threading
import urllib.request
import uuid
from pathlib import Path

import pytest

from storage import LocalStorage, Storage, StorageError, StoredObject, from_url, result_key, result_prefix
from storage.s3 import S3Storage
from tests.infra.s3 import S3Server, locked_server


def test_put_then_get_returns_the_bytes_and_a_stable_url(backend: Storage) -> None:
    key = result_key(uuid.uuid4(), 1, "image/jpeg")
    stored = backend.put(key, b"\xff\xd8jpeg")
    assert stored == StoredObject(key=key, url=backend.url_for(key), size=6)
    assert backend.get(key) == b"\xff\xd8jpeg"
    if isinstance(backend, S3Storage):
        assert stored.url == f"s3://{backend.bucket}/tenant-a/{key}"
    else:
        assert stored.url.startswith("file:///")


def test_a_missing_object_is_file_not_found_naming_the_key(backend: Storage) -> None:
    with pytest.raises(FileNotFoundError) as info:
        backend.get("images/ab/nothing.jpg")
    assert info.value.errno == errno.ENOENT and info.value.filename == "images/ab/nothing.jpg"


def test_delete_is_idempotent(backend: Storage) -> None:
    backend.put("images/aa/x.png", b"png")
    backend.delete("images/aa/x.png")
    backend.delete("images/aa/x.png")
    with pytest.raises(FileNotFoundError):
        backend.get("images/aa/x.png")


def test_delete_prefix_removes_every_attempt_of_one_conversion_only(backend: Storage) -> None:
    mine, other = uuid.uuid4(), uuid.uuid4()
    for attempt in (1, 2, 3):
        backend.put(result_key(mine, attempt, "image/jpeg"), b"r")
        backend.put(result_key(mine, attempt, "image/jpeg", thumbnail=True), b"t")
    backend.put(result_key(other, 1, "image/jpeg"), b"keep")
    assert backend.delete_prefix(result_prefix(mine)) == 6
    assert backend.delete_prefix(result_prefix(mine)) == 0
    assert backend.get(result_key(other, 1, "image/jpeg")) == b"keep"


def test_writing_a_key_again_with_the_same_bytes_succeeds(backend: Storage) -> None:
    # What a client retry after a lost answer does; attempt-fenced keys are otherwise written once.
    key = result_key(uuid.uuid4(), 2, "image/webp")
    backend.put(key, b"same")
    assert backend.put(key, b"same").size == 4
    assert backend.get(key) == b"same"


def test_s3_refuses_to_replace_a_key_with_other_bytes(s3_bucket: str) -> None:
    store = from_url(f"s3://{s3_bucket}/")
    key = result_key(uuid.uuid4(), 1, "image/jpeg")
    store.put(key, b"first")
    with pytest.raises(StorageError, match="already has this key"):
        store.put(key, b"second")
    assert store.get(key) == b"first"


def test_put_many_writes_concurrently_and_reports_each_item(backend: Storage) -> None:
    conversion = uuid.uuid4()
    items = [(result_key(conversion, a, "image/jpeg"), bytes([a]) * 1000) for a in range(1, 13)]
    items.insert(5, ("../escape", b"bad"))
    results = backend.put_many(items)
    assert len(results) == len(items)
    assert isinstance(results[5], StorageError)
    for (key, data), result in zip(items, results, strict=True):
        if key == "../escape":
            continue
        assert isinstance(result, StoredObject) and result.key == key and result.size == len(data)
        assert backend.get(key) == data


def test_no_partial_object_is_ever_visible(backend: Storage) -> None:
    # A reader polling while a large object is written sees nothing or the whole object.
    key = result_key(uuid.uuid4(), 1, "image/png")
    data = bytes(range(256)) * 16_384  # 4 MiB
    seen: list[int] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                seen.append(len(backend.get(key)))
            except FileNotFoundError:
                seen.append(0)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        backend.put(key, data)
        for _ in range(20):
            seen.append(len(backend.get(key)))
    finally:
        done.set()
        thread.join()
    assert set(seen) <= {0, len(data)} and seen[-1] == len(data)


def test_check_passes_on_a_usable_store_and_leaves_nothing(backend: Storage, server: S3Server) -> None:
    backend.check()
    if isinstance(backend, S3Storage):
        assert server.keys(backend.bucket) == []
    else:
        assert isinstance(backend, LocalStorage) and [p for p in backend.root.rglob("*") if p.is_file()] == []


def test_check_names_a_missing_bucket(s3_env: dict[str, str]) -> None:
    store = from_url("s3://no-such-bucket-here/x")
    with pytest.raises(StorageError, match="S3 bucket 'no-such-bucket-here' does not exist") as info:
        store.check()
    assert "\n" not in str(info.value)


def test_a_write_to_a_missing_bucket_is_a_storage_error(s3_env: dict[str, str]) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        from_url("s3://no-such-bucket-here/").put("images/aa/x.jpg", b"x")


@pytest.mark.services  # starts a server of its own
def test_check_names_refused_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    with locked_server() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        with pytest.raises(StorageError, match=r"S3 refused the credentials.*InvalidAccessKeyId") as info:
            from_url("s3://some-bucket/").check()
    assert "\n" not in str(info.value)


def test_check_names_an_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.reliability.servers import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = S3Storage("bucket-x", "")
    with pytest.raises(StorageError, match="Could not connect"):
        store.check()


def test_check_of_a_folder_that_is_not_one(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "root")
    store.root.rmdir()
    store.root.write_bytes(b"a file where the folder should be")
    with pytest.raises(StorageError, match="does not exist"):
        store.check()


def test_presigned_get_is_fetchable_over_http(backend: Storage) -> None:
    key = result_key(uuid.uuid4(), 1, "image/jpeg")
    backend.put(key, b"\xff\xd8result")
    url = backend.presigned_url(key, 60)
    if isinstance(backend, LocalStorage):
        assert url is None
        return
    assert url is not None and url.startswith("http://127.0.0.1:")
    assert "Expires=" in url or "X-Amz-Expires=60" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"\xff\xd8result"
        assert response.headers["Content-Type"] == "image/jpeg"


def test_the_factory_reads_the_setting(tmp_path: Path, s3_env: dict[str, str]) -> None:
    from core.settings import Settings
    from storage import from_settings

    assert isinstance(from_settings(Settings(state_dir=tmp_path)), LocalStorage)
    folder = from_settings(Settings(state_dir=tmp_path, storage_url=f"file://{tmp_path / 'shared'}"))
    assert isinstance(folder, LocalStorage) and folder.root == (tmp_path / "shared").resolve()
    bucket = from_settings(Settings(storage_url="s3://my-bucket/a/b?addressing_style=path"))
    assert isinstance(bucket, S3Storage) and bucket.describe() == "s3://my-bucket/a/b/"
    with pytest.raises(ValueError, match="file:///path or s3://bucket/prefix"):
        from_url("gs://bucket/x")


def test_an_unreachable_s3_is_a_transient_storage_error_and_writes_resume(s3_server: S3Server, s3_bucket: str) -> None:
    store = from_url(f"s3://{s3_bucket}/")
    store.put("images/aa/before.jpg", b"kept")
    with s3_server.paused():
        results = store.put_many([("images/aa/during-1.jpg", b"x"), ("images/aa/during-2.jpg", b"y")])
        assert all(isinstance(r, StorageError) and r.transient for r in results)
    assert store.get("images/aa/before.jpg") == b"kept"
    store.put("images/aa/during-1.jpg", b"x")
    assert s3_server.keys(s3_bucket, "images/") == ["images/aa/before.jpg", "images/aa/during-1.jpg"]
