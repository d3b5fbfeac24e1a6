"""CHECKs, foreign keys with their ON DELETE, unique rules and triggers of the migrated schema."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
import pytest

from .conftest import Factory, refused

# CHECK constraints: each rejects a bad value

# (statement, constraint name).  Status values go through INSERT: on UPDATE the status guard
# trigger (SA021) refuses an unknown status before the CHECK is evaluated.
_CONV = "INSERT INTO conversions (user_id, user_image_id, cloth_image_id, {col}) " \
        "SELECT user_id, user_image_id, cloth_image_id, {val} FROM conversions LIMIT 1"
CHECKS = [
    ("UPDATE albums SET owner_type = 'team'", "albums_owner_type_check"),
    ("UPDATE images SET owner_type = 'team'", "images_owner_type_check"),
    ("UPDATE images SET type = 'avatar'", "images_type_check"),
    (_CONV.format(col="status", val="'done'"), "conversions_status_check"),
    ("UPDATE conversions SET conversion_type = 'premium'", "conversions_conversion_type_check"),
    ("UPDATE conversions SET user_id = NULL", "conversions_one_owner_check"),
    ("UPDATE conversions SET vendor_id = (SELECT id FROM vendors LIMIT 1)", "conversions_one_owner_check"),
    ("UPDATE conversions SET result_image_id = user_image_id", "conversions_result_only_when_completed_check"),
    ("UPDATE image_usage_history SET action = 'like'", "image_usage_history_action_check"),
    ("INSERT INTO conversion_jobs (conversion_id, status) SELECT id, 'running' FROM conversions LIMIT 1",
     "conversion_jobs_status_check"),
    ("UPDATE conversion_jobs SET retry_count = -1", "conversion_jobs_retry_count_check"),
    ("UPDATE conversion_jobs SET retry_count = max_retries + 1", "conversion_jobs_retry_count_check"),
    ("UPDATE conversion_jobs SET max_retries = -1, retry_count = 0", "conversion_jobs_max_retries_check"),
    ("UPDATE conversion_jobs SET attempt = -1", "conversion_jobs_attempt_check"),
]


def test_every_check_rejects_a_bad_value(db: psycopg.Connection[Any], make: Factory) -> None:
    user, _ui, _ci, _conv = make.user_conversion()
    make.album(user)
    failures = []
    for statement, constraint in CHECKS:
        try:
            db.execute(statement)
        except psycopg.errors.CheckViolation as exc:
            if exc.diag.constraint_name != constraint:
                failures.append((statement, exc.diag.constraint_name))
        else:
            failures.append((statement, "accepted"))
    assert not failures


def test_unknown_status_update_is_refused_by_the_guard(db: psycopg.Connection[Any], make: Factory) -> None:
    make.user_conversion()
    with refused("SA021", "invalid_status_transition: "):
        db.execute("UPDATE conversions SET status = 'done'")
    with refused("SA021", "invalid_status_transition: "):
        db.execute("UPDATE conversion_jobs SET status = 'running'")


def test_catalog_lists_every_check(db: psycopg.Connection[Any]) -> None:
    names = {
        r[0]
        for r in db.execute(
            "SELECT conname FROM pg_constraint WHERE contype = 'c' AND connamespace = 'public'::regnamespace"
        )
    }
    assert {c for _s, c in CHECKS} <= names


@pytest.mark.parametrize(
    ("table", "column"),
    [
        ("images", "file_path"), ("images", "file_size"), ("images", "mime_type"), ("images", "owner_id"),
        ("conversions", "user_image_id"), ("conversions", "status"), ("conversion_jobs", "run_after"),
        ("conversion_metrics", "processing_time_ms"), ("albums", "name"), ("vendors", "name"),
    ],
)
def test_not_null_columns(db: psycopg.Connection[Any], table: str, column: str) -> None:
    row = db.execute(
        "SELECT is_nullable FROM information_schema.columns WHERE table_name = %s AND column_name = %s",
        (table, column),
    ).fetchone()
    assert row == ("NO",)


# Foreign keys: the spec's ON DELETE, in the catalog and in behaviour

EXPECTED_FKS = {
    ("images", "album_id", "albums", "SET NULL"),
    ("conversions", "user_id", "users", "CASCADE"),
    ("conversions", "vendor_id", "vendors", "CASCADE"),
    ("conversions", "user_image_id", "images", "CASCADE"),
    ("conversions", "cloth_image_id", "images", "CASCADE"),
    ("conversions", "result_image_id", "images", "SET NULL"),
    ("image_usage_history", "image_id", "images", "CASCADE"),
    ("image_usage_history", "user_id", "users", "SET NULL"),
    ("image_usage_history", "vendor_id", "vendors", "SET NULL"),
    ("image_usage_history", "conversion_id", "conversions", "SET NULL"),
    ("conversion_jobs", "conversion_id", "conversions", "CASCADE"),
    ("conversion_metrics", "conversion_id", "conversions", "CASCADE"),
    ("conversion_metrics", "user_id", "users", "CASCADE"),
    ("conversion_metrics", "vendor_id", "vendors", "CASCADE"),
}


def test_foreign_keys_match_the_spec(db: psycopg.Connection[Any]) -> None:
    rows = db.execute(
        """SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text,
                  CASE c.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL'
                       WHEN 'a' THEN 'NO ACTION' WHEN 'r' THEN 'RESTRICT' ELSE 'SET DEFAULT' END
             FROM pg_constraint c
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
            WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace
              AND c.conrelid::regclass::text = ANY(%s)""",
        (sorted({table for table, *_ in EXPECTED_FKS}),),
    ).fetchall()
    assert set(rows) == EXPECTED_FKS  # the spec's tables; later additions (api_keys, …) have their own tests


def _one(db: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _count(db: psycopg.Connection[Any], query: str, *params: Any) -> int:
    return int(_one(db, query, *params))


def _terminal_conversion(db: psycopg.Connection[Any], make: Factory) -> tuple[uuid.UUID, ...]:
    user, ui, ci, conv = make.user_conversion()
    result = make.result_image(user)
    db.execute("SELECT update_conversion_status(%s, 'processing')", (conv,))
    db.execute("SELECT update_conversion_status(%s, 'completed', result_image_id := %s)", (conv, result))
    return user, ui, ci, conv, result


def test_delete_user_cascades_conversions_jobs_metrics_and_nulls_usage(
    db: psycopg.Connection[Any], make: Factory
) -> None:
    user, ui, _ci, conv, _res = _terminal_conversion(db, make)
    db.execute("SELECT record_image_usage(image_id := %s, user_id := %s)", (ui, user))
    db.execute("DELETE FROM users WHERE id = %s", (user,))
    assert _count(db, "SELECT count(*) FROM conversions WHERE id = %s", conv) == 0
    assert _count(db, "SELECT count(*) FROM conversion_jobs WHERE conversion_id = %s", conv) == 0
    assert _count(db, "SELECT count(*) FROM conversion_metrics WHERE conversion_id = %s", conv) == 0
    # usage rows survive with user_id (SET NULL) and conversion_id (SET NULL) cleared
    assert _count(db, "SELECT count(*) FROM image_usage_history WHERE user_id IS NOT NULL") == 0
    assert _count(db, "SELECT count(*) FROM image_usage_history WHERE conversion_id IS NOT NULL") == 0
    assert _count(db, "SELECT count(*) FROM image_usage_history") == 3


def test_delete_vendor_cascades_and_nulls_usage(db: psycopg.Connection[Any], make: Factory) -> None:
    vendor = make.vendor()
    ui = make.image(vendor, "vendor", "user")
    ci = make.image(vendor, "vendor", "cloth")
    conv = _one(
        db, "SELECT create_conversion(vendor_id := %s, user_image_id := %s, cloth_image_id := %s)", vendor, ui, ci
    )
    db.execute("SELECT update_conversion_status(%s, 'cancelled')", (conv,))
    assert _count(db, "SELECT count(*) FROM conversion_metrics WHERE vendor_id = %s", vendor) == 1
    db.execute("DELETE FROM vendors WHERE id = %s", (vendor,))
    assert _count(db, "SELECT count(*) FROM conversions") == 0
    assert _count(db, "SELECT count(*) FROM conversion_metrics") == 0
    assert _count(db, "SELECT count(*) FROM image_usage_history WHERE vendor_id IS NOT NULL") == 0
    assert _count(db, "SELECT count(*) FROM image_usage_history") == 2


@pytest.mark.parametrize("which", ["user_image", "cloth_image"])
def test_delete_input_image_cascades_conversion_and_usage(
    db: psycopg.Connection[Any], make: Factory, which: str
) -> None:
    _user, ui, ci, conv = make.user_conversion()
    image = ui if which == "user_image" else ci
    db.execute("DELETE FROM images WHERE id = %s", (image,))
    assert _count(db, "SELECT count(*) FROM conversions WHERE id = %s", conv) == 0
    assert _count(db, "SELECT count(*) FROM conversion_jobs") == 0
    assert _count(db, "SELECT count(*) FROM image_usage_history WHERE image_id = %s", image) == 0


def test_delete_result_image_sets_null(db: psycopg.Connection[Any], make: Factory) -> None:
    _user, _ui, _ci, conv, result = _terminal_conversion(db, make)
    db.execute("DELETE FROM images WHERE id = %s", (result,))
    row = db.execute("SELECT status, result_image_id FROM conversions WHERE id = %s", (conv,)).fetchone()
    assert row == ("completed", None)


def test_delete_conversion_cascades_jobs_metrics_and_nulls_usage(
    db: psycopg.Connection[Any], make: Factory
) -> None:
    _user, _ui, _ci, conv, _res = _terminal_conversion(db, make)
    db.execute("DELETE FROM conversions WHERE id = %s", (conv,))
    assert _count(db, "SELECT count(*) FROM conversion_jobs") == 0
    assert _count(db, "SELECT count(*) FROM conversion_metrics") == 0
    assert _count(db, "SELECT count(*) FROM image_usage_history WHERE conversion_id IS NOT NULL") == 0
    assert _count(db, "SELECT count(*) FROM image_usage_history") == 2


def test_delete_album_sets_image_album_null(db: psycopg.Connection[Any], make: Factory) -> None:
    user = make.user()
    album = make.album(user)
    img = make.image(user, album_id=album)
    db.execute("DELETE FROM albums WHERE id = %s", (album,))
    assert db.execute("SELECT album_id FROM images WHERE id = %s", (img,)).fetchone() == (None,)


def test_foreign_keys_refuse_unknown_rows(db: psycopg.Connection[Any], make: Factory) -> None:
    user = make.user()
    with refused("23503"):
        make.image(user, album_id=uuid.uuid4())
    with refused("23503"):
        db.execute("INSERT INTO conversion_jobs (conversion_id) VALUES (%s)", (uuid.uuid4(),))


# Unique rules


def test_album_names_unique_per_owner(db: psycopg.Connection[Any], make: Factory) -> None:
    user, other = make.user(), make.user()
    make.album(user, name="Summer")
    make.album(other, name="Summer")  # another owner: fine
    make.album(user, "vendor", name="Summer")  # same uuid as another kind of owner: fine
    with refused("23505"):
        make.album(user, name="Summer")


def test_at_most_one_active_job_per_conversion(db: psycopg.Connection[Any], make: Factory) -> None:
    _user, _ui, _ci, conv = make.user_conversion()
    with refused("23505"):
        db.execute("INSERT INTO conversion_jobs (conversion_id) VALUES (%s)", (conv,))
    db.execute("UPDATE conversion_jobs SET status = 'failed' WHERE conversion_id = %s", (conv,))
    db.execute("INSERT INTO conversion_jobs (conversion_id) VALUES (%s)", (conv,))  # a new attempt is fine


def test_one_metrics_row_per_conversion(db: psycopg.Connection[Any], make: Factory) -> None:
    _user, _ui, _ci, conv, _res = _terminal_conversion(db, make)
    with refused("23505"):
        db.execute(
            "INSERT INTO conversion_metrics (conversion_id, processing_time_ms, success) VALUES (%s, 1, true)",
            (conv,),
        )


def test_users_email_unique(db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO users (email) VALUES ('a@example.test')")
    with refused("23505"):
        db.execute("INSERT INTO users (email) VALUES ('a@example.test')")


# Triggers: updated_at

UPDATED_AT_TABLES = {
    "users": "display_name = 'x'",
    "vendors": "name = 'x'",
    "albums": "description = 'x'",
    "images": "thumbnail_url = 'x'",
    "conversions": "style_name = 'x'",
    "conversion_jobs": "priority = 5",
    "fleet_controls": "dispatch_paused = false",
}


def test_updated_at_kept_on_every_table_that_has_it(db: psycopg.Connection[Any], make: Factory) -> None:
    user, _ui, _ci, _conv = make.user_conversion()
    make.album(user)
    has_it = {
        r[0]
        for r in db.execute(
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND column_name = 'updated_at'"
        )
    }
    assert has_it == set(UPDATED_AT_TABLES)
    for table, assignment in UPDATED_AT_TABLES.items():
        # An explicit old value is overridden; each statement is its own transaction.
        db.execute(f"UPDATE {table} SET {assignment}, updated_at = '2000-01-01'")
        if table != "fleet_controls":  # one row of switches, no created_at
            assert _count(db, f"SELECT count(*) FROM {table} WHERE updated_at <= created_at") == 0, table
        assert _count(db, f"SELECT count(*) FROM {table} WHERE updated_at < now() - interval '1 minute'") == 0


# Triggers: albums.image_count


def _image_count(db: psycopg.Connection[Any], album: uuid.UUID) -> int:
    return _count(db, "SELECT image_count FROM albums WHERE id = %s", album)


def test_album_image_count_follows_inserts_moves_and_deletes(db: psycopg.Connection[Any], make: Factory) -> None:
    user = make.user()
    a, b = make.album(user), make.album(user)
    i1 = make.image(user, album_id=a)
    i2 = make.image(user, album_id=a)
    i3 = make.image(user)
    assert (_image_count(db, a), _image_count(db, b)) == (2, 0)
    db.execute("UPDATE images SET album_id = %s WHERE id = %s", (b, i1))  # move a -> b
    assert (_image_count(db, a), _image_count(db, b)) == (1, 1)
    db.execute("UPDATE images SET album_id = %s WHERE id = %s", (b, i3))  # none -> b
    assert (_image_count(db, a), _image_count(db, b)) == (1, 2)
    db.execute("UPDATE images SET album_id = NULL WHERE id = %s", (i2,))  # a -> none
    assert (_image_count(db, a), _image_count(db, b)) == (0, 2)
    db.execute("UPDATE images SET file_name = 'renamed' WHERE id = %s", (i1,))  # not a move
    assert _image_count(db, b) == 2
    db.execute("DELETE FROM images WHERE id = %s", (i1,))
    assert (_image_count(db, a), _image_count(db, b)) == (0, 1)
    db.execute("DELETE FROM albums WHERE id = %s", (b,))  # SET NULL on i3, album gone: no error
    assert db.execute("SELECT album_id FROM images WHERE id = %s", (i3,)).fetchone() == (None,)


def test_album_image_count_under_concurrent_inserts(db_url: str, make: Factory) -> None:
    user = make.user()
    album = make.album(user)

    def insert_many() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            factory = Factory(conn)
            for _ in range(25):
                factory.image(user, album_id=album)

    threads = [threading.Thread(target=insert_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _image_count(make.conn, album) == 100


# Triggers: status guards (statuses move forward only)

CONVERSION_ALLOWED = {
    "pending": {"pending", "processing", "failed", "cancelled"},
    "processing": {"processing", "pending", "completed", "failed", "cancelled"},
    "completed": {"completed"},
    "failed": {"failed"},
    "cancelled": {"cancelled"},
}
CONVERSION_PATH = {
    "pending": [], "processing": ["processing"], "completed": ["processing", "completed"],
    "failed": ["failed"], "cancelled": ["cancelled"],
}
JOB_ALLOWED = {
    "queued": {"queued", "processing", "failed", "cancelled"},
    "processing": {"processing", "queued", "completed", "failed", "cancelled"},
    "completed": {"completed"},
    "failed": {"failed"},
    "cancelled": {"cancelled"},
}
JOB_PATH = {
    "queued": [], "processing": ["processing"], "completed": ["processing", "completed"],
    "failed": ["failed"], "cancelled": ["cancelled"],
}


@pytest.mark.parametrize(
    ("table", "allowed", "path"),
    [("conversions", CONVERSION_ALLOWED, CONVERSION_PATH), ("conversion_jobs", JOB_ALLOWED, JOB_PATH)],
)
def test_status_guard_allows_exactly_the_state_machine(
    db: psycopg.Connection[Any], make: Factory, table: str, allowed: dict[str, set[str]],
    path: dict[str, list[str]],
) -> None:
    user = make.user()
    ui = make.image(user)
    ci = make.image(user, type="cloth")
    key = "id" if table == "conversions" else "conversion_id"
    wrong = []
    for old, targets in allowed.items():
        for new in allowed:
            conv = _one(
                db, "SELECT create_conversion(user_id := %s, user_image_id := %s, cloth_image_id := %s)",
                user, ui, ci,
            )
            for step in path[old]:
                db.execute(f"UPDATE {table} SET status = %s WHERE {key} = %s", (step, conv))
            try:
                db.execute(f"UPDATE {table} SET status = %s WHERE {key} = %s", (new, conv))
                ok = True
            except psycopg.Error as exc:
                assert exc.sqlstate == "SA021", exc
                assert (exc.diag.message_primary or "").startswith("invalid_status_transition: ")
                ok = False
            if ok != (new in targets):
                wrong.append((old, new, ok))
    assert not wrong


def test_terminal_conversion_result_cannot_change(db: psycopg.Connection[Any], make: Factory) -> None:
    user, _ui, _ci, conv, _res = _terminal_conversion(db, make)
    other = make.result_image(user)
    with refused("SA021", "invalid_status_transition: "):
        db.execute("UPDATE conversions SET result_image_id = %s WHERE id = %s", (other, conv))


# Trigger: NOTIFY stayler_jobs when a job becomes queued


def _drain(listener: psycopg.Connection[Any]) -> list[str]:
    return [n.channel for n in listener.notifies(timeout=0.3)]


def test_queued_job_notifies_once_per_transaction(db_url: str, db: psycopg.Connection[Any], make: Factory) -> None:
    user = make.user()
    ui = make.image(user)
    ci = make.image(user, type="cloth")
    call = "SELECT create_conversion(user_id := %s, user_image_id := %s, cloth_image_id := %s)"
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN stayler_jobs")
        conv = _one(db, call, user, ui, ci)
        assert _drain(listener) == ["stayler_jobs"]
        with db.transaction():  # a bulk enqueue folds into one notification
            for _ in range(5):
                db.execute(call, (user, ui, ci))
        assert _drain(listener) == ["stayler_jobs"]
        db.execute("UPDATE conversion_jobs SET status = 'processing' WHERE conversion_id = %s", (conv,))
        assert _drain(listener) == []
        db.execute("UPDATE conversion_jobs SET status = 'queued' WHERE conversion_id = %s", (conv,))  # retry
        assert _drain(listener) == ["stayler_jobs"]
        with db.transaction(force_rollback=True):  # nothing is delivered without a commit
            db.execute(call, (user, ui, ci))
        assert _drain(listener) == []
