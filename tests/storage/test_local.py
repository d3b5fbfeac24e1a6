"""storage keys and LocalStorage: only the system's own keys, atomic writes (no services)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from storage import InvalidKeyError, LocalStorage, StorageError, attempt_keys, result_key, validate_key


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs/path", "images/../../x", "images/x y.jpg", "", "Images/A.jpg",
                                 "images/\x00.jpg", "a" * 600])
def test_storage_refuses_keys_that_are_not_the_systems_own(key: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidKeyError):
        validate_key(key)
    with pytest.raises(InvalidKeyError):
        LocalStorage(tmp_path).put(key, b"x")
    assert list(tmp_path.rglob("*")) == []


def test_local_storage_round_trip_and_atomic_writes(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    cid = uuid.uuid4()
    key = result_key(cid, 2, "image/jpeg")
    obj = store.put(key, b"abc")
    assert (obj.size, store.get(key)) == (3, b"abc")
    assert obj.url == f"file://{tmp_path.resolve()}/{key}"
    assert key in attempt_keys(cid, 2) and result_key(cid, 2, "image/jpeg", thumbnail=True) in attempt_keys(cid, 2)
    (tmp_path / "results" / str(cid) / "blocker").mkdir()
    with pytest.raises(StorageError):
        store.put(f"results/{cid}/blocker", b"x")  # a folder where a file must go
    assert not list(tmp_path.rglob(".tmp-*"))  # no partial file left behind
    store.delete(key)
    store.delete(key)  # deleting twice is fine
    with pytest.raises(FileNotFoundError):
        store.get(key)
