"""The producer's Python API and CLI against a real PostgreSQL."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import psycopg
import pytest
from PIL import Image

from modelkit.samples import make_garment, make_person, to_bytes
from producer import ProducerError, cancel, register_image, status, submit
from producer.accounts import create_user, create_vendor
from producer.batch import BatchOutcome, Owner, rows_from_csv, rows_from_folder, submit_batch
from producer.conversions import conversion_stats, image_stats
from producer.images import ImageLimits
from stayler.cli import main as cli
from storage import LocalStorage

LIMITS = ImageLimits(max_bytes=5_000_000, max_pixels=4_000_000, thumbnail_size=64)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


def person_bytes(fmt: str = "JPEG") -> bytes:
    return to_bytes(make_person(96, 128).image, fmt)


def test_register_image_stores_validated_bytes_thumbnail_row_and_upload_usage(
        db: psycopg.Connection, storage: LocalStorage) -> None:
    user = create_user(db)
    data = person_bytes("PNG")
    record = register_image(db, storage, data, owner_id=user, owner_type="user", image_type="user", limits=LIMITS,
                            file_name="../../etc/passwd.jpg", tags=["a'b", "c;d"], metadata={"k": "v"})
    assert record.mime_type == "image/png"  # from the content, not the name
    assert (record.width, record.height) == (96, 128)
    assert (storage.root / record.file_path).read_bytes() == data
    assert record.file_path.startswith("images/") and ".." not in record.file_path
    thumb = Image.open(io.BytesIO((storage.root / f"thumbs/{record.id.hex[:2]}/{record.id}.jpg").read_bytes()))
    assert max(thumb.size) == 64
    row = db.execute("SELECT file_name, file_size, mime_type, type, owner_type, tags, metadata, thumbnail_url "
                     "FROM images WHERE id = %s", (record.id,)).fetchone()
    assert row == ("passwd.jpg", len(data), "image/png", "user", "user", ["a'b", "c;d"], {"k": "v"},
                   record.thumbnail_url)
    usage = db.execute("SELECT action, user_id FROM image_usage_history WHERE image_id = %s", (record.id,)).fetchall()
    assert usage == [("upload", user)]


@pytest.mark.parametrize(("data", "code"), [
    (b"", "invalid_image"),
    (b"GIF89a" + b"\x00" * 40, "unsupported_format"),
    (b"hello, I am text", "unsupported_format"),
    (person_bytes()[:200], "invalid_image"),
])
def test_register_refuses_bad_images_before_storing_anything(
        db: psycopg.Connection, storage: LocalStorage, data: bytes, code: str) -> None:
    user = create_user(db)
    with pytest.raises(ProducerError) as err:
        register_image(db, storage, data, owner_id=user, owner_type="user", image_type="user", limits=LIMITS)
    assert err.value.code == code
    assert db.execute("SELECT count(*) FROM images").fetchone() == (0,)
    assert not any(p.is_file() for p in storage.root.rglob("*"))


def test_register_refuses_oversized_files_and_pixel_bombs(db: psycopg.Connection, storage: LocalStorage) -> None:
    user = create_user(db)
    with pytest.raises(ProducerError, match="limit"):
        register_image(db, storage, person_bytes(), owner_id=user, owner_type="user", image_type="user",
                       limits=ImageLimits(max_bytes=100, max_pixels=10**6))
    with pytest.raises(ProducerError) as err:
        register_image(db, storage, person_bytes(), owner_id=user, owner_type="user", image_type="user",
                       limits=ImageLimits(max_bytes=10**7, max_pixels=1000))
    assert err.value.code == "image_too_large"


def test_a_failed_row_insert_removes_the_stored_files(db: psycopg.Connection, storage: LocalStorage) -> None:
    with pytest.raises(ProducerError):  # an album that does not exist: the row insert fails
        register_image(db, storage, person_bytes(), owner_id=uuid.uuid4(), owner_type="user", image_type="user",
                       limits=LIMITS, album_id=uuid.uuid4())
    assert not any(p.is_file() for p in storage.root.rglob("*"))


def test_submit_is_idempotent_per_owner_and_key(db: psycopg.Connection, storage: LocalStorage) -> None:
    user = create_user(db)
    person = register_image(db, storage, person_bytes(), owner_id=user, owner_type="user", image_type="user",
                            limits=LIMITS).id
    cloth = register_image(db, storage, to_bytes(make_garment(96, 96)), owner_id=user, owner_type="user",
                           image_type="cloth", limits=LIMITS).id
    first = submit(db, user_id=user, user_image_id=person, cloth_image_id=cloth, idempotency_key="req-1")
    again = submit(db, user_id=user, user_image_id=person, cloth_image_id=cloth, idempotency_key="req-1")
    other = submit(db, user_id=user, user_image_id=person, cloth_image_id=cloth, idempotency_key="req-2")
    assert first == again != other
    assert db.execute("SELECT count(*) FROM conversion_jobs").fetchone() == (2,)


def test_submit_refusals_are_clear_producer_errors(db: psycopg.Connection, storage: LocalStorage) -> None:
    alice, bob = create_user(db), create_user(db)
    private = register_image(db, storage, to_bytes(make_garment(96, 96)), owner_id=bob, owner_type="user",
                             image_type="cloth", limits=LIMITS).id
    person = register_image(db, storage, person_bytes(), owner_id=alice, owner_type="user", image_type="user",
                            limits=LIMITS).id
    with pytest.raises(ProducerError) as err:
        submit(db, user_id=alice, user_image_id=person, cloth_image_id=private)
    assert err.value.code == "image_not_accessible"
    with pytest.raises(ProducerError) as err:
        submit(db, user_id=alice, user_image_id=person, cloth_image_id=uuid.uuid4())
    assert err.value.code == "image_not_found"


def test_status_shows_attempts_and_last_error_and_cancel_checks_the_owner(
        db: psycopg.Connection, storage: LocalStorage) -> None:
    user, stranger = create_user(db), create_user(db)
    person = register_image(db, storage, person_bytes(), owner_id=user, owner_type="user", image_type="user",
                            limits=LIMITS).id
    cloth = register_image(db, storage, to_bytes(make_garment(96, 96)), owner_id=user, owner_type="user",
                           image_type="cloth", limits=LIMITS).id
    cid = submit(db, user_id=user, user_image_id=person, cloth_image_id=cloth, max_retries=5)
    db.execute("UPDATE conversion_jobs SET retry_count = 2, attempt = 2, error_type = 'storage', "
               "error_message = 'disk full' WHERE conversion_id = %s", (cid,))
    [row] = status(db, [cid])
    assert (row.status, row.job_status, row.attempt, row.retry_count, row.max_retries, row.error_type,
            row.job_error_message) == ("pending", "queued", 2, 2, 5, "storage", "disk full")
    with pytest.raises(ProducerError) as err:
        cancel(db, cid, user_id=stranger)
    assert err.value.code == "not_owner"
    assert cancel(db, cid, user_id=user) == "cancelled"
    with pytest.raises(ProducerError) as err:
        cancel(db, uuid.uuid4(), user_id=user)
    assert err.value.code == "conversion_not_found"
    with pytest.raises(ProducerError) as err:
        cancel(db, cid)  # no owner: refused before any database call
    assert err.value.code == "owner_required"
    stats = conversion_stats(db, user_id=user)
    assert stats["cancelled_count"] == 1 and stats["total_count"] == 1
    images = image_stats(db, owner_id=user, owner_type="user")
    assert images["total_images"] == 2 and images["usage_upload"] == 2


def test_batch_from_a_folder_and_a_csv_reports_refused_rows(
        db: psycopg.Connection, storage: LocalStorage, tmp_path: Path) -> None:
    vendor = create_vendor(db, "shop")
    folder = tmp_path / "people"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.jpg").write_bytes(person_bytes())
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    garment = tmp_path / "tee.png"
    garment.write_bytes(to_bytes(make_garment(96, 96, transparent=True), "PNG"))
    seen: list[BatchOutcome] = []
    outcomes = submit_batch(db, storage, rows_from_folder(folder, str(garment)), Owner(vendor_id=vendor),
                            limits=LIMITS, max_retries=1, on_row=seen.append)
    assert len(seen) == 4
    assert [o.error is None for o in outcomes] == [False, True, True, True]  # broken.png sorts first
    assert "not accepted" in (outcomes[0].error or "")
    assert db.execute("SELECT count(*) FROM images WHERE type = 'cloth'").fetchone() == (1,)  # registered once
    csv_file = tmp_path / "batch.csv"
    csv_file.write_text("person,garment,style,priority,idempotency_key\n"
                        f"people/p0.jpg,{garment},casual,5,k1\n"
                        f"people/p0.jpg,{garment},casual,5,k1\n")
    rows = rows_from_csv(csv_file)
    assert rows[0].person == str(tmp_path / "people/p0.jpg") and rows[0].priority == 5
    second = submit_batch(db, storage, rows, Owner(vendor_id=vendor), limits=LIMITS, max_retries=1)
    assert second[0].conversion_id == second[1].conversion_id  # same idempotency key
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("person\nx.jpg\n")
    with pytest.raises(ProducerError, match="garment"):
        rows_from_csv(bad_csv)


def test_cli_round_trip(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    from core.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("STAYLER_STORAGE_DIR", str(tmp_path / "storage"))
    get_settings.cache_clear()
    try:
        def run(*args: str) -> str:
            capsys.readouterr()
            assert cli(list(args)) == 0
            return capsys.readouterr().out.strip()

        user = run("users", "add", "--email", "cli@test")
        person = tmp_path / "me.webp"
        person.write_bytes(person_bytes("WEBP"))
        tee = tmp_path / "tee.jpg"
        tee.write_bytes(to_bytes(make_garment(96, 96)))
        person_id = run("images", "add", str(person), "--user-id", user, "--type", "user")
        record = json.loads(run("images", "add", str(tee), "--user-id", user, "--type", "cloth", "--json",
                                "--tag", "summer", "--metadata", '{"brand": "x"}'))
        cid = run("submit", "--user-id", user, "--person", person_id, "--garment", record["id"], "--style", "casual",
                  "--priority", "3")
        [shown] = json.loads(run("status", cid, "--json"))
        assert (shown["status"], shown["job_status"], shown["style_name"]) == ("pending", "queued", "casual")
        assert run("cancel", cid, "--user-id", user) == "cancelled"
        stats = json.loads(run("stats", "--user-id", user, "--json"))
        assert stats["conversions"]["cancelled_count"] == 1
        # A refusal is one readable line on stderr and exit code 2, not a traceback.
        capsys.readouterr()
        assert cli(["submit", "--user-id", user, "--person", person_id, "--garment", str(uuid.uuid4())]) == 2
        err = capsys.readouterr().err
        assert err.startswith("stayler: error:") and "image_not_found" in err and "Traceback" not in err
    finally:
        get_settings.cache_clear()
