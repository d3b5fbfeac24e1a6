"""Erasure and retention: erase an owner with many conversions on a folder and on S3, then prove nothing remains.

For each backend (a folder, and S3 served by moto in this process): an owner with
``erasure_conversions`` completed conversions (each with its result and thumbnail objects, its job,
two usage rows) and a bystander owner with ten. Rows are inserted with plain SQL in bulk (the rows
``create_conversion()`` and the completion write), objects with ``put_many``. ``erase_owner`` is timed
as its two parts: the SQL transaction and the object sweep right after. Then the whole store is
listed (only the bystander's objects may be left) and every column of every table is searched for
any id of the owner (its own, its images', its conversions', its results').

Retention: person photos older than the retention age, each with a completed conversion and its
result, at ``retention_small`` and at ``retention_large`` photos; the statement time of
``retention_expire_images()`` per batch of ``retention_batch`` (the median of a few batches).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.common import Row, Services, Sizes, percentile
from leader.sweep import sweep_due
from schema.queries import Q
from storage import Storage, from_url

NAME = "erasure"
_UUID_RE = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_CHUNK = 2_000


def _owner_with_images(conn: psycopg.Connection) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A user with a photo and a garment row (their objects are written by the caller)."""
    row = conn.execute("INSERT INTO users (email) VALUES (NULL) RETURNING id").fetchone()
    assert row is not None
    user = row[0]
    ids = []
    for kind in ("user", "cloth"):
        image = uuid.uuid4()
        key = f"images/{image.hex[:2]}/{image}.jpg"
        conn.execute("INSERT INTO images (id, owner_id, owner_type, file_path, file_name, original_url, "
                     "thumbnail_url, file_size, mime_type, type) VALUES (%s, %s, 'user', %s, 'x.jpg', %s, %s, 10, "
                     "'image/jpeg', %s)", (image, user, key, key, key, kind))
        ids.append(image)
    return user, ids[0], ids[1]


def _conversions(conn: psycopg.Connection, user: uuid.UUID, person: uuid.UUID, cloth: uuid.UUID, count: int,
                 *, age: str = "0 seconds") -> None:
    """``count`` completed conversions with their job, result row and usage rows, in chunks."""
    done = 0
    while done < count:
        n = min(_CHUNK, count - done)
        conn.execute(
            """WITH c AS (
                   INSERT INTO conversions (user_id, user_image_id, cloth_image_id, status, created_at)
                   SELECT %(u)s, %(p)s, %(g)s, 'processing', now() - %(age)s::interval FROM generate_series(1, %(n)s)
                   RETURNING id, created_at),
               j AS (INSERT INTO conversion_jobs (conversion_id, status, attempt, started_at, completed_at)
                     SELECT id, 'completed', 1, created_at, created_at FROM c),
               h AS (INSERT INTO image_usage_history (image_id, user_id, conversion_id, action)
                     SELECT img, %(u)s, c.id, 'use_in_conversion' FROM c, unnest(ARRAY[%(p)s, %(g)s]::uuid[]) img)
               INSERT INTO images (owner_id, owner_type, file_path, file_name, original_url, thumbnail_url,
                                   file_size, mime_type, type, metadata, created_at)
               SELECT %(u)s, 'user', 'results/' || id || '/a1.jpg', 'a1.jpg', 'x', 'x', 10, 'image/jpeg', 'result',
                      jsonb_build_object('conversion_id', id, 'attempt', 1), created_at FROM c""",
            {"u": user, "p": person, "g": cloth, "n": n, "age": age})
        conn.execute("""UPDATE conversions c SET status = 'completed', result_image_id = i.id FROM images i
                         WHERE c.user_id = %(u)s AND c.result_image_id IS NULL AND i.type = 'result'
                           AND i.file_path = 'results/' || c.id || '/a1.jpg'""", {"u": user})
        done += n


def _write_objects(conn: psycopg.Connection, storage: Storage, user: uuid.UUID) -> int:
    keys = [k for (ks,) in conn.execute("SELECT image_object_keys(id, type, file_path) FROM images "
                                        "WHERE owner_id = %s", (user,)).fetchall() for k in ks]
    for start in range(0, len(keys), 500):
        for result in storage.put_many([(k, b"x" * 256) for k in keys[start:start + 500]]):
            if isinstance(result, Exception):
                raise result
    return len(keys)


