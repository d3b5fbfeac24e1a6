"""The fair peer: the same conversion workload written on pgqueuer, as a user who picked pgqueuer would.

Conversions are created exactly as for the project (``create_conversion()`` through
:class:`bench.common.Workload`), then one pgqueuer job per conversion is enqueued with the
conversion id as its payload. The ``conversion_jobs`` row the schema creates with each conversion
is never claimed by the peer: ``update_conversion_status()`` keeps it in step with the conversion
(``processing`` sets its ``started_at``, ``completed`` its ``completed_at``), which is why the rate
can be read from the database exactly as the project's is (:func:`bench.common.drain_rate`).

One pgqueuer entrypoint per process does, per job, what a plain-SQL worker does:

1. one transaction: ``update_conversion_status(status := 'processing')`` (the seed's flow: a job
   no worker claimed needs no attempt), read the conversion and the keys of its two images, write
   the ``convert`` usage row with ``record_image_usage()``;
2. in a thread (``asyncio.to_thread``): read both images from the same storage backend
   (``storage.from_url``), run the ``null`` model through ``models.runner.TryOnRunner`` (decode,
   model, render, encode, thumbnail), store the result and its thumbnail with ``put_many``;
3. one transaction: ``INSERT`` the result image row (key under ``results/<conversion id>/``),
   ``update_conversion_status(status := 'completed', result_image_id := …)``, which writes the
   conversion, the job and the metrics row.

Processes are spawned (onnxruntime is imported only in them), each runs one ``QueueManager`` in
drain mode at ``batch_size`` = the project's claim batch, with ``max_concurrent_tasks`` = 2 ×
batch (the project's two threads each holding one batch) and a default executor of ``threads``
threads (the project's worker threads); SQL goes through an asyncpg pool of ``threads``
connections, and pgqueuer's own driver holds one more. The event loop is uvloop when installed,
as pgqueuer's own ``pgq run`` does.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.common import Services, Sizes, Workload, drain_rate

ENTRYPOINT = "convert"

START_SQL = "SELECT update_conversion_status(conversion_id := $1, status := 'processing')"
READ_SQL = """
SELECT c.user_id, c.vendor_id, c.user_image_id, c.conversion_type, ui.file_path, ci.file_path
  FROM conversions c JOIN images ui ON ui.id = c.user_image_id JOIN images ci ON ci.id = c.cloth_image_id
 WHERE c.id = $1"""
USAGE_SQL = ("SELECT record_image_usage(image_id := $1, user_id := $2, vendor_id := $3, action := 'convert', "
             "conversion_id := $4)")
RESULT_SQL = """
INSERT INTO images (owner_id, owner_type, file_path, file_name, original_url, thumbnail_url, file_size,
                    mime_type, width, height, type, is_public, is_free, metadata)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'result', false, $11,
        jsonb_build_object('conversion_id', $12::uuid))
RETURNING id"""
COMPLETE_SQL = ("SELECT update_conversion_status(conversion_id := $1, status := 'completed', "
                "result_image_id := $2, ai_model_version := $3)")


@dataclass(frozen=True)
class PeerConfig:
    """One peer process's configuration."""

    url: str
    storage_url: str
    batch: int
    threads: int
    model: str = "null"


def available() -> str | None:
    """None when pgqueuer and asyncpg can be imported, else why not."""
    try:
        import asyncpg  # noqa: F401
        import pgqueuer  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} not installed (pip install -e '.[bench]')"
    return None


async def _enqueue(url: str) -> int:
    """Install pgqueuer's tables and enqueue one job per conversion (payload: the conversion id)."""
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(url)
    try:
        queries = Queries(AsyncpgDriver(conn))
        await queries.install()
        ids = [r[0] for r in await conn.fetch("SELECT id FROM conversions ORDER BY created_at")]
        step = 5000
        for start in range(0, len(ids), step):
            chunk = ids[start:start + step]
            await queries.enqueue([ENTRYPOINT] * len(chunk), [str(i).encode() for i in chunk], [0] * len(chunk))
        return len(ids)
    finally:
        await conn.close()


class Converter:
    """The blocking part of one conversion: inputs, model, result files (runs in a worker thread)."""

    def __init__(self, config: PeerConfig) -> None:
        """Open the storage and load the model (imports onnxruntime: only in a spawned process)."""
        from core.settings import Settings
        from models.runner import TryOnRunner
        from storage import from_url

        settings = Settings()
        self.storage = from_url(config.storage_url)
        self.runner = TryOnRunner(config.model, intra_op_threads=1, max_batch=1,
                                  output_format=settings.result_format, quality=settings.result_quality,
                                  max_pixels=settings.max_image_pixels, thumbnail_size=settings.thumbnail_size)

    def convert(self, conversion_id: uuid.UUID, person_key: str, cloth_key: str) -> dict[str, Any]:
        """Read, run, encode, store; the result image's row values."""
        from storage import StoredObject, result_key

        result = self.runner.run_one(self.storage.get(person_key), self.storage.get(cloth_key))
        key = result_key(conversion_id, 1, result.mime_type)
        thumb_key = result_key(conversion_id, 1, result.mime_type, thumbnail=True)
        stored = self.storage.put_many([(key, result.image), (thumb_key, result.thumbnail or b"")])
        for item in stored:
            if not isinstance(item, StoredObject):
                raise item
        image, thumb = stored
        assert isinstance(image, StoredObject) and isinstance(thumb, StoredObject)
        return {"key": key, "url": image.url, "thumb_url": thumb.url, "size": image.size,
                "mime": result.mime_type, "width": result.width, "height": result.height,
                "version": result.model_version}


