"""Per-process resources, created after the fork (Dramatiq's ``after_process_boot``).

One connection pool, one storage backend, one model runner (one onnxruntime session shared by the
process's threads), the in-flight registry, the heartbeat, and a standby dispatcher thread.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import dramatiq
from psycopg_pool import ConnectionPool

from core.settings import Settings
from leader.service import Dispatcher, DispatcherConfig, start_in_thread
from storage import LocalStorage, Storage
from worker import metrics
from worker.failpoints import Failpoints
from worker.heartbeat import Heartbeat
from worker.inflight import InFlight

if TYPE_CHECKING:
    from models.runner import TryOnRunner

log = logging.getLogger(__name__)


def new_worker_id() -> str:
    """A fleet-unique id for this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def make_runner(settings: Settings) -> TryOnRunner:
    """The process's model runner (imports onnxruntime: call only after the fork)."""
    from models.runner import TryOnRunner

    return TryOnRunner(
        settings.model, intra_op_threads=settings.intra_op_threads, providers=settings.providers,
        allow_spinning=settings.model_allow_spinning, max_batch=settings.claim_batch_size,
        output_format=settings.result_format, quality=settings.result_quality,
        max_pixels=settings.max_image_pixels, thumbnail_size=settings.thumbnail_size,
    )


@dataclass
class ProcessContext:
    """Everything a worker thread needs, shared by the threads of one process."""

    settings: Settings
    database_url: str
    broker: dramatiq.Broker
    worker_id: str
    pool: ConnectionPool
    storage: Storage
    runner: TryOnRunner
    inflight: InFlight
    heartbeat: Heartbeat
    dispatcher: Dispatcher
    failpoints: Failpoints = field(default_factory=Failpoints)
    stop: threading.Event = field(default_factory=threading.Event)
    draining: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def boot(cls, settings: Settings, broker: dramatiq.Broker) -> ProcessContext:
        """Create the process's resources and start its background threads."""
        if not settings.database_url:
            raise RuntimeError("DATABASE_URL is not set: start workers with `stayler worker` or set it")
        worker_id = new_worker_id()
        runner = make_runner(settings)
        pool = ConnectionPool(
            settings.database_url, min_size=1, max_size=settings.worker_threads + 1,
            kwargs={"autocommit": True}, open=False, name=f"stayler-{os.getpid()}",
        )
        pool.open(wait=False)
        storage = LocalStorage(settings.storage_root, settings.storage_url_prefix)
        inflight = InFlight()
        heartbeat = Heartbeat(settings.database_url, worker_id, inflight,
                              interval_s=settings.heartbeat_interval_s, job_timeout_s=settings.job_timeout_s)
        dispatcher = Dispatcher(settings.database_url, broker, DispatcherConfig.from_settings(settings), storage)
        dispatcher.gauges = metrics.queue_gauges(settings)
        dispatcher.stats.on_rescue.append(metrics.record_rescue)
        metrics.record_boot(model=runner.model_name, version=runner.model_version, providers=runner.providers,
                            threads=settings.worker_threads)
        ctx = cls(settings=settings, database_url=settings.database_url, broker=broker, worker_id=worker_id,
                  pool=pool, storage=storage, runner=runner, inflight=inflight, heartbeat=heartbeat,
                  dispatcher=dispatcher, failpoints=Failpoints.parse(settings.failpoints))
        ctx.register()
        heartbeat.start()
        start_in_thread(dispatcher, ctx.stop)
        log.info("worker process ready", extra={"worker_id": worker_id, "model": runner.model_name,
                                                "model_version": runner.model_version})
        return ctx

    def register(self) -> None:
        """Write this process to the worker registry (best effort: the database may be down)."""
        from schema.queries import Q

        try:
            with self.pool.connection(timeout=10) as conn:
                conn.execute(Q.worker_register, {
                    "id": self.worker_id, "hostname": socket.gethostname(), "pid": os.getpid(),
                    "concurrency": self.settings.worker_threads, "model_name": self.runner.model_name,
                    "model_version": self.runner.model_version,
                })
        except Exception as exc:
            log.warning("could not register the worker yet", extra={"error": str(exc)})

    def shutdown(self) -> None:
        """Stop background threads, mark the worker stopped, close the pool."""
        from schema.queries import Q

        self.stop.set()
        self.heartbeat.stop()
        try:
            with self.pool.connection(timeout=5) as conn:
                conn.execute(Q.worker_stop, {"id": self.worker_id})
        except Exception as exc:
            log.warning("could not mark the worker stopped", extra={"error": str(exc)})
        self.pool.close(timeout=5)
