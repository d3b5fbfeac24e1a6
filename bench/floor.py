"""The floor: the same file and row work per conversion, straight-line, in one process, with no queue.

Per conversion, one after another on one psycopg connection: ``create_conversion()`` (timed apart:
the queue benchmarks pre-queue theirs), then one transaction moving it to ``processing`` with
``update_conversion_status()``, reading its two image keys and writing the ``convert`` usage row;
both input files read from the storage backend; the ``null`` model through ``TryOnRunner``
(decode, model, render, JPEG encode, thumbnail); result and thumbnail stored with ``put_many``
(fsync'd, atomic); one transaction inserting the result image row and completing the conversion
with ``update_conversion_status()`` (conversion, job, metrics row). The rate leaves the creates out
(also given with them); the CPU per conversion of the process and of its PostgreSQL backend (when
the server runs on this host) are measured over the same loop, the creates' share taken out.

``python -m bench.floor [COUNT]`` runs it on ``DATABASE_URL`` in a fresh database (embedded
PostgreSQL when unset) and prints one line.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from bench.common import Services, Sizes, Workload, proc_cpu_seconds

CREATE_SQL = "SELECT create_conversion(user_id := %s, user_image_id := %s, cloth_image_id := %s)"
START_SQL = "SELECT update_conversion_status(conversion_id := %s, status := 'processing')"
READ_SQL = """
SELECT c.user_id, c.vendor_id, c.user_image_id, c.conversion_type, ui.file_path, ci.file_path
  FROM conversions c JOIN images ui ON ui.id = c.user_image_id JOIN images ci ON ci.id = c.cloth_image_id
 WHERE c.id = %s"""
USAGE_SQL = ("SELECT record_image_usage(image_id := %s, user_id := %s, vendor_id := %s, action := 'convert', "
             "conversion_id := %s)")
RESULT_SQL = """
INSERT INTO images (owner_id, owner_type, file_path, file_name, original_url, thumbnail_url, file_size,
                    mime_type, width, height, type, is_public, is_free, metadata)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'result', false, %s, jsonb_build_object('conversion_id', %s::uuid))
RETURNING id"""
COMPLETE_SQL = ("SELECT update_conversion_status(conversion_id := %s, status := 'completed', "
                "result_image_id := %s, ai_model_version := %s)")


def floor_loop(url: str, storage_dir: str, person_size: tuple[int, int], count: int) -> dict[str, float]:
    """(In a spawned process: loads onnxruntime) run ``count`` conversions straight-line; the figures."""
    import resource

    from core.settings import Settings
    from models.runner import TryOnRunner
    from storage import StoredObject, from_url, result_key

    settings = Settings()
    storage = from_url(f"file://{storage_dir}")
    runner = TryOnRunner("null", intra_op_threads=1, max_batch=1, output_format=settings.result_format,
                         quality=settings.result_quality, max_pixels=settings.max_image_pixels,
                         thumbnail_size=settings.thumbnail_size)
    with psycopg.connect(url, autocommit=True) as conn:
        load = Workload(conn, Path(storage_dir), person_size)

        def one(conversion_id: uuid.UUID) -> None:
            with conn.transaction():
                conn.execute(START_SQL, (conversion_id,))
                row = conn.execute(READ_SQL, (conversion_id,)).fetchone()
                assert row is not None
                user_id, vendor_id, person_id, conversion_type, person_key, cloth_key = row
                conn.execute(USAGE_SQL, (person_id, user_id, vendor_id, conversion_id))
            result = runner.run_one(storage.get(person_key), storage.get(cloth_key))
            key = result_key(conversion_id, 1, result.mime_type)
            thumb_key = result_key(conversion_id, 1, result.mime_type, thumbnail=True)
            image, thumb = storage.put_many([(key, result.image), (thumb_key, result.thumbnail or b"")])
            if not isinstance(image, StoredObject) or not isinstance(thumb, StoredObject):
                raise RuntimeError(f"storing failed: {image}, {thumb}")
            with conn.transaction():
                image_row = conn.execute(RESULT_SQL, (
                    user_id or vendor_id, "user" if user_id else "vendor", key, key.rsplit("/", 1)[-1], image.url,
                    thumb.url, image.size, result.mime_type, result.width, result.height, conversion_type == "free",
                    str(conversion_id))).fetchone()
                assert image_row is not None
                conn.execute(COMPLETE_SQL, (conversion_id, image_row[0], result.model_version))

        def create() -> uuid.UUID:
            row = conn.execute(CREATE_SQL, (load.user, load.person, load.garment)).fetchone()
            assert row is not None
            return uuid.UUID(str(row[0]))

        for _ in range(3):
            one(create())  # warm-up: session, plans, caches
        creating = 0.0
        backend = conn.info.backend_pid
        server0 = proc_cpu_seconds(backend)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        create_cpu = create_server = 0.0
        for _ in range(count):
            c0, r0, s0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF), proc_cpu_seconds(backend)
            conversion_id = create()
            r1, s1 = resource.getrusage(resource.RUSAGE_SELF), proc_cpu_seconds(backend)
            creating += time.perf_counter() - c0
            create_cpu += (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            create_server += (s1 or 0.0) - (s0 or 0.0)
            one(conversion_id)
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        server1 = proc_cpu_seconds(backend)
        done = conn.execute("SELECT count(*) FROM conversions WHERE status = 'completed'").fetchone()
        assert done is not None and done[0] == count + 3, done
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    out = {"count": count, "rate": count / (wall - creating), "rate_with_create": count / wall,
           "cpu_ms": 1000 * (cpu - create_cpu) / count}
    if server0 is not None and server1 is not None:
        out["pg_cpu_ms"] = 1000 * (server1 - server0 - create_server) / count
    return out


def run_floor(svc: Services, sizes: Sizes) -> dict[str, float]:
    """The floor in a fresh database, in a spawned process (onnxruntime stays out of this parent)."""
    work = (svc.work_dir / "floor" / "storage").resolve()
    with svc.fresh_database("floor") as url:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            return pool.apply(floor_loop, (url, str(work), sizes.null_person_size, sizes.floor_jobs))


def main() -> None:
    """``python -m bench.floor [COUNT]``: print the floor on the configured PostgreSQL."""
    from bench.common import FULL, services
    from core.settings import Settings

    count = int(sys.argv[1]) if len(sys.argv) > 1 else FULL.floor_jobs
    sizes = dataclasses.replace(FULL, floor_jobs=count)
    with tempfile.TemporaryDirectory(prefix="stayler-floor-") as tmp, services(Settings(), Path(tmp)) as svc:
        out = run_floor(svc, sizes)
    server = f"{out['pg_cpu_ms']:.2f}" if "pg_cpu_ms" in out else "n/a"
    print(f"floor: {out['rate']:,.0f} conv/s over {int(out['count']):,} conversions (without the creates; "
          f"{out['rate_with_create']:,.0f} with them); CPU per conversion: process {out['cpu_ms']:.2f} ms, "
          f"its PostgreSQL backend {server} ms")


if __name__ == "__main__":
    main()
