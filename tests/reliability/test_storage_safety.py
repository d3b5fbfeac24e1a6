"""Storage keys cannot escape their root, whatever names or metadata come in; writes are atomic and
a crashed write's partial file is removed with its key."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import InvalidKeyError, LocalStorage, StorageError, attempt_keys, input_key, result_key, validate_key

ESCAPES = ["../x", "a/../../x", "/etc/passwd", "images/../../x", "images/./x", "..", ".", "", "a//b",
           "images\\..\\x", "images/x\x00.jpg", "images/%2e%2e/x", "~/x", "images/ x", "IMAGES/x", "a/b/",
           "images/.tmp-x", "images/" + "a" * 600]


@pytest.mark.parametrize("key", ESCAPES)
def test_hostile_keys_are_refused(tmp_path: Path, key: str) -> None:
    store = LocalStorage(tmp_path / "root")
    with pytest.raises((InvalidKeyError, StorageError)):
        store.put(key, b"x")
    with pytest.raises((InvalidKeyError, StorageError)):
        store.get(key)
    assert not list((tmp_path / "root").rglob("*"))
    assert {p.name for p in tmp_path.iterdir()} == {"root"}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.text(min_size=0, max_size=80))
def test_any_key_either_stays_under_the_root_or_is_refused(tmp_path: Path, key: str) -> None:
    store = LocalStorage(tmp_path / "root")
    try:
        validate_key(key)
    except InvalidKeyError:
        return
    assert store.path_for(key).is_relative_to(store.root)


def test_a_symlink_inside_the_root_cannot_lead_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store = LocalStorage(tmp_path / "root")
    (store.root / "images").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError):
        store.put("images/ab/x.jpg", b"x")
    assert not list(outside.rglob("*"))


@given(image_id=st.uuids(), attempt=st.integers(min_value=0, max_value=10**6),
       mime=st.sampled_from(["image/jpeg", "image/png", "image/webp"]))
def test_system_keys_are_made_of_uuids_and_always_valid(image_id: uuid.UUID, attempt: int, mime: str) -> None:
    for key in (input_key(image_id, mime), result_key(image_id, attempt, mime),
                result_key(image_id, attempt, mime, thumbnail=True), *attempt_keys(image_id, attempt)):
        assert validate_key(key) == key
        assert str(image_id) in key


def test_an_unknown_mime_type_never_becomes_an_extension() -> None:
    with pytest.raises(InvalidKeyError):
        input_key(uuid.uuid4(), "image/svg+xml")
    with pytest.raises(InvalidKeyError):
        input_key(uuid.uuid4(), "../../x")


def test_deleting_a_key_removes_the_partial_write_a_killed_writer_left(tmp_path: Path) -> None:
    """A worker SIGKILLed inside ``put`` leaves ``.tmp-<name>.*``; the rescuer deletes the attempt's
    keys, which must take the partial file with them (found by the chaos suite)."""
    store = LocalStorage(tmp_path / "root")
    cid = uuid.uuid4()
    key = result_key(cid, 1, "image/jpeg")
    store.put(result_key(cid, 2, "image/jpeg"), b"the winner")
    folder = store.path_for(key).parent
    (folder / ".tmp-a1.jpg.k3j4h5").write_bytes(b"half a jp")
    (folder / ".tmp-a1.thumb.jpg.zz").write_bytes(b"half a thumb")
    for k in attempt_keys(cid, 1):
        store.delete(k)
    assert sorted(p.name for p in folder.iterdir()) == ["a2.jpg"]


def test_a_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStorage(tmp_path / "root")

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StorageError, match="No space left"):
        store.put("results/abc/a1.jpg", b"data")
    assert [p for p in store.root.rglob("*") if p.is_file()] == []
