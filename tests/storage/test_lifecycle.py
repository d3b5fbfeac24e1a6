"""Deletion, erasure, retention and orphans on both storage backends (a folder and S3 on moto).

After every kind of deletion no row and no object of what was deleted remains, and the other owner's
rows and objects are exactly as before: checked by listing the whole store and by looking for the
deleted ids in every column of every table.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from api.keys import create_key
from core.settings import Settings
from leader.config import RetentionSettings
from leader.duties.clean import CleanDuty
from leader.duties.expiry import ExpiryDuty
from leader.duties.orphans import OrphansDuty
from leader.sweep import sweep_due
from modelkit.samples import make_garment, make_person, to_bytes
from producer import register_image
from producer.accounts import create_user, create_vendor
from producer.deletion import delete_conversion, delete_image, erase_owner, erase_preview
from producer.errors import ProducerError
from producer.images import ImageLimits
from stayler.storage_audit import audit
from storage import Storage, StorageError, result_key
from tests.queue.ops import claim_jobs, complete_jobs
from worker.jobs import Claim, Completion

LIMITS = ImageLimits(max_bytes=5_000_000, max_pixels=4_000_000, thumbnail_size=32)
PERSON = to_bytes(make_person(48, 64, seed=2).image)
GARMENT = to_bytes(make_garment(48, 48, seed=3))


@dataclass
class Owner:
    """An owner with what it made: image ids, conversion ids."""

    id: uuid.UUID
    kind: str
    images: list[uuid.UUID] = field(default_factory=list)
    conversions: list[uuid.UUID] = field(default_factory=list)

    @property
    def params(self) -> dict[str, Any]:
        return {"user_id": self.id if self.kind == "user" else None,
                "vendor_id": self.id if self.kind == "vendor" else None}


def new_owner(db: psycopg.Connection, kind: str = "user") -> Owner:
    return Owner(create_user(db) if kind == "user" else create_vendor(db, "v"), kind)


def upload(db: psycopg.Connection, storage: Storage, owner: Owner, image_type: str, *,
           is_public: bool = False) -> uuid.UUID:
    record = register_image(db, storage, PERSON if image_type == "user" else GARMENT, owner_id=owner.id,
                            owner_type=owner.kind, image_type=image_type, limits=LIMITS, is_public=is_public)
    owner.images.append(record.id)
    return record.id


def create(db: psycopg.Connection, owner: Owner, person: uuid.UUID, cloth: uuid.UUID) -> uuid.UUID:
    row = db.execute("SELECT create_conversion(user_id := %(user_id)s, vendor_id := %(vendor_id)s, "
                     "user_image_id := %(p)s, cloth_image_id := %(c)s)", {**owner.params, "p": person, "c": cloth}
                     ).fetchone()
    assert row is not None
    owner.conversions.append(row[0])
    return uuid.UUID(str(row[0]))


def write_result(storage: Storage, claim: Claim) -> Completion:
    """What a worker does before its completion: the result and its thumbnail stored under the attempt's keys."""
    key = result_key(claim.conversion_id, claim.attempt, "image/jpeg")
    stored = storage.put(key, b"result")
    thumb = storage.put(result_key(claim.conversion_id, claim.attempt, "image/jpeg", thumbnail=True), b"t")
    return Completion(claim=claim, file_path=key, file_name="r.jpg", original_url=stored.url,
                      thumbnail_url=thumb.url, file_size=6, mime_type="image/jpeg", width=4, height=4,
                      processing_time_ms=1, ai_model_version="test")


def run_all(db: psycopg.Connection, storage: Storage) -> dict[uuid.UUID, Claim]:
    """Claim every ready job; returns the claims by conversion (not completed yet)."""
    return {c.conversion_id: c for c in claim_jobs(db, "w1", 100)}


def finish(db: psycopg.Connection, storage: Storage, claims: Iterable[Claim]) -> dict[uuid.UUID, uuid.UUID | None]:
    return complete_jobs(db, [write_result(storage, c) for c in claims])


def objects(storage: Storage) -> set[str]:
    return {k for k, _ in storage.list_objects()}


