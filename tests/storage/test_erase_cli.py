"""``stayler users erase`` / ``vendors erase`` and ``stayler storage audit`` as an operator runs them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from core.settings import get_settings
from producer import register_image
from producer.accounts import create_user, create_vendor
from stayler.cli import main
from storage import from_url
from tests.storage.test_lifecycle import LIMITS, PERSON


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The CLI pointed at the test database and a storage folder; yields the storage URL."""
    url = f"file://{tmp_path / 'store'}"
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("STAYLER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("STAYLER_STORAGE_URL", url)
    monkeypatch.setenv("STAYLER_ORPHAN_GRACE_S", "0.001")
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_erase_without_yes_prints_the_counts_deletes_nothing_and_exits_non_zero(
        db: psycopg.Connection, cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    storage = from_url(cli_env)
    user = create_user(db)
    image = register_image(db, storage, PERSON, owner_id=user, owner_type="user", image_type="user", limits=LIMITS)
    assert main(["users", "erase", "--user-id", str(user)]) == 1
    out = capsys.readouterr()
    assert "images: 1" in out.out and "object_keys: 2" in out.out and "--yes" in out.err
    assert db.execute("SELECT count(*) FROM images WHERE id = %s", (image.id,)).fetchone() == (1,)
    assert main(["users", "erase", "--user-id", str(user), "--yes"]) == 0
    assert "objects deleted: 2" in capsys.readouterr().out
    assert db.execute("SELECT count(*) FROM users WHERE id = %s", (user,)).fetchone() == (0,)
    assert list(storage.list_objects()) == []
    assert main(["users", "erase", "--user-id", str(user), "--yes"]) == 0  # idempotent
    assert "nothing to erase" in capsys.readouterr().out


def test_vendor_erase_and_the_storage_audit(db: psycopg.Connection, cli_env: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    storage = from_url(cli_env)
    vendor = create_vendor(db, "v")
    register_image(db, storage, PERSON, owner_id=vendor, owner_type="vendor", image_type="cloth", limits=LIMITS)
    stray = f"images/00/{uuid.uuid4()}.jpg"
    storage.put(stray, b"x")
    assert main(["storage", "audit"]) == 1
    assert f"object without a row: {stray}" in capsys.readouterr().out
    assert main(["storage", "audit", "--fix"]) == 0
    assert main(["storage", "audit"]) == 0
    assert main(["vendors", "erase", "--vendor-id", str(vendor), "--yes"]) == 0
    assert list(storage.list_objects()) == []
    assert db.execute("SELECT counts ->> 'images' FROM erasures").fetchall() == [("1",)]
