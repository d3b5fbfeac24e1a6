"""``submit --csv`` across a broken connection: reconnect, read ambiguous rows back, never duplicate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from core.settings import Settings
from modelkit.samples import make_garment, make_person, to_bytes
from producer.accounts import create_vendor
from producer.batch import BatchOutcome, Owner, rows_from_csv, submit_batch
from producer.images import ImageLimits
from schema.connections import connect
from storage import LocalStorage
from tests.infra.fault_proxy import fault_proxy
from tests.infra.pgbouncer import PgBouncer
from tests.infra.pgbouncer import pgbouncer_for as pgbouncer_for

LIMITS = ImageLimits(max_bytes=5_000_000, max_pixels=4_000_000, thumbnail_size=64)
ROWS = 12
SETTINGS = Settings(db_timeout_s=5, database_pooled=True)


def write_csv(folder: Path, *, keys: bool = False) -> Path:
    (folder / "tee.png").write_bytes(to_bytes(make_garment(96, 96, transparent=True), "PNG"))
    lines = ["person,garment" + (",idempotency_key" if keys else "")]
    for i in range(ROWS):
        (folder / f"p{i}.jpg").write_bytes(to_bytes(make_person(64, 96, seed=i).image))
        lines.append(f"p{i}.jpg,tee.png" + (f",key-{i}" if keys else ""))
    path = folder / "batch.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def counts(db: psycopg.Connection) -> tuple[int, int]:
    conversions = db.execute("SELECT count(*) FROM conversions").fetchone()
    images = db.execute("SELECT count(*) FROM images WHERE type = 'user'").fetchone()
    assert conversions is not None and images is not None
    return conversions[0], images[0]


def test_every_csv_row_gets_a_stable_idempotency_key(tmp_path: Path) -> None:
    path = write_csv(tmp_path)
    keys = [r.idempotency_key for r in rows_from_csv(path)]
    assert all(keys) and len(set(keys)) == ROWS
    assert keys == [r.idempotency_key for r in rows_from_csv(path)]  # same file, same keys
    path.write_text(path.read_text() + "p0.jpg,tee.png\n")
    assert rows_from_csv(path)[0].idempotency_key != keys[0]  # another file
    assert [r.idempotency_key for r in rows_from_csv(write_csv(tmp_path, keys=True))][:2] == ["key-0", "key-1"]


def test_a_pgbouncer_restart_mid_batch_reports_every_row_truly_and_a_rerun_duplicates_nothing(
        db: psycopg.Connection, db_url: str, tmp_path: Path, pgbouncer_for: Callable[..., PgBouncer]) -> None:
    # Regression (issue 26, defect 4): after a PgBouncer restart the batch kept its dead connection
    # and reported every remaining row as refused (one of them had been created).
    bouncer = pgbouncer_for(db_url)
    url = bouncer.url(urlsplit(db_url).path.lstrip("/"))
    vendor = create_vendor(db, "shop")
    storage = LocalStorage(tmp_path / "store")
    rows = rows_from_csv(write_csv(tmp_path))
    restarted: list[int] = []

    def restart_once(outcome: BatchOutcome) -> None:
        if not restarted and outcome.conversion_id is not None:
            restarted.append(1)
            bouncer.restart()

    with connect(url, SETTINGS, "cli") as conn:
        outcomes = submit_batch(conn, storage, rows, Owner(vendor_id=vendor), limits=LIMITS, max_retries=1,
                                on_row=restart_once, reconnect=lambda: connect(url, SETTINGS, "cli"))
    assert restarted == [1]
    assert [o.error for o in outcomes] == [None] * ROWS
    assert counts(db) == (ROWS, ROWS)
    with connect(url, SETTINGS, "cli") as conn:
        again = submit_batch(conn, storage, rows, Owner(vendor_id=vendor), limits=LIMITS, max_retries=1)
    assert [o.conversion_id for o in again] == [o.conversion_id for o in outcomes]
    assert counts(db) == (ROWS, ROWS)  # nothing new: not even the images were registered again


def test_a_row_whose_commit_reply_was_lost_is_read_back_not_refused(db: psycopg.Connection, db_url: str,
                                                                    tmp_path: Path) -> None:
    vendor = create_vendor(db, "shop")
    storage = LocalStorage(tmp_path / "store")
    rows = rows_from_csv(write_csv(tmp_path))[:3]
    with fault_proxy(urlsplit(db_url).port or 5432) as proxy:
        url = proxy.url(db_url)
        armed: list[int] = []

        def arm(outcome: BatchOutcome) -> None:
            if not armed:
                armed.append(1)
                proxy.cut_after(b"create_conversion")  # the second row commits, its reply is lost

        with connect(url, SETTINGS, "cli") as conn:
            outcomes = submit_batch(conn, storage, rows, Owner(vendor_id=vendor), limits=LIMITS, max_retries=1,
                                    on_row=arm, reconnect=lambda: connect(url, SETTINGS, "cli"))
        assert proxy.cuts == 1
    assert [o.error for o in outcomes] == [None, None, None]
    assert len({o.conversion_id for o in outcomes}) == 3
    assert counts(db)[0] == 3  # the cut row was created once, and reported with its id


def test_without_reconnect_a_broken_row_is_reported_unavailable(db: psycopg.Connection, db_url: str,
                                                                tmp_path: Path) -> None:
    vendor = create_vendor(db, "shop")
    rows = rows_from_csv(write_csv(tmp_path))[:2]
    with fault_proxy(urlsplit(db_url).port or 5432) as proxy, connect(proxy.url(db_url), SETTINGS, "cli") as conn:
        proxy.cut_after(b"COALESCE(user_id, vendor_id) = ")
        outcomes = submit_batch(conn, LocalStorage(tmp_path / "store"), rows, Owner(vendor_id=vendor), limits=LIMITS,
                                max_retries=1)
    assert outcomes[0].error is not None and "unavailable" in outcomes[0].error