def rows_naming(db: psycopg.Connection, ids: Iterable[uuid.UUID]) -> dict[str, int]:
    """Rows of every table in the schema with any column (or JSON value) equal to or containing one of ``ids``."""
    needles = [str(i) for i in ids]
    found: dict[str, int] = {}
    tables = [r[0] for r in db.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> '_yoyo_migration'").fetchall()]
    for table in tables:
        row = db.execute(
            psycopg.sql.SQL("SELECT count(*) FROM {} t WHERE EXISTS (SELECT 1 FROM unnest(%s::text[]) n "
                            "WHERE to_jsonb(t)::text LIKE '%%' || n || '%%')").format(psycopg.sql.Identifier(table)),
            (needles,)).fetchone()
        if row and row[0]:
            found[table] = int(row[0])
    return found


def snapshot(db: psycopg.Connection, storage: Storage, owner: Owner) -> tuple[set[str], dict[str, int]]:
    """An owner's objects (those its rows name) and its rows (by table)."""
    keys = {k for (ks,) in db.execute(
        "SELECT image_object_keys(id, type, file_path) FROM images WHERE owner_id = %s", (owner.id,)).fetchall()
        for k in ks}
    return keys & objects(storage), rows_naming(db, [owner.id, *owner.images, *owner.conversions])


@pytest.fixture
def world(db: psycopg.Connection, backend: Storage) -> tuple[Owner, Owner]:
    """Two owners, each with a photo, a garment and two completed conversions."""
    owners = []
    for _ in range(2):
        owner = new_owner(db)
        person, cloth = upload(db, backend, owner, "user"), upload(db, backend, owner, "cloth")
        for _ in range(2):
            create(db, owner, person, cloth)
        owners.append(owner)
    finish(db, backend, run_all(db, backend).values())
    return owners[0], owners[1]


def test_deleting_a_conversion_leaves_nothing_of_it_and_touches_nothing_else(
        db: psycopg.Connection, backend: Storage, world: tuple[Owner, Owner]) -> None:
    alice, bob = world
    bob_before = snapshot(db, backend, bob)
    target = alice.conversions[0]
    row = db.execute("SELECT result_image_id FROM conversions WHERE id = %s", (target,)).fetchone()
    assert row is not None
    result_id = row[0]
    before = objects(backend)
    deletion = delete_conversion(db, backend, target, user_id=alice.id)
    assert sorted(deletion.keys) == sorted([result_key(target, 1, "image/jpeg"),
                                            result_key(target, 1, "image/jpeg", thumbnail=True)])
    assert objects(backend) == before - set(deletion.keys)
    assert rows_naming(db, [target, result_id]) == {}
    assert db.execute("SELECT count(*) FROM storage_key_cleanup").fetchone() == (0,)
    assert snapshot(db, backend, bob) == bob_before
    assert db.execute("SELECT count(*) FROM conversions WHERE id = %s", (alice.conversions[1],)).fetchone() == (1,)


def test_another_owners_conversion_or_image_reads_as_missing(
        db: psycopg.Connection, backend: Storage, world: tuple[Owner, Owner]) -> None:
    alice, bob = world
    with pytest.raises(ProducerError) as exc:
        delete_conversion(db, backend, bob.conversions[0], user_id=alice.id)
    assert exc.value.code == "not_owner"
    with pytest.raises(ProducerError) as exc:
        delete_image(db, backend, bob.images[0], user_id=alice.id)
    assert exc.value.code == "image_not_accessible"
    with pytest.raises(ProducerError) as exc:
        delete_image(db, backend, uuid.uuid4(), user_id=alice.id)
    assert exc.value.code == "image_not_found"
    assert db.execute("SELECT count(*) FROM conversions").fetchone() == (4,)


def test_deleting_a_photo_while_a_worker_completes_its_conversion_leaves_nothing_behind(
        db: psycopg.Connection, backend: Storage, world: tuple[Owner, Owner]) -> None:
    alice, bob = world
    bob_before = snapshot(db, backend, bob)
    photo = alice.images[0]
    running = create(db, alice, photo, alice.images[1])
    claim = run_all(db, backend)[running]
    completion = write_result(backend, claim)  # the worker stored its files and is about to complete
    deletion = delete_image(db, backend, photo, user_id=alice.id)
    # The late completion is fenced out (the job is gone), whatever the worker then does with its files.
    assert list(complete_jobs(db, [completion]).values()) == [None]
    CleanDuty(backend, interval_s=1).run_once(db)  # the cancel's folder marker
    OrphansDuty(backend, interval_s=1).run_once(db)
    alice_keys = {k for k in objects(backend) if not k.startswith("thumbs/") and not k.startswith("images/")}
    assert not any(str(c) in k for c in alice.conversions for k in alice_keys)
    assert not set(deletion.keys) & objects(backend)
    assert rows_naming(db, [photo, *alice.conversions]) == {}
    assert db.execute("SELECT count(*) FROM images WHERE id = %s", (alice.images[1],)).fetchone() == (1,)  # garment
    assert snapshot(db, backend, bob) == bob_before


def test_deleting_a_public_garment_deletes_other_owners_conversions_made_with_it(
        db: psycopg.Connection, backend: Storage) -> None:
    vendor, user, bystander = new_owner(db, "vendor"), new_owner(db), new_owner(db)
    garment = upload(db, backend, vendor, "cloth", is_public=True)
    photo = upload(db, backend, user, "user")
    made = create(db, user, photo, garment)
    other = create(db, user, photo, upload(db, backend, user, "cloth"))
    create(db, bystander, upload(db, backend, bystander, "user"), upload(db, backend, bystander, "cloth"))
    finish(db, backend, run_all(db, backend).values())
    bystander_before = snapshot(db, backend, bystander)
    delete_image(db, backend, garment, vendor_id=vendor.id)
    assert rows_naming(db, [garment, made]) == {}
    assert not any(str(made) in k for k in objects(backend))
    assert db.execute("SELECT status FROM conversions WHERE id = %s", (other,)).fetchone() == ("completed",)
    assert snapshot(db, backend, bystander) == bystander_before


def test_erasing_an_owner_while_a_worker_holds_its_job_leaves_no_row_and_no_object(
        db: psycopg.Connection, backend: Storage, world: tuple[Owner, Owner]) -> None:
    alice, bob = world
    bob_before = snapshot(db, backend, bob)
    key_id, _ = create_key(db, scope="operator", user_id=alice.id)
    db.execute("INSERT INTO console_grants (key_id, role) VALUES (%s, 'operator')", (key_id,))
    db.execute("INSERT INTO console_sessions (token_hash, key_id, csrf_token, expires_at) "
               "VALUES ('\\x01', %s, 'x', now() + interval '1 hour')", (key_id,))
    db.execute("INSERT INTO webhook_endpoints (user_id, url, events, secret) VALUES "
               "(%s, 'http://127.0.0.1:9/h', ARRAY['conversion.completed', 'conversion.cancelled'], '\\x00')",
               (alice.id,))
    db.execute("INSERT INTO albums (owner_id, owner_type, name) VALUES (%s, 'user', 'holiday')", (alice.id,))
    running = create(db, alice, alice.images[0], alice.images[1])
    claim = run_all(db, backend)[running]
    completion = write_result(backend, claim)
    ids = [alice.id, *alice.images, *alice.conversions, key_id] + [r[0] for r in db.execute(
        "SELECT result_image_id FROM conversions WHERE user_id = %s AND result_image_id IS NOT NULL",
        (alice.id,)).fetchall()]
    preview = erase_preview(db, "user", alice.id)
    assert preview["conversions"] == 3 and preview["api_keys"] == 1 and preview["console_sessions"] == 1
    counts, _ = erase_owner(db, backend, "user", alice.id)
    assert counts == preview
    assert list(complete_jobs(db, [completion]).values()) == [None]  # too late: fenced out
    CleanDuty(backend, interval_s=1).run_once(db)
    OrphansDuty(backend, interval_s=1).run_once(db)
    assert rows_naming(db, ids) == {}
    assert not any(str(i) in k for i in ids for k in objects(backend))
    assert snapshot(db, backend, bob) == bob_before
    audit_rows = db.execute("SELECT owner_kind, counts::text FROM erasures").fetchall()
    assert [r[0] for r in audit_rows] == ["user"]
    assert not any(str(i) in audit_rows[0][1] for i in ids)  # the audit names no personal data
    again, _ = erase_owner(db, backend, "user", alice.id)  # idempotent: nothing left, no second audit row
    assert set(again.values()) == {0}
    assert db.execute("SELECT count(*) FROM erasures").fetchone() == (1,)


def test_a_crash_between_the_database_delete_and_the_object_delete_is_finished_by_the_orphans_duty(
        db: psycopg.Connection, backend: Storage, world: tuple[Owner, Owner], monkeypatch: pytest.MonkeyPatch) -> None:
    alice, _ = world
    target = alice.conversions[0]

    def crash(keys: object) -> list[str]:
        raise SystemExit("killed after the commit")

    monkeypatch.setattr(backend, "delete_many", crash)
    with pytest.raises(SystemExit):
        # A process killed right after the commit: the rows are gone, the objects and markers stay.
        with db.transaction():
            keys = [r[0] for r in db.execute("SELECT delete_conversion(%s, %s)", (target, alice.id)).fetchall()]
        sweep_due(db, backend, keys=keys)
    monkeypatch.undo()
    assert set(keys) <= objects(backend)
    assert db.execute("SELECT count(*) FROM storage_key_cleanup WHERE key = ANY(%s)", (keys,)).fetchone() == (2,)
    assert OrphansDuty(backend, interval_s=1).run_once(db) == 2
    assert not set(keys) & objects(backend)
    assert db.execute("SELECT count(*) FROM storage_key_cleanup").fetchone() == (0,)


class ThumbnailFails:
    """A store whose thumbnail writes fail (a fault between the image and its thumbnail)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    def put(self, key: str, data: bytes) -> Any:
        if key.startswith("thumbs/"):
            raise StorageError(f"could not write {key}: killed")
        return self.inner.put(key, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_an_upload_that_fails_between_the_image_and_its_thumbnail_leaves_no_object_for_ever(
        db: psycopg.Connection, backend: Storage) -> None:
    # Regression (issue 19, row 16): the image object stayed in storage for ever, with no row and no marker.
    owner = new_owner(db)
    with pytest.raises(StorageError):
        register_image(db, ThumbnailFails(backend), PERSON, owner_id=owner.id, owner_type="user",
                       image_type="user", limits=LIMITS)
    left = objects(backend)
    assert len(left) == 1 and next(iter(left)).startswith("images/")
    assert db.execute("SELECT count(*) FROM storage_key_cleanup WHERE due_at > now()").fetchone() == (2,)
    assert OrphansDuty(backend, interval_s=1).run_once(db) == 0  # within the grace period: an upload may be running
    db.execute("UPDATE storage_key_cleanup SET due_at = now() - interval '1 second'")  # the grace period passed
    assert OrphansDuty(backend, interval_s=1).run_once(db) == 2  # both keys (the thumbnail never got written)
    assert objects(backend) == set()
    assert db.execute("SELECT count(*) FROM storage_key_cleanup").fetchone() == (0,)


def test_an_upload_registers_only_while_its_markers_stand(db: psycopg.Connection, backend: Storage) -> None:
    owner = new_owner(db)
    upload(db, backend, owner, "user")
    assert db.execute("SELECT count(*) FROM storage_key_cleanup").fetchone() == (0,)  # taken back by the row
    assert OrphansDuty(backend, interval_s=1).run_once(db) == 0
    assert len(objects(backend)) == 2  # claimed objects are never swept
    late = ImageLimits(LIMITS.max_bytes, LIMITS.max_pixels, LIMITS.thumbnail_size, orphan_grace_s=0.0)

    class SweepsMidUpload:
        """The grace period runs out while the upload writes: the sweep deletes its objects first."""

        def __init__(self, inner: Storage) -> None:
            self.inner, self.puts = inner, 0

        def put(self, key: str, data: bytes) -> Any:
            stored = self.inner.put(key, data)
            self.puts += 1
            if self.puts == 2:
                sweep_due(db, self.inner)
            return stored

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    with pytest.raises(StorageError, match="grace period"):
        register_image(db, SweepsMidUpload(backend), PERSON, owner_id=owner.id, owner_type="user",
                       image_type="user", limits=late)
    assert db.execute("SELECT count(*) FROM images").fetchone() == (1,)
    assert len(objects(backend)) == 2


def test_the_storage_audit_lists_both_kinds_of_orphan_and_fixes_the_objects(
        db: psycopg.Connection, backend: Storage, world: tuple[Owner, Owner]) -> None:
    alice, _ = world
    backend.put("images/ab/00000000-0000-4000-8000-000000000000.jpg", b"stray")
    backend.delete(f"thumbs/{alice.images[0].hex[:2]}/{alice.images[0]}.jpg")
    before = objects(backend)
    report = audit(db, backend, grace_s=3600.0)
    assert report.orphans == [] and report.recent == 1  # young: could be an upload in progress
    report = audit(db, backend, grace_s=0.0)
    assert report.orphans == ["images/ab/00000000-0000-4000-8000-000000000000.jpg"]
    assert report.missing == [(alice.images[0], f"thumbs/{alice.images[0].hex[:2]}/{alice.images[0]}.jpg")]
    assert report.rows == 8 and report.objects == len(before)
    fixed = audit(db, backend, grace_s=0.0, fix=True)
    assert fixed.fixed is not None and fixed.fixed.deleted == 1
    assert objects(backend) == before - {"images/ab/00000000-0000-4000-8000-000000000000.jpg"}


def test_expiry_deletes_old_person_photos_and_results_in_bounded_batches(
        db: psycopg.Connection, backend: Storage) -> None:
    owner = new_owner(db)
    cloth = upload(db, backend, owner, "cloth")
    photos = [upload(db, backend, owner, "user") for _ in range(3)]
    convs = [create(db, owner, p, cloth) for p in photos]
    finish(db, backend, run_all(db, backend).values())
    busy = upload(db, backend, owner, "user")
    create(db, owner, busy, cloth)  # pending: its photo waits
    fresh = upload(db, backend, owner, "user")
    db.execute("UPDATE images SET created_at = now() - interval '2 days' WHERE id <> %s", (fresh,))
    settings = Settings(retention_person_photos_after_s=86400.0, retention_batch_size=2, retention_max_batches=1)
    duty = ExpiryDuty(RetentionSettings.from_settings(settings))
    assert duty.run_once(db) == 4  # two photos and their two results: one batch of 2 photos
    assert duty.run_once(db) == 2
    assert duty.run_once(db) == 0
    OrphansDuty(backend, interval_s=1).run_once(db)
    assert rows_naming(db, [*photos, *convs]) == {}
    assert not any(str(i) in k for i in [*photos, *convs] for k in objects(backend))
    left = {r[0] for r in db.execute("SELECT id FROM images").fetchall()}
    assert left == {cloth, busy, fresh}
    results = ExpiryDuty(RetentionSettings.from_settings(Settings(retention_results_after_s=1.0)))
    other = create(db, owner, fresh, cloth)
    finish(db, backend, run_all(db, backend).values())
    db.execute("UPDATE images SET created_at = %s WHERE type = 'result'", (datetime(2020, 1, 1, tzinfo=UTC),))
    assert results.run_once(db) == 2  # the busy photo's result and the fresh one's
    OrphansDuty(backend, interval_s=1).run_once(db)
    assert rows_naming(db, [other]) == {}
    assert not any(k.startswith("results/") for k in objects(backend))
    assert {r[0] for r in db.execute("SELECT id FROM images").fetchall()} == {cloth, busy, fresh}


def test_the_sweep_never_deletes_an_object_a_row_claims(
        db: psycopg.Connection, backend: Storage, world: tuple[Owner, Owner]) -> None:
    alice, _ = world
    claimed = [k for (ks,) in db.execute("SELECT image_object_keys(id, type, file_path) FROM images "
                                         "WHERE owner_id = %s", (alice.id,)).fetchall() for k in ks]
    assert len(claimed) == 8  # photo, garment and two results, each with its thumbnail
    db.execute("SELECT storage_markers_due_now(%s)", (claimed,))
    assert OrphansDuty(backend, interval_s=1).run_once(db) == 0
    assert set(claimed) <= objects(backend)
    assert db.execute("SELECT count(*) FROM storage_key_cleanup").fetchone() == (0,)
