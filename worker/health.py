"""The process's view of the shared services: one circuit breaker each for storage, the database, Redis.

An outage of a shared service (the S3 store, PostgreSQL or PgBouncer, Redis) is the fleet's
problem, not the customer's: a job that fails because of one must not spend its retries. So:

- **Detect.** A job's ``storage`` or ``database`` error is not trusted on its own: the breaker
  probes the service (``confirm``); only when the probe fails too is it the service's fault, the
  breaker opens, and the job is handed back uncharged. A probe that succeeds means the failure was
  the job's own (one object refused, one key unreadable): it is charged as before. Probes are shared
  by the threads of the process and reused for ``probe_reuse_s``, so a batch that fails at once
  costs one probe. The heartbeat reports the database directly (it fails or succeeds every beat).
- **Stop claiming** while the database or storage breaker is open (``allow_claim``): messages that
  arrive are no-ops; the leader's sweep sends them again. Redis is watched (a PING every
  ``watch_interval_s``) and reported, but does not stop claims: without it no message arrives.
- **Heal.** A monitor thread probes each open breaker every ``probe_interval_s`` (the half-open
  state: one probe, never traffic); the first success closes it, logs it, and ``on_recovered``
  wakes the process's claims.
- **Say so.** Every change is one log line and a gauge per service (``stayler_service_up``), and
  the heartbeat writes the services this process finds down to its registry row, where the
  console shows them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from core.logs import first_line

log = logging.getLogger(__name__)

#: The shared services a worker process depends on (``stayler_service_up{service=…}``).
SERVICES = ("database", "storage", "redis")
#: The services without which a claimed job cannot end well: while one is down, nothing is claimed.
#: (Without Redis no claim message arrives, and held jobs finish without it.)
CLAIM_BLOCKERS = ("database", "storage")
#: Services probed while up too, every ``watch_interval_s`` (cheap, and no job reports them).
WATCHED = ("redis",)
#: error_type → the service whose outage it may be.
SERVICE_OF_ERROR = {"storage": "storage", "database": "database"}


@dataclass
class Breaker:
    """One service's breaker: up (closed) or down (open, probed until it heals)."""

    name: str
    probe: Callable[[], None]
    probe_reuse_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    down_since: float | None = None
    #: When the breaker last closed again (the end of the last outage it saw).
    healed_at: float | None = None
    last_error: str = ""
    _last_probe: tuple[float, bool] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def up(self) -> bool:
        """Whether the service is believed reachable."""
        return self.down_since is None

    def run_probe(self) -> bool:
        """Probe now (or reuse a probe younger than ``probe_reuse_s``); True when the service answered."""
        with self._lock:
            now = self.clock()
            if self._last_probe is not None and now - self._last_probe[0] < self.probe_reuse_s:
                return self._last_probe[1]
            try:
                self.probe()
                ok = True
            except Exception as exc:
                ok = False
                self.last_error = first_line(exc)
            self._last_probe = (self.clock(), ok)
            return ok