async def _serve(config: PeerConfig) -> None:
    """One peer process: a pgqueuer QueueManager draining the conversion jobs."""
    import asyncpg
    from pgqueuer import QueueManager
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(config.threads))
    converter = Converter(config)
    pool = await asyncpg.create_pool(config.url, min_size=config.threads, max_size=config.threads)
    conn = await asyncpg.connect(config.url)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint(ENTRYPOINT)
    async def convert(job: Job) -> None:
        conversion_id = uuid.UUID((job.payload or b"").decode())
        async with pool.acquire() as db, db.transaction():
            await db.execute(START_SQL, conversion_id)
            user_id, vendor_id, person_id, conversion_type, person_key, cloth_key = await db.fetchrow(
                READ_SQL, conversion_id)
            await db.execute(USAGE_SQL, person_id, user_id, vendor_id, conversion_id)
        out = await asyncio.to_thread(converter.convert, conversion_id, person_key, cloth_key)
        async with pool.acquire() as db, db.transaction():
            image_id = await db.fetchval(
                RESULT_SQL, user_id or vendor_id, "user" if user_id else "vendor", out["key"],
                out["key"].rsplit("/", 1)[-1], out["url"], out["thumb_url"], out["size"], out["mime"],
                out["width"], out["height"], conversion_type == "free", str(conversion_id))
            await db.execute(COMPLETE_SQL, conversion_id, image_id, out["version"])

    try:
        await qm.run(batch_size=config.batch, max_concurrent_tasks=2 * config.batch,
                     mode=QueueExecutionMode.drain)
    finally:
        await pool.close()
        if not conn.is_closed():
            await conn.close()


def _process_main(config: PeerConfig) -> None:
    """Entry point of a spawned peer process."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(config))
    else:
        uvloop.run(_serve(config))


def run_peer(svc: Services, sizes: Sizes, processes: int, batch: int, threads: int = 2) -> float:
    """Null-model conversions/s of the pgqueuer peer for one configuration (rate read from the database)."""
    label = f"peer{processes}x{batch}"
    work = svc.work_dir / label
    storage_dir = (work / "storage").resolve()
    with svc.fresh_database(label) as url, psycopg.connect(url, autocommit=True) as conn:
        Workload(conn, storage_dir, sizes.null_person_size).create_many(sizes.queue_jobs)
        asyncio.run(_enqueue(url))
        conn.execute("VACUUM ANALYZE")
        config = PeerConfig(url=url, storage_url=f"file://{storage_dir}", batch=batch, threads=threads)
        _run_processes(config, processes)
        done, seconds, other = drain_rate(conn)
        if other:
            raise RuntimeError(f"{other} conversions did not complete in {label}")
        check_rows(conn, done)
        return done / seconds if seconds > 0 else float("nan")


def check_rows(conn: psycopg.Connection, count: int) -> None:
    """Raise unless every conversion has the rows a project worker writes (result image, metrics, usage)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM conversions WHERE status = 'completed' AND result_image_id IS NOT NULL), "
        "       (SELECT count(*) FROM images WHERE type = 'result'), "
        "       (SELECT count(*) FROM conversion_metrics WHERE success), "
        "       (SELECT count(*) FROM image_usage_history WHERE action = 'convert')").fetchone()
    if row is None or any(int(v) != count for v in row):
        raise RuntimeError(f"the peer wrote other rows than expected for {count} conversions: {row}")


def _run_processes(config: PeerConfig, processes: int, stall_s: float = 120.0) -> None:
    """Spawn ``processes`` peer processes and wait until every one has drained the queue.

    Waits by counted progress, not a fixed window (a shared machine may be slow): it gives up only
    when no conversion completed for ``stall_s`` seconds.
    """
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_main, args=(config,), name=f"pgqueuer-peer-{i}") for i in range(processes)]
    for proc in procs:
        proc.start()
    try:
        with psycopg.connect(config.url, autocommit=True) as conn:
            seen, moved_at = -1, time.monotonic()
            while any(proc.is_alive() for proc in procs):
                row = conn.execute("SELECT count(*) FROM conversions WHERE status = 'completed'").fetchone()
                done = int(row[0]) if row else 0
                if done != seen:
                    seen, moved_at = done, time.monotonic()
                elif time.monotonic() - moved_at > stall_s:
                    raise TimeoutError(f"the pgqueuer peer completed nothing for {stall_s:.0f} s ({seen} done)")
                time.sleep(0.5)
        for proc in procs:
            proc.join()
            if proc.exitcode != 0:
                raise RuntimeError(f"a pgqueuer peer process exited with {proc.exitcode}")
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)