def _rows_naming(conn: psycopg.Connection, ids: list[uuid.UUID]) -> tuple[int, int]:
    """(rows in any table naming one of ``ids`` in any column, tables searched)."""
    conn.execute("CREATE TEMP TABLE erased_ids (id text PRIMARY KEY) ON COMMIT PRESERVE ROWS")
    with conn.cursor().copy("COPY erased_ids (id) FROM STDIN") as copy:
        for i in set(ids):
            copy.write_row((str(i),))
    tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
    found = 0
    for table in tables:
        row = conn.execute(sql.SQL(
            "SELECT count(*) FROM {} t WHERE EXISTS (SELECT 1 FROM regexp_matches(to_jsonb(t)::text, %s, 'g') m "
            "JOIN erased_ids e ON e.id = m[1])").format(sql.Identifier(table)), (f"({_UUID_RE})",)).fetchone()
        found += int(row[0]) if row else 0
    conn.execute("DROP TABLE erased_ids")
    return found, len(tables)


@contextlib.contextmanager
def _store(kind: str, work_dir: Path) -> Iterator[tuple[Storage, str]]:
    if kind == "folder":
        folder = work_dir / f"erasure-{uuid.uuid4().hex[:6]}"
        yield from_url(f"file://{folder}"), "folder"
        return
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    from storage.s3 import S3Storage

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
        client: Any = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench",
                                   aws_secret_access_key="bench", region_name="us-east-1")
        client.create_bucket(Bucket="erasure")
        yield S3Storage("erasure", "bench", client=client, max_workers=8), "S3 (moto)"
    finally:
        server.stop()


def _erase_case(svc: Services, kind: str, count: int) -> Row:
    with svc.fresh_database(f"erasure-{kind}") as url, psycopg.connect(url, autocommit=True) as conn, \
            _store(kind, svc.work_dir) as (storage, label):
        owner, person, cloth = _owner_with_images(conn)
        bystander, b_person, b_cloth = _owner_with_images(conn)
        _conversions(conn, owner, person, cloth, count)
        _conversions(conn, bystander, b_person, b_cloth, 10)
        t0 = time.monotonic()
        objects = _write_objects(conn, storage, owner)
        kept = _write_objects(conn, storage, bystander)
        write_s = time.monotonic() - t0
        bystander_keys = {k for k, _ in storage.list_objects()} - {
            k for (ks,) in conn.execute("SELECT image_object_keys(id, type, file_path) FROM images "
                                        "WHERE owner_id = %s", (owner,)).fetchall() for k in ks}
        ids = [owner] + [r[0] for r in conn.execute(
            "SELECT id FROM conversions WHERE user_id = %(u)s UNION ALL SELECT id FROM images WHERE owner_id = %(u)s "
            "UNION ALL SELECT j.id FROM conversion_jobs j JOIN conversions c ON c.id = j.conversion_id "
            "WHERE c.user_id = %(u)s", {"u": owner}).fetchall()]
        conn.execute("VACUUM ANALYZE")
        t0 = time.monotonic()
        with conn.transaction():
            conn.execute(Q.erase_owner, {"owner_type": "user", "owner_id": owner})
        db_s = time.monotonic() - t0
        swept = sweep_due(conn, storage, limit=1000, max_batches=1_000_000)
        total_s = time.monotonic() - t0
        listing = {k for k, _ in storage.list_objects()}
        if kind == "folder":  # folder names count too (a result's folder is named after its conversion)
            listing |= {str(p.relative_to(storage.root)) for p in storage.root.rglob("*")  # type: ignore[attr-defined]
                        if p.is_dir() and any(str(i) in p.name for i in ids)}
        left_rows, tables = _rows_naming(conn, ids)
    clean = left_rows == 0 and listing == bystander_keys and len(bystander_keys) == kept and swept.failed == 0
    return Row(NAME, f"erase an owner with {count:,} conversions ({objects:,} objects), {label}", total_s, "s",
               target="nothing of the owner left", met=clean,
               note=f"SQL {db_s:.1f} s + objects {total_s - db_s:.1f} s ({swept.deleted:,} deleted); after: "
                    f"{left_rows} rows naming its {len(ids):,} ids in {tables} tables, {len(listing)} objects listed "
                    f"(all {kept} of the bystander); objects written in {write_s:.0f} s")


