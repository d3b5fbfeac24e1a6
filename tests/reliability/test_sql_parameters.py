"""Every SQL parameter is bound: hostile strings in ``style_name``, ``metadata``, ``tags`` and file
names are stored verbatim (or refused with a clear error), never executed."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from core.settings import get_settings
from modelkit.samples import make_garment, make_person, to_bytes
from producer import ProducerError, register_image, submit
from producer.accounts import create_user
from producer.images import MAX_TAG_CHARS, ImageLimits
from stayler.cli import main
from storage import LocalStorage

LIMITS = ImageLimits(max_bytes=5_000_000, max_pixels=40_000_000, thumbnail_size=32)
HOSTILE = [
    "'; DROP TABLE conversions; --",
    "\"); DELETE FROM images; --",
    "Robert'); DROP TABLE users;--",
    "a;b;c",
    "%s %(x)s {x} $1 :x ?",
    "E'\\\\x00' || chr(0)",
    "\\'; SELECT pg_sleep(10); --",
    "ünïcödé ✓ 🧥",
    "x" * 100_000,
]
NUL = "before\x00after"


def _tables_intact(conn: psycopg.Connection) -> None:
    names = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()}
    assert {"users", "images", "conversions", "conversion_jobs", "conversion_metrics"} <= names


@pytest.fixture
def setup(db: psycopg.Connection, tmp_path: Path) -> tuple[psycopg.Connection, LocalStorage, object, object, object]:
    storage = LocalStorage(tmp_path / "storage")
    user = create_user(db)
    person = register_image(db, storage, to_bytes(make_person(64, 96).image), owner_id=user, owner_type="user",
                            image_type="user", limits=LIMITS).id
    garment = register_image(db, storage, to_bytes(make_garment(seed=1)), owner_id=user, owner_type="user",
                             image_type="cloth", limits=LIMITS).id
    return db, storage, user, person, garment


def test_style_name_and_metadata_are_stored_verbatim(setup) -> None:
    db, _, user, person, garment = setup
    for value in HOSTILE:
        # metadata is capped at 16 KiB (SA031), so its copies of the value are cut to stay under it
        meta_value = value[:4000]
        metadata = {value[:1000]: meta_value, "nested": {"list": [meta_value, 1, None]}, "quote'key": "v"}
        cid = submit(db, user_id=user, user_image_id=person, cloth_image_id=garment, style_name=value,
                     metadata=metadata, idempotency_key=value[:500])
        row = db.execute("SELECT style_name, metadata, idempotency_key FROM conversions WHERE id = %s", (cid,)
                         ).fetchone()
        assert row == (value, metadata, value[:500])
    _tables_intact(db)
    assert db.execute("SELECT count(*) FROM conversions").fetchone() == (len(HOSTILE),)


def test_nul_bytes_are_refused_clearly_and_write_nothing(setup) -> None:
    db, storage, user, person, garment = setup
    attempts = [
        lambda: submit(db, user_id=user, user_image_id=person, cloth_image_id=garment, style_name=NUL),
        lambda: submit(db, user_id=user, user_image_id=person, cloth_image_id=garment, metadata={"k": NUL}),
        lambda: submit(db, user_id=user, user_image_id=person, cloth_image_id=garment, metadata={NUL: 1}),
        lambda: submit(db, user_id=user, user_image_id=person, cloth_image_id=garment, idempotency_key=NUL),
        lambda: register_image(db, storage, to_bytes(make_person(64, 96).image), owner_id=user, owner_type="user",
                               image_type="user", limits=LIMITS, tags=[NUL]),
        lambda: register_image(db, storage, to_bytes(make_person(64, 96).image), owner_id=user, owner_type="user",
                               image_type="user", limits=LIMITS, metadata={"k": NUL}),
    ]
    before = db.execute("SELECT (SELECT count(*) FROM conversions), (SELECT count(*) FROM images)").fetchone()
    files_before = sorted(p for p in storage.root.rglob("*") if p.is_file())
    for attempt in attempts:
        with pytest.raises(ProducerError) as info:
            attempt()
        assert info.value.code in ("database_error", "invalid_argument"), info.value
        assert "Traceback" not in str(info.value)
    assert db.execute("SELECT (SELECT count(*) FROM conversions), (SELECT count(*) FROM images)").fetchone() == before
    # A refused image row leaves no stored file behind.
    assert sorted(p for p in storage.root.rglob("*") if p.is_file()) == files_before
    _tables_intact(db)


def test_tags_metadata_and_file_names_of_images(setup) -> None:
    db, storage, user, _, _ = setup
    data = to_bytes(make_person(64, 96).image)
    names = ["../../../etc/passwd", "a'; DROP TABLE images;--.jpg", "nul\x00byte.jpg", "C:\\Windows\\x.jpg",
             "/abs/path/photo.jpg", "y" * 10_000 + ".jpg", "", "..", "%2e%2e%2fetc"]
    for name in names:
        record = register_image(db, storage, data, owner_id=user, owner_type="user", image_type="user",
                                limits=LIMITS, file_name=name, tags=[*HOSTILE[:5], "z" * MAX_TAG_CHARS],
                                metadata={"original_name": name.replace("\x00", ""), "q": HOSTILE[0]})
        row = db.execute("SELECT file_name, file_path, tags, metadata FROM images WHERE id = %s", (record.id,)
                         ).fetchone()
        assert row is not None
        file_name, file_path, tags, metadata = row
        assert "/" not in file_name and "\x00" not in file_name and len(file_name) <= 255
        assert file_path == record.file_path and file_path.startswith("images/") and str(record.id) in file_path
        assert tags == [*HOSTILE[:5], "z" * MAX_TAG_CHARS]
        assert metadata["q"] == HOSTILE[0]
    assert all(p.resolve().is_relative_to(storage.root) for p in storage.root.rglob("*"))
    files_before = sorted(p for p in storage.root.rglob("*") if p.is_file())
    with pytest.raises(ProducerError) as refused:  # a tag over the bound (migration 0490) stores nothing
        register_image(db, storage, data, owner_id=user, owner_type="user", image_type="user", limits=LIMITS,
                       tags=[HOSTILE[0], "z" * 10_000])
    assert refused.value.code == "invalid_argument"
    assert sorted(p for p in storage.root.rglob("*") if p.is_file()) == files_before
    _tables_intact(db)


def test_the_cli_binds_its_arguments_too(db: psycopg.Connection, db_url: str, setup, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _, _, user, person, garment = setup
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("STAYLER_STATE_DIR", str(tmp_path / "state"))
    get_settings.cache_clear()
    try:
        style = HOSTILE[0]
        metadata = json.dumps({"x": HOSTILE[1], "'": ";"})
        code = main(["submit", "--user-id", str(user), "--person", str(person), "--garment", str(garment),
                     "--style", style, "--metadata", metadata, "--idempotency-key", HOSTILE[2]])
        out, err = capsys.readouterr()
        assert code == 0, err
        row = db.execute("SELECT style_name, metadata, idempotency_key FROM conversions WHERE id = %s",
                         (out.strip(),)).fetchone()
        assert row == (style, json.loads(metadata), HOSTILE[2])
        code = main(["submit", "--user-id", str(user), "--person", str(person), "--garment", str(garment),
                     "--style", NUL])
        _, err = capsys.readouterr()
        assert code == 2 and err.startswith("stayler: error:") and "Traceback" not in err
    finally:
        get_settings.cache_clear()
    _tables_intact(db)
