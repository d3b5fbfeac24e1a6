"""Dramatiq middleware that ties the worker's resources to the process's life.

- ``after_process_boot``: one malloc arena, pinned thresholds (``core.malloc``), then create the per-process
  context (queue door, model session, heartbeat, standby leader) in the worker process, after the fork.
- ``after_worker_boot``: name the process's threads at OS level (``core.thread_names``).
- ``before_worker_shutdown``: stop claiming new work (SIGTERM).
- ``after_worker_shutdown``: release claims still held after the grace period back to the queue,
  without penalty, so nothing is left 'processing'; mark the worker stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import dramatiq
from dramatiq.middleware import Middleware

from core import logs
from core.malloc import keep_freed_memory
from core.settings import Settings
from core.thread_names import label_python_threads
from worker.process import ProcessContext

log = logging.getLogger(__name__)

_CONTEXT: ProcessContext | None = None


def current_context() -> ProcessContext:
    """The process's context; raises if the process has not booted."""
    if _CONTEXT is None:
        raise RuntimeError("the worker process has not booted (after_process_boot did not run)")
    return _CONTEXT


class WorkerLifecycle(Middleware):
    """Creates and tears down the per-process context."""

    def __init__(self, settings_factory: Callable[[], Settings]) -> None:
        """``settings_factory`` is called in the worker process, after the fork."""
        self.settings_factory = settings_factory

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        """Build the context in the worker process."""
        global _CONTEXT
        settings = self.settings_factory()
        logs.configure(settings.log_level, settings.log_format)
        keep_freed_memory(settings.malloc_keep_mb * 2**20)
        _CONTEXT = ProcessContext.boot(settings, broker)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Give the process's threads OS names (``top -H``, the latency benchmark's CPU split)."""
        label_python_threads()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Stop claiming: messages still arriving become no-ops."""
        if _CONTEXT is not None:
            _CONTEXT.draining.set()
            log.info("worker shutting down; finishing in-flight jobs",
                     extra={"in_flight": len(_CONTEXT.inflight), "grace_s": _CONTEXT.settings.shutdown_grace_s})

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Give back what is still held, then release the process's resources."""
        global _CONTEXT
        ctx = _CONTEXT
        if ctx is None:
            return
        ctx.release_held()
        ctx.shutdown()
        _CONTEXT = None