def _retention_batches(svc: Services, photos: int, batch: int, batches: int) -> tuple[list[float], float]:
    """Statement times (ms) of ``batches`` expiry batches with ``photos`` expired photos; and the fill time."""
    with svc.fresh_database(f"retention-{photos}") as url, psycopg.connect(url, autocommit=True) as conn:
        t0 = time.monotonic()
        user, _, cloth = _owner_with_images(conn)
        done = 0
        while done < photos:
            n = min(50_000, photos - done)
            conn.execute("""INSERT INTO images (id, owner_id, owner_type, file_path, file_name, original_url,
                                                file_size, mime_type, type, created_at)
                            SELECT id, %(u)s, 'user', 'images/' || left(replace(id::text, '-', ''), 2) || '/' || id
                                   || '.jpg', 'p.jpg', 'x', 10, 'image/jpeg', 'user', now() - interval '2 days'
                              FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, %(n)s)) g""",
                         {"u": user, "n": n})
            done += n
        # Each photo used by one completed conversion with its result.
        for (photo_chunk,) in conn.execute(
                "SELECT array_agg(id) FROM (SELECT id, row_number() OVER () / %s AS b FROM images "
                "WHERE type = 'user' AND owner_id = %s) x GROUP BY b", (_CHUNK, user)).fetchall():
            conn.execute(
                """WITH c AS (
                       INSERT INTO conversions (user_id, user_image_id, cloth_image_id, status, created_at)
                       SELECT %(u)s, p, %(g)s, 'processing', now() - interval '2 days' FROM unnest(%(ps)s::uuid[]) p
                       RETURNING id, created_at),
                   j AS (INSERT INTO conversion_jobs (conversion_id, status, attempt, completed_at)
                         SELECT id, 'completed', 1, created_at FROM c)
                   INSERT INTO images (owner_id, owner_type, file_path, file_name, original_url, file_size,
                                       mime_type, type, metadata, created_at)
                   SELECT %(u)s, 'user', 'results/' || id || '/a1.jpg', 'a1.jpg', 'x', 10, 'image/jpeg', 'result',
                          jsonb_build_object('conversion_id', id, 'attempt', 1), created_at FROM c""",
                {"u": user, "g": cloth, "ps": photo_chunk})
        conn.execute("""UPDATE conversions c SET status = 'completed', result_image_id = i.id FROM images i
                         WHERE i.type = 'result' AND i.file_path = 'results/' || c.id || '/a1.jpg'""")
        conn.execute("VACUUM ANALYZE")
        fill_s = time.monotonic() - t0
        times = []
        for _ in range(batches):
            t0 = time.perf_counter()
            row = conn.execute(Q.retention_expire_images, {"type": "user", "older_than_s": 86400.0,
                                                           "batch_size": batch}).fetchone()
            times.append((time.perf_counter() - t0) * 1000)
            assert row is not None and row[0] == min(batch, photos) * 2, row  # the photos and their results
            photos -= batch
            if photos <= 0:
                break
    return times, fill_s


def run(svc: Services, sizes: Sizes) -> list[Row]:
    """The erasure on both backends, then the retention batch times at two table sizes."""
    rows = [_erase_case(svc, kind, sizes.erasure_conversions) for kind in ("folder", "s3")]
    batch = sizes.retention_batch
    small, _ = _retention_batches(svc, sizes.retention_small, batch, 1)
    large, fill_s = _retention_batches(svc, sizes.retention_large, batch, 5)
    s50, l50 = percentile(small, 0.5), percentile(large, 0.5)
    rows.append(Row(NAME, f"retention batch of {batch:,} photos (+ conversions, results), {sizes.retention_small:,} "
                          "expired photos", s50, "ms", note="one statement: the table holds one batch"))
    rows.append(Row(NAME, f"retention batch of {batch:,} photos (+ conversions, results), {sizes.retention_large:,} "
                          "expired photos, median", l50, "ms", ratio=l50 / s50, ratio_of="small table",
                    target="≤ 2× small table (bounded batches)", met=l50 / s50 <= 2.0,
                    note=f"{len(large)} batches, max {max(large):.0f} ms; rows inserted in {fill_s:.0f} s"))
    return rows
