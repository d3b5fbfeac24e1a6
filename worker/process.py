"""Per-process resources, created after the fork (Dramatiq's ``after_process_boot``).

One queue door (a pool of at most two connections), one storage backend, one model runner (one
onnxruntime session shared by the process's threads), the in-flight registry, the heartbeat, and
a standby leader that borrows the door's connections until it is elected.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import dramatiq

from broker.messages import send_follow_up
from core.settings import Settings
from leader.assembly import build_leader, default_duties
from leader.loop import LeaderLoop, start_in_thread
from storage import Storage, from_settings
from worker import metrics
from worker.batch import BatchPipeline
from worker.claimer import Claimer
from worker.config import WorkerSettings
from worker.failpoints import Failpoints
from worker.health import Health
from worker.heartbeat import Heartbeat
from worker.inflight import InFlight
from worker.jobqueue import JobQueue, QueueUnavailable

if TYPE_CHECKING:
    from models.runner import TryOnRunner

log = logging.getLogger(__name__)

#: Connections per worker process in steady state (pipeline threads, heartbeat and standby share them).
POOL_SIZE = 2


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
        exclusive_model=settings.model_exclusive, max_decode_bytes=settings.max_decode_bytes,
    )


def make_storage(settings: Settings) -> Storage:
    """The process's storage backend."""
    return from_settings(settings)


def make_health(settings: WorkerSettings, broker: dramatiq.Broker, queue: JobQueue, storage: Storage) -> Health:
    """The process's breakers: the database (the door's ping), storage (its check), Redis (PING)."""
    probes = {"database": queue.ping, "storage": storage.check}
    client = getattr(broker, "client", None)
    if client is not None:
        probes["redis"] = client.ping

    def wake_claims() -> None:
        for _ in range(settings.worker_threads):
            send_follow_up(broker, settings.queue_name)

    return Health(probes, on_change=metrics.set_service_up, on_recovered=wake_claims)


@dataclass
class ProcessContext:
    """Everything a worker thread needs, shared by the threads of one process."""

    settings: WorkerSettings
    broker: dramatiq.Broker
    worker_id: str
    queue: JobQueue
    storage: Storage
    runner: TryOnRunner
    inflight: InFlight
    heartbeat: Heartbeat
    leader: LeaderLoop
    pipeline: BatchPipeline
    health: Health
    claimer: Claimer
    stop: threading.Event = field(default_factory=threading.Event)
    draining: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def boot(cls, settings: Settings, broker: dramatiq.Broker) -> ProcessContext:
        """Create the process's resources and start its background threads.

        The composition root: the runner and storage are built from ``settings``; the rest gets its slice.
        """
        config = WorkerSettings.from_settings(settings)
        worker_id = new_worker_id()
        runner = make_runner(settings)
        queue = JobQueue.from_settings(config, worker_id, size=POOL_SIZE)
        storage = make_storage(settings)
        inflight = InFlight()
        health = make_health(config, broker, queue, storage)
        heartbeat = Heartbeat(queue, inflight, interval_s=config.heartbeat_interval_s,
                              job_timeout_s=config.job_timeout_s, on_beat=metrics.record_heartbeat, health=health)
        duties = default_duties(config.leader, broker, storage, gauges=metrics.queue_gauges(config),
                                on_rescue=metrics.record_rescue)
        leader = build_leader(config.leader, duties, borrow=queue.borrow, holder=worker_id)
        pipeline = BatchPipeline(queue, storage, runner, inflight,
                                 failpoints=Failpoints.parse(config.failpoints), health=health)
        claimer = Claimer(queue, inflight, health, partial(send_follow_up, broker, config.queue_name),
                          batch_size=config.claim_batch_size)
        metrics.record_boot(model=runner.model_name, version=runner.model_version, providers=runner.providers,
                            threads=config.worker_threads)
        ctx = cls(settings=config, broker=broker, worker_id=worker_id, queue=queue, storage=storage,
                  runner=runner, inflight=inflight, heartbeat=heartbeat, leader=leader, pipeline=pipeline,
                  health=health, claimer=claimer)
        ctx.register()
        heartbeat.on_unregistered = ctx.register
        heartbeat.start()
        health.start()
        start_in_thread(leader, ctx.stop, retiring=ctx.draining)  # a draining process takes no lease
        log.info("worker process ready", extra={"worker_id": worker_id, "model": runner.model_name,
                                                "model_version": runner.model_version})
        return ctx

    def register(self) -> None:
        """Write this process to the worker registry (best effort: the database may be down)."""
        try:
            self.queue.register(hostname=socket.gethostname(), pid=os.getpid(),
                                concurrency=self.settings.worker_threads, model_name=self.runner.model_name,
                                model_version=self.runner.model_version)
        except Exception as exc:
            log.warning("could not register the worker yet", extra={"error": str(exc)})

    def release_held(self) -> None:
        """Put every claim this process still holds back to 'queued' (graceful shutdown)."""
        held = self.inflight.snapshot()
        if not held:
            return
        for claim in held:
            claim.lost.set()  # the threads still running them must not write results
        try:
            released = self.queue.release([(c.job_id, c.attempt) for c in held])
            log.warning("released unfinished jobs back to the queue", extra={"released": len(released)})
        except QueueUnavailable as exc:
            log.warning("could not release held jobs; the rescuer will take them back", extra={"error": str(exc)})

    def shutdown(self) -> None:
        """Stop background threads, mark the worker stopped, close the pool."""
        self.stop.set()
        self.heartbeat.stop()
        self.health.stop()
        try:
            self.queue.stop_worker()
        except Exception as exc:
            log.warning("could not mark the worker stopped", extra={"error": str(exc)})
        self.queue.close()
