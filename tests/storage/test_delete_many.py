"""``Storage.delete_many``: many keys in few requests; the keys not removed are returned, never raised."""

from __future__ import annotations

from typing import Any

from storage import Storage, from_url
from storage.s3 import S3Storage
from tests.infra.s3 import S3Server


def test_delete_many_removes_every_key_and_ignores_missing_ones(backend: Storage) -> None:
    keys = [f"results/{i:04d}/a1.jpg" for i in range(30)]
    backend.put_many([(k, b"x") for k in keys])
    assert backend.delete_many([*keys, "results/none/a1.jpg"]) == []
    for key in keys:
        try:
            backend.get(key)
        except FileNotFoundError:
            continue
        raise AssertionError(f"{key} is still there")


def test_s3_delete_many_sends_one_request_per_thousand_keys(s3_bucket: str) -> None:
    storage = from_url(f"s3://{s3_bucket}/t")
    assert isinstance(storage, S3Storage)
    keys = [f"results/{i:05d}/a1.jpg" for i in range(2300)]
    calls: list[int] = []
    real = storage.client.delete_objects

    def counting(**kwargs: Any) -> Any:
        calls.append(len(kwargs["Delete"]["Objects"]))
        return real(**kwargs)

    storage.client.delete_objects = counting
    storage.put_many([(k, b"x") for k in keys[:50]])
    assert storage.delete_many(keys) == []
    assert calls == [1000, 1000, 300]
    assert storage.delete_many(["../escape"]) == ["../escape"]


def test_s3_delete_many_on_a_stopped_store_returns_every_key_after_one_attempt(
        s3_bucket: str, s3_server: S3Server) -> None:
    storage = from_url(f"s3://{s3_bucket}/t")
    assert isinstance(storage, S3Storage)
    keys = [f"results/{i:05d}/a1.jpg" for i in range(1500)]
    with s3_server.paused():
        assert sorted(storage.delete_many(keys)) == sorted(keys)