class Health:
    """The breakers of one process, and the monitor thread that heals them."""

    def __init__(self, probes: dict[str, Callable[[], None]], *, probe_interval_s: float = 1.0,
                 probe_reuse_s: float = 1.0, watch_interval_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[str, bool], None] | None = None,
                 on_recovered: Callable[[], None] | None = None) -> None:
        """One breaker per entry of ``probes`` (service name → a callable that raises when it is down)."""
        self.breakers = {name: Breaker(name, probe, probe_reuse_s, clock) for name, probe in probes.items()}
        self.probe_interval_s = probe_interval_s
        self.watch_interval_s = watch_interval_s
        self.clock = clock
        self.on_change = on_change
        self.on_recovered = on_recovered
        self.opened = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def allow_claim(self) -> bool:
        """Whether the process may take new work: the database and storage are up."""
        return all(b.up for name, b in self.breakers.items() if name in CLAIM_BLOCKERS)

    def down(self) -> list[str]:
        """The services believed down, in a stable order."""
        return [name for name, b in self.breakers.items() if not b.up]

    def is_up(self, service: str) -> bool:
        """Whether ``service`` is believed up (an unknown service is)."""
        breaker = self.breakers.get(service)
        return breaker is None or breaker.up

    def confirm(self, error_type: str, *, since: float | None = None) -> bool:
        """Whether a job's failure of ``error_type`` is a shared service's outage (then it is not charged).

        Only ``storage`` and ``database`` errors can be. An open breaker answers at once, and so does
        one that healed after ``since`` (when the failed work began, on this health's clock: the
        outage covered it). Otherwise the service is probed: a failed probe opens the breaker and
        the answer is yes.
        """
        service = SERVICE_OF_ERROR.get(error_type)
        breaker = self.breakers.get(service or "")
        if breaker is None:
            return False
        if not breaker.up:
            return True
        if since is not None and breaker.healed_at is not None and breaker.healed_at >= since:
            return True
        if breaker.run_probe():
            return False
        self.report_down(breaker.name, breaker.last_error)
        return True

    def report_down(self, service: str, error: str = "") -> None:
        """``service`` failed where it cannot be the job's fault (a heartbeat, a probe): open its breaker."""
        breaker = self.breakers.get(service)
        if breaker is None:
            return
        with self._lock:
            if not breaker.up:
                return
            breaker.down_since = self.clock()
            breaker.last_error = error or breaker.last_error
            self.opened += 1
        log.warning("shared service down: not claiming, handing held jobs back uncharged",
                    extra={"service": service, "error": breaker.last_error})
        if self.on_change is not None:
            self.on_change(service, False)
        self._ensure_monitor()
        self._wake.set()

    def report_up(self, service: str) -> None:
        """``service`` answered: close its breaker."""
        breaker = self.breakers.get(service)
        if breaker is None:
            return
        with self._lock:
            if breaker.up:
                return
            breaker.healed_at = self.clock()
            down_for = breaker.healed_at - (breaker.down_since or breaker.healed_at)
            breaker.down_since = None
        log.warning("shared service back: claiming again", extra={"service": service, "down_s": round(down_for, 1)})
        if self.on_change is not None:
            self.on_change(service, True)
        if service in CLAIM_BLOCKERS and self.allow_claim() and self.on_recovered is not None:
            try:
                self.on_recovered()
            except Exception as exc:
                log.warning("could not wake the claims after a recovery", extra={"error": first_line(exc)})

    def probe_down(self) -> None:
        """One half-open round: probe every open breaker once; close those that answer."""
        for breaker in list(self.breakers.values()):
            if not breaker.up and breaker.run_probe():
                self.report_up(breaker.name)

    def watch(self) -> None:
        """Probe the watched services that are up (Redis); open the breaker of one that fails."""
        for name in WATCHED:
            breaker = self.breakers.get(name)
            if breaker is not None and breaker.up and not breaker.run_probe():
                self.report_down(name, breaker.last_error)

    def start(self) -> None:
        """Start the monitor (it sleeps while every breaker is closed)."""
        self._ensure_monitor()

    def stop(self) -> None:
        """Stop the monitor."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=self.probe_interval_s + 5)

    def _ensure_monitor(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="stayler-health", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        next_watch = self.clock()
        while not self._stop.is_set():
            try:
                if self.clock() >= next_watch:
                    next_watch = self.clock() + self.watch_interval_s
                    self.watch()
                if not self.down():
                    self._wake.wait(max(next_watch - self.clock(), 0.0))
                    self._wake.clear()
                    continue
                if self._stop.wait(self.probe_interval_s):
                    return
                self.probe_down()
            except Exception:
                log.exception("a health probe failed unexpectedly")
                self._stop.wait(self.probe_interval_s)


def describe(down: Iterable[str]) -> str | None:
    """The registry's ``services_down`` text: comma-separated names, or None when all are up."""
    names = sorted(down)
    return ",".join(names) if names else None
