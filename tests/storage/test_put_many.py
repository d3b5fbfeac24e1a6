"""LocalStorage.put_many: the batched write the worker uses (concurrent fsyncs, same guarantees as put)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage import LocalStorage
from storage.base import StorageError, StoredObject


def test_put_many_writes_every_item_in_order_like_put(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    items = [(f"results/c{i}/1.jpg", bytes([i]) * (i + 1)) for i in range(5)]
    items += [(f"results/c{i}/1-thumb.jpg", b"t" * i) for i in range(5)]
    out = store.put_many(items)
    assert [o.key for o in out if isinstance(o, StoredObject)] == [k for k, _ in items]
    for (key, data), obj in zip(items, out, strict=True):
        assert isinstance(obj, StoredObject)
        assert store.get(key) == data and obj.size == len(data) and obj.url == store.url_for(key)
    assert not list(tmp_path.rglob(".tmp-*"))


def test_put_many_fails_only_the_bad_item(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    out = store.put_many([("results/a/1.jpg", b"a"), ("../escape", b"x"), ("results/b/1.jpg", b"b")])
    assert isinstance(out[1], StorageError)
    assert store.get("results/a/1.jpg") == b"a" and store.get("results/b/1.jpg") == b"b"


def test_put_many_reports_an_fsync_failure_and_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStorage(tmp_path)

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    out = store.put_many([("results/a/1.jpg", b"a"), ("results/a/2.jpg", b"b")])
    assert all(isinstance(o, StorageError) for o in out)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_put_many_of_one_item_is_put(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    [obj] = store.put_many([("results/a/1.jpg", b"a")])
    assert isinstance(obj, StoredObject) and store.get("results/a/1.jpg") == b"a"
