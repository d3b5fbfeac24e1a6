"""The five SQL functions: happy paths, every refusal with its SQLSTATE and message, and the
spec's own example calls run verbatim (with real ids)."""

from __future__ import annotations

import statistics
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from .conftest import Factory, refused

CREATE = "SELECT create_conversion(user_id := %(u)s, vendor_id := %(v)s, user_image_id := %(ui)s, " \
         "cloth_image_id := %(ci)s)"


def _one(db: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _count(db: psycopg.Connection[Any], table: str) -> int:
    return int(_one(db, f"SELECT count(*) FROM {table}"))


# create_conversion


def test_create_conversion_writes_conversion_job_and_usage(db: psycopg.Connection[Any], make: Factory) -> None:
    user, ui, ci, conv = make.user_conversion()
    row = db.execute(
        "SELECT user_id, vendor_id, user_image_id, cloth_image_id, status, conversion_type, metadata "
        "FROM conversions WHERE id = %s", (conv,)
    ).fetchone()
    assert row == (user, None, ui, ci, "pending", "free", {})
    job = db.execute(
        "SELECT status, priority, max_retries, retry_count, attempt, run_after <= now(), worker_id "
        "FROM conversion_jobs WHERE conversion_id = %s", (conv,)
    ).fetchall()
    assert job == [("queued", 0, 3, 0, 0, True, None)]
    usage = db.execute(
        "SELECT image_id, user_id, vendor_id, action FROM image_usage_history "
        "WHERE conversion_id = %s ORDER BY image_id = %s DESC", (conv, ui)
    ).fetchall()
    assert usage == [(ui, user, None, "use_in_conversion"), (ci, user, None, "use_in_conversion")]


def test_create_conversion_optional_parameters(db: psycopg.Connection[Any], make: Factory) -> None:
    user = make.user()
    ui = make.image(user)
    ci = make.image(user, type="cloth")  # the caller's own private cloth
    conv = _one(
        db,
        "SELECT create_conversion(user_id := %s, user_image_id := %s, cloth_image_id := %s, "
        "conversion_type := 'paid', style_name := 'formal', priority := 7, max_retries := 5, "
        "metadata := '{\"source\": \"app\"}')",
        (user, ui, ci),
    )
    assert db.execute(
        "SELECT conversion_type, style_name, metadata FROM conversions WHERE id = %s", (conv,)
    ).fetchone() == ("paid", "formal", {"source": "app"})
    assert db.execute(
        "SELECT priority, max_retries FROM conversion_jobs WHERE conversion_id = %s", (conv,)
    ).fetchone() == (7, 5)


def test_create_conversion_for_a_vendor(db: psycopg.Connection[Any], make: Factory) -> None:
    vendor = make.vendor()
    ui = make.image(vendor, "vendor", "user")
    ci = make.image(vendor, "vendor", "cloth")
    conv = _one(db, CREATE, {"u": None, "v": vendor, "ui": ui, "ci": ci})
    assert db.execute("SELECT user_id, vendor_id FROM conversions WHERE id = %s", (conv,)).fetchone() == (
        None, vendor,
    )
    assert _one(db, "SELECT count(*) FROM image_usage_history WHERE vendor_id = %s", (vendor,)) == 2


def _refusal_cases(make: Factory) -> list[tuple[str, dict[str, Any], str, str]]:
    """(label, arguments, SQLSTATE, message prefix) for every create_conversion refusal."""
    user, other, vendor = make.user(), make.user(), make.vendor()
    ui = make.image(user)
    ci_public = make.image(vendor, "vendor", "cloth", is_public=True)
    ci_private_other = make.image(vendor, "vendor", "cloth")
    ui_other = make.image(other)
    ui_wrong_kind = make.image(user, "vendor", "user")  # same uuid, but a vendor's image
    cloth_as_user = make.image(user, type="cloth")
    ok = {"u": user, "v": None, "ui": ui, "ci": ci_public}
    missing = uuid.uuid4()
    return [
        ("no owner", {**ok, "u": None}, "SA001", "owner_required: "),
        ("both owners", {**ok, "v": vendor}, "SA002", "owner_ambiguous: "),
        ("unknown user", {**ok, "u": missing}, "SA003", "owner_not_found: user "),
        ("unknown vendor", {**ok, "u": None, "v": missing}, "SA003", "owner_not_found: vendor "),
        ("no user image", {**ok, "ui": None}, "SA004", "argument_required: user_image_id"),
        ("no cloth image", {**ok, "ci": None}, "SA004", "argument_required: cloth_image_id"),
        ("user image missing", {**ok, "ui": missing}, "SA010", "image_not_found: user image"),
        ("cloth image missing", {**ok, "ci": missing}, "SA010", "image_not_found: cloth image"),
        ("user image is cloth", {**ok, "ui": cloth_as_user}, "SA011", "image_wrong_type: user image"),
        ("cloth image is user", {**ok, "ci": ui}, "SA011", "image_wrong_type: cloth image"),
        ("user image of another", {**ok, "ui": ui_other}, "SA012", "image_not_accessible: user image"),
        ("user image of a vendor", {**ok, "ui": ui_wrong_kind}, "SA012", "image_not_accessible: user image"),
        ("private cloth of another", {**ok, "ci": ci_private_other}, "SA012",
         "image_not_accessible: cloth image"),
    ]


def test_create_conversion_refusals(db: psycopg.Connection[Any], make: Factory) -> None:
    for label, args, sqlstate, prefix in _refusal_cases(make):
        with refused(sqlstate, prefix):
            db.execute(CREATE, args)
        assert _count(db, "conversions") == 0, label
    assert _count(db, "conversion_jobs") == 0
    assert _count(db, "image_usage_history") == 0


@pytest.mark.parametrize(
    ("extra", "sqlstate", "prefix"),
    [
        ("conversion_type := 'gold'", "SA005", "invalid_argument: conversion_type"),
        ("conversion_type := NULL", "SA005", "invalid_argument: conversion_type"),
        ("priority := NULL", "SA004", "argument_required: priority"),
        ("max_retries := NULL", "SA004", "argument_required: max_retries"),
        ("max_retries := -1", "SA005", "invalid_argument: max_retries"),
    ],
)
def test_create_conversion_argument_refusals(
    db: psycopg.Connection[Any], make: Factory, extra: str, sqlstate: str, prefix: str
) -> None:
    user = make.user()
    ui, ci = make.image(user), make.image(user, type="cloth")
    with refused(sqlstate, prefix):
        db.execute(
            f"SELECT create_conversion(user_id := %s, user_image_id := %s, cloth_image_id := %s, {extra})",
            (user, ui, ci),
        )
    assert _count(db, "conversions") == 0


def test_create_conversion_idempotency_key(db: psycopg.Connection[Any], make: Factory) -> None:
    user, other = make.user(), make.user()
    ui, ci = make.image(user), make.image(user, type="cloth", is_public=True)
    oi = make.image(other)
    call = ("SELECT create_conversion(user_id := %s, user_image_id := %s, cloth_image_id := %s, "
            "idempotency_key := %s)")
    first = _one(db, call, (user, ui, ci, "req-1"))
    assert _one(db, call, (user, ui, ci, "req-1")) == first
    assert (_count(db, "conversions"), _count(db, "conversion_jobs"), _count(db, "image_usage_history")) == (
        1, 1, 2,
    )
    assert _one(db, call, (user, ui, ci, "req-2")) != first
    assert _one(db, call, (other, oi, ci, "req-1")) != first  # keys are per owner
    assert _count(db, "conversions") == 3


def test_create_conversion_idempotency_key_concurrent(db_url: str, make: Factory) -> None:
    user = make.user()
    ui, ci = make.image(user), make.image(user, type="cloth")
    call = ("SELECT create_conversion(user_id := %s, user_image_id := %s, cloth_image_id := %s, "
            "idempotency_key := 'same')")
    results: list[uuid.UUID] = []
    with psycopg.connect(db_url) as first:  # not autocommit: holds its insert open
        results.append(_one(first, call, (user, ui, ci)))

        def second() -> None:
            with psycopg.connect(db_url, autocommit=True) as conn:
                results.append(_one(conn, call, (user, ui, ci)))

        t = threading.Thread(target=second)
        t.start()
        t.join(0.5)
        assert t.is_alive()  # waits on the first transaction's unique-index entry
        first.commit()
        t.join(10)
    assert len(results) == 2 and results[0] == results[1]
    assert _count(make.conn, "conversions") == 1
    assert _count(make.conn, "conversion_jobs") == 1


# update_conversion_status


def _status(db: psycopg.Connection[Any], conv: uuid.UUID) -> tuple[Any, ...]:
    row = db.execute(
        "SELECT c.status, j.status FROM conversions c JOIN conversion_jobs j ON j.conversion_id = c.id "
        "WHERE c.id = %s", (conv,)
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_update_status_to_completed_writes_result_job_and_metrics(
    db: psycopg.Connection[Any], make: Factory
) -> None:
    user, _ui, _ci, conv = make.user_conversion()
    result = make.result_image(user, file_size=2000)
    db.execute("SELECT update_conversion_status(conversion_id := %s, status := 'processing')", (conv,))
    assert _status(db, conv) == ("processing", "processing")
    job = db.execute(
        "SELECT attempt, started_at IS NOT NULL, heartbeat_at IS NOT NULL FROM conversion_jobs "
        "WHERE conversion_id = %s", (conv,)
    ).fetchone()
    assert job == (1, True, True)
    db.execute(
        "SELECT update_conversion_status(conversion_id := %s, status := 'completed', result_image_id := %s, "
        "processing_time_ms := 5000, ai_model_version := 'tryon-1.2')", (conv, result),
    )
    assert _status(db, conv) == ("completed", "completed")
    assert db.execute(
        "SELECT result_image_id, processing_time_ms, error_message FROM conversions WHERE id = %s", (conv,)
    ).fetchone() == (result, 5000, None)
    assert _one(db, "SELECT completed_at IS NOT NULL FROM conversion_jobs WHERE conversion_id = %s", (conv,))
    metrics = db.execute(
        "SELECT user_id, vendor_id, processing_time_ms, input_file_size_bytes, output_file_size_bytes, "
        "success, error_type, ai_model_version FROM conversion_metrics WHERE conversion_id = %s", (conv,)
    ).fetchall()
    assert metrics == [(user, None, 5000, 1500, 2000, True, None, "tryon-1.2")]


def test_update_status_to_failed(db: psycopg.Connection[Any], make: Factory) -> None:
    _user, _ui, _ci, conv = make.user_conversion()
    db.execute("SELECT update_conversion_status(%s, 'processing')", (conv,))
    db.execute(
        "SELECT update_conversion_status(%s, 'failed', processing_time_ms := 120, "
        "error_message := 'the image does not decode', error_type := 'image_decode', "
        "input_file_size_bytes := 42)", (conv,),
    )
    assert _status(db, conv) == ("failed", "failed")
    assert db.execute(
        "SELECT error_message, error_type FROM conversion_jobs WHERE conversion_id = %s", (conv,)
    ).fetchone() == ("the image does not decode", "image_decode")
    assert db.execute(
        "SELECT success, error_type, processing_time_ms, input_file_size_bytes, output_file_size_bytes "
        "FROM conversion_metrics WHERE conversion_id = %s", (conv,)
    ).fetchone() == (False, "image_decode", 120, 42, None)


def test_update_status_cancel_pending(db: psycopg.Connection[Any], make: Factory) -> None:
    _user, _ui, _ci, conv = make.user_conversion()
    db.execute("SELECT update_conversion_status(%s, 'cancelled')", (conv,))
    assert _status(db, conv) == ("cancelled", "cancelled")
    assert db.execute(
        "SELECT success, error_type, processing_time_ms FROM conversion_metrics WHERE conversion_id = %s",
        (conv,),
    ).fetchone() == (False, "cancelled", 0)


def test_update_status_back_to_pending_requeues_the_job(db: psycopg.Connection[Any], make: Factory) -> None:
    _user, _ui, _ci, conv = make.user_conversion()
    db.execute("UPDATE conversion_jobs SET worker_id = 'w1' WHERE conversion_id = %s", (conv,))
    db.execute("SELECT update_conversion_status(%s, 'processing')", (conv,))
    db.execute("SELECT update_conversion_status(%s, 'pending', error_message := 'storage timeout')", (conv,))
    assert _status(db, conv) == ("pending", "queued")
    assert db.execute(
        "SELECT worker_id, heartbeat_at, attempt FROM conversion_jobs WHERE conversion_id = %s", (conv,)
    ).fetchone() == (None, None, 1)
    assert _one(db, "SELECT error_message FROM conversions WHERE id = %s", (conv,)) == "storage timeout"
    assert _count(db, "conversion_metrics") == 0


def test_update_status_when_the_queue_moved_the_job_first(db: psycopg.Connection[Any], make: Factory) -> None:
    """A claim sets the job processing itself; the function then leaves attempt alone."""
    _user, _ui, _ci, conv = make.user_conversion()
    db.execute(
        "UPDATE conversion_jobs SET status = 'processing', attempt = attempt + 1, worker_id = 'w1', "
        "started_at = now() - interval '2 seconds', heartbeat_at = now() WHERE conversion_id = %s", (conv,)
    )
    db.execute("SELECT update_conversion_status(%s, 'processing')", (conv,))
    db.execute("SELECT update_conversion_status(%s, 'failed', error_type := 'runtime')", (conv,))
    assert db.execute(
        "SELECT attempt, worker_id, status FROM conversion_jobs WHERE conversion_id = %s", (conv,)
    ).fetchone() == (1, "w1", "failed")
    # processing time derived from the job's start when not given
    assert 1500 <= _one(db, "SELECT processing_time_ms FROM conversion_metrics") < 60_000


def test_update_status_repeated_terminal_is_a_no_op(db: psycopg.Connection[Any], make: Factory) -> None:
    user, _ui, _ci, conv = make.user_conversion()
    result = make.result_image(user)
    db.execute("SELECT update_conversion_status(%s, 'processing')", (conv,))
    call = "SELECT update_conversion_status(%s, 'completed', result_image_id := %s, processing_time_ms := 10)"
    db.execute(call, (conv, result))
    db.execute(call, (conv, result))  # a redelivered completion
    assert _count(db, "conversion_metrics") == 1
    with refused("SA021", "invalid_status_transition: "):
        db.execute(call, (conv, make.result_image(user)))  # a second result
    assert _one(db, "SELECT result_image_id FROM conversions WHERE id = %s", (conv,)) == result


def test_update_status_refusals(db: psycopg.Connection[Any], make: Factory) -> None:
    user, ui, _ci, conv = make.user_conversion()
    result = make.result_image(user)
    call = "SELECT update_conversion_status(conversion_id := %s, status := %s, result_image_id := %s, " \
           "processing_time_ms := %s)"
    cases = [
        ((None, "processing", None, None), "SA004", "argument_required: conversion_id"),
        ((conv, None, None, None), "SA004", "argument_required: status"),
        ((conv, "done", None, None), "SA005", "invalid_argument: unknown conversion status"),
        ((conv, "processing", None, -1), "SA005", "invalid_argument: processing_time_ms"),
        ((uuid.uuid4(), "processing", None, None), "SA020", "conversion_not_found: "),
        ((conv, "completed", result, None), "SA021", "invalid_status_transition: "),  # pending -> completed
        ((conv, "failed", result, None), "SA005", "invalid_argument: result_image_id"),
    ]
    for args, sqlstate, prefix in cases:
        with refused(sqlstate, prefix):
            db.execute(call, args)
    db.execute(call, (conv, "processing", None, None))
    for args, sqlstate, prefix in [
        ((conv, "completed", None, None), "SA022", "result_image_required: "),
        ((conv, "completed", uuid.uuid4(), None), "SA010", "image_not_found: result image"),
        ((conv, "completed", ui, None), "SA011", "image_wrong_type: result image"),
    ]:
        with refused(sqlstate, prefix):
            db.execute(call, args)
    db.execute(call, (conv, "failed", None, None))
    for target in ("pending", "processing", "completed", "cancelled"):
        with refused("SA021", "invalid_status_transition: "):
            db.execute(call, (conv, target, result if target == "completed" else None, None))
    assert _status(db, conv) == ("failed", "failed")
    assert _count(db, "conversion_metrics") == 1


# record_image_usage


def test_record_image_usage(db: psycopg.Connection[Any], make: Factory) -> None:
    user, ui, _ci, conv = make.user_conversion()
    usage = _one(
        db,
        "SELECT record_image_usage(image_id := %s, user_id := %s, action := 'download', "
        "ip_address := '10.0.0.1', user_agent := 'curl/8', conversion_id := %s, session_id := 's1', "
        "metadata := '{\"k\": 1}')", (ui, user, conv),
    )
    row = db.execute(
        "SELECT image_id, user_id, vendor_id, conversion_id, action, host(ip_address), user_agent, "
        "session_id, metadata FROM image_usage_history WHERE id = %s", (usage,)
    ).fetchone()
    assert row == (ui, user, None, conv, "download", "10.0.0.1", "curl/8", "s1", {"k": 1})
    anon = _one(db, "SELECT record_image_usage(image_id := %s)", (ui,))  # anonymous view
    assert db.execute(
        "SELECT action, user_id, metadata FROM image_usage_history WHERE id = %s", (anon,)
    ).fetchone() == ("view", None, {})


def test_record_image_usage_refusals(db: psycopg.Connection[Any], make: Factory) -> None:
    user, ui, _ci, _conv = make.user_conversion()
    before = _count(db, "image_usage_history")
    call = "SELECT record_image_usage(image_id := %s, user_id := %s, vendor_id := %s, action := %s, " \
           "conversion_id := %s)"
    missing = uuid.uuid4()
    for args, sqlstate, prefix in [
        ((None, user, None, "view", None), "SA004", "argument_required: image_id"),
        ((ui, user, None, None, None), "SA004", "argument_required: action"),
        ((ui, user, None, "like", None), "SA005", "invalid_argument: unknown image usage action"),
        ((missing, user, None, "view", None), "SA010", "image_not_found: "),
        ((ui, missing, None, "view", None), "SA003", "owner_not_found: user"),
        ((ui, None, missing, "view", None), "SA003", "owner_not_found: vendor"),
        ((ui, user, None, "view", missing), "SA020", "conversion_not_found: "),
    ]:
        with refused(sqlstate, prefix):
            db.execute(call, args)
    assert _count(db, "image_usage_history") == before


# get_conversion_stats

STATS_COLUMNS = [
    "total_count", "pending_count", "processing_count", "completed_count", "failed_count",
    "cancelled_count", "success_rate", "avg_processing_time_ms", "p95_processing_time_ms",
]


def test_get_conversion_stats(db: psycopg.Connection[Any], make: Factory) -> None:
    user = make.user()
    other = make.user()
    ui, ci = make.image(user), make.image(user, type="cloth")
    oi, oc = make.image(other), make.image(other, type="cloth")
    times = [100, 200, 300, 400, 500, 600, 700, 800, 900, 10_000]
    base = datetime(2025, 1, 10, 12, tzinfo=UTC)

    def conversion(owner: uuid.UUID, img: uuid.UUID, cloth: uuid.UUID, final: str, t: int | None) -> uuid.UUID:
        conv = _one(db, CREATE, {"u": owner, "v": None, "ui": img, "ci": cloth})
        if final != "pending":
            db.execute("SELECT update_conversion_status(%s, 'processing')", (conv,))
        if final == "completed":
            db.execute(
                "SELECT update_conversion_status(%s, 'completed', result_image_id := %s, "
                "processing_time_ms := %s)", (conv, make.result_image(owner), t),
            )
        elif final in ("failed", "cancelled"):
            db.execute("SELECT update_conversion_status(%s, %s, processing_time_ms := 5)", (conv, final))
        return conv

    mine = [conversion(user, ui, ci, "completed", t) for t in times]
    mine += [conversion(user, ui, ci, s, None) for s in ("failed", "failed", "cancelled", "processing", "pending")]
    conversion(other, oi, oc, "completed", 50)
    # spread creation times: mine[i] on base + i days
    for i, conv in enumerate(mine):
        db.execute("UPDATE conversions SET created_at = %s WHERE id = %s", (base + timedelta(days=i), conv))

    cur = db.execute("SELECT * FROM get_conversion_stats(p_user_id := %s)", (user,))
    assert [d.name for d in cur.description or []] == STATS_COLUMNS
    row = dict(zip(STATS_COLUMNS, cur.fetchone() or (), strict=True))
    assert (row["total_count"], row["pending_count"], row["processing_count"], row["completed_count"],
            row["failed_count"], row["cancelled_count"]) == (15, 1, 1, 10, 2, 1)
    assert float(row["success_rate"]) == pytest.approx(10 / 12, abs=1e-4)
    assert float(row["avg_processing_time_ms"]) == pytest.approx(statistics.mean(times), abs=0.01)
    p95 = statistics.quantiles(times, n=100, method="inclusive")[94]
    assert row["p95_processing_time_ms"] == pytest.approx(p95)

    # half-open window: from day 2 inclusive to day 5 exclusive -> mine[2], mine[3], mine[4]
    window = db.execute(
        "SELECT total_count, completed_count FROM get_conversion_stats(p_user_id := %s, "
        "p_date_from := %s, p_date_to := %s)", (user, base + timedelta(days=2), base + timedelta(days=5)),
    ).fetchone()
    assert window == (3, 3)
    everyone = db.execute("SELECT total_count, completed_count FROM get_conversion_stats()").fetchone()
    assert everyone == (16, 11)
    empty = db.execute(
        "SELECT total_count, success_rate, avg_processing_time_ms, p95_processing_time_ms "
        "FROM get_conversion_stats(p_vendor_id := %s)", (uuid.uuid4(),)
    ).fetchone()
    assert empty == (0, None, None, None)


# get_image_stats


def test_get_image_stats(db: psycopg.Connection[Any], make: Factory) -> None:
    user, other = make.user(), make.user()
    ui = make.image(user, file_size=100)
    make.image(user, type="cloth", is_public=True, file_size=200)
    make.image(user, type="result", file_size=400)
    make.image(other, file_size=10_000)
    make.image(user, "vendor", "cloth", file_size=7)  # same uuid, a vendor's image
    for action in ("view", "view", "download", "share"):
        db.execute("SELECT record_image_usage(image_id := %s, action := %s)", (ui,action))
    cur = db.execute("SELECT * FROM get_image_stats(p_owner_id := %s, p_owner_type := 'user')", (user,))
    names = [d.name for d in cur.description or []]
    row = dict(zip(names, cur.fetchone() or (), strict=True))
    assert row == {
        "total_images": 3, "total_bytes": 700,
        "user_images": 1, "cloth_images": 1, "result_images": 1,
        "user_bytes": 100, "cloth_bytes": 200, "result_bytes": 400,
        "public_images": 1, "private_images": 2, "public_bytes": 200, "private_bytes": 500,
        "usage_total": 4, "usage_upload": 0, "usage_view": 2, "usage_download": 1, "usage_delete": 0,
        "usage_update": 0, "usage_share": 1, "usage_convert": 0, "usage_use_in_conversion": 0,
    }
    only_cloth = db.execute(
        "SELECT total_images, total_bytes, usage_total FROM get_image_stats(p_owner_id := %s, "
        "p_image_type := 'cloth')", (user,)
    ).fetchone()
    assert only_cloth == (2, 207, 0)
    assert _one(db, "SELECT total_images FROM get_image_stats()") == 5


# The spec's own example calls, verbatim but with real ids

SPEC_CREATE = """
SELECT create_conversion(
    user_id := 'user-uuid',
    vendor_id := NULL,
    user_image_id := 'image-uuid-1',
    cloth_image_id := 'image-uuid-2',
    conversion_type := 'free',
    style_name := 'casual'
);
"""
SPEC_UPDATE = """
SELECT update_conversion_status(
    conversion_id := 'conversion-uuid',
    status := 'completed',
    result_image_id := 'result-image-uuid',
    processing_time_ms := 5000
);
"""
SPEC_RECORD = """
SELECT record_image_usage(
    image_id := 'image-uuid',
    user_id := 'user-uuid',
    vendor_id := NULL,
    action := 'view',
    ip_address := '192.168.1.1',
    user_agent := 'Mozilla/5.0...'
);
"""
SPEC_CONVERSION_STATS = """
SELECT * FROM get_conversion_stats(
    p_user_id := 'user-uuid',
    p_date_from := '2025-01-01',
    p_date_to := '2025-01-31'
);
"""
SPEC_IMAGE_STATS = """
SELECT * FROM get_image_stats(
    p_owner_id := 'user-uuid',
    p_owner_type := 'user',
    p_image_type := 'user'
);
"""
SPEC_USER_CONVERSION = """
SELECT create_conversion(
    user_id := 'user-uuid',
    user_image_id := 'user-image-uuid',
    cloth_image_id := 'cloth-image-uuid',
    conversion_type := 'free'
);
"""
SPEC_TRACKING = """
SELECT record_image_usage(
    image_id := 'image-uuid',
    user_id := 'user-uuid',
    action := 'view',
    ip_address := '192.168.1.1'
);
"""
SPEC_USER_STATS = "SELECT * FROM get_conversion_stats(p_user_id := 'user-uuid');"
SPEC_ANALYTICS = """
SELECT
    action,
    COUNT(*) as count,
    DATE(created_at) as date
FROM image_usage_history
WHERE image_id = 'image-uuid'
GROUP BY action, DATE(created_at)
ORDER BY date DESC;
"""


def _fill(template: str, ids: dict[str, uuid.UUID]) -> str:
    # Longest placeholders first: 'image-uuid-1' before 'image-uuid'.
    for name in sorted(ids, key=len, reverse=True):
        template = template.replace(f"'{name}'", f"'{ids[name]}'")
    return template


def test_spec_example_calls(db: psycopg.Connection[Any], make: Factory) -> None:
    user, vendor = make.user(), make.vendor()
    ui = make.image(user)
    ci = make.image(vendor, "vendor", "cloth", is_public=True)
    ids = {"user-uuid": user, "image-uuid-1": ui, "image-uuid-2": ci, "user-image-uuid": ui,
           "cloth-image-uuid": ci, "image-uuid": ui}
    conv = _one(db, _fill(SPEC_CREATE, ids))
    db.execute("UPDATE conversions SET created_at = '2025-01-15' WHERE id = %s", (conv,))
    # A worker claims the conversion before it completes (pending -> completed is not a move).
    db.execute("SELECT update_conversion_status(%s, 'processing')", (conv,))
    ids |= {"conversion-uuid": conv, "result-image-uuid": make.result_image(user)}
    db.execute(_fill(SPEC_UPDATE, ids))
    assert _status(db, conv) == ("completed", "completed")
    usage = _one(db, _fill(SPEC_RECORD, ids))
    assert isinstance(usage, uuid.UUID)
    stats = db.execute(_fill(SPEC_CONVERSION_STATS, ids)).fetchone()
    assert stats is not None and stats[0] == 1 and stats[3] == 1
    image_stats = db.execute(_fill(SPEC_IMAGE_STATS, ids)).fetchone()
    assert image_stats is not None and image_stats[0] == 1  # one user image of this user
    second = _one(db, _fill(SPEC_USER_CONVERSION, ids))
    assert second != conv
    db.execute(_fill(SPEC_TRACKING, ids))
    assert db.execute(_fill(SPEC_USER_STATS, ids)).fetchone()[0] == 2  # type: ignore[index]
    analytics = db.execute(_fill(SPEC_ANALYTICS, ids)).fetchall()
    assert {(a, n) for a, n, _d in analytics} == {("use_in_conversion", 2), ("view", 2)}
