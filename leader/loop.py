"""The leader loop: stand by, take the lease, run the duties while it holds, step down when it lapses.

Every worker process runs one of these in a thread (and ``stayler dispatcher`` runs one alone);
exactly one of them holds the lease at a time.

- **Standby** asks for the lease every ``standby_interval_s`` on a borrowed connection (the
  worker's pool): a standby holds no connection of its own and opens none.
- **Leading**: one dedicated connection, named ``stayler-leader``, with keepalives and timeouts.
  When it is direct (not through a transaction pooler) the loop LISTENs on ``stayler_jobs`` and
  dispatches on each notification; through a pooler it polls. The lease is renewed every third of
  its length by a **keeper thread** of its own, on a borrowed connection, whatever the duties are
  doing: a duty round that takes longer than the lease (a mass cleanup against a slow store) never
  lets it lapse. The duties run when due. The loop steps down as soon as a renewal fails or its local
  deadline passes (a frozen process wakes up past it), and on shutdown it releases the lease so a
  standby takes over at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg

from core.backoff import Backoff
from core.logs import first_line
from leader.duties import Duty
from leader.lease import Lease
from schema import channels
from schema.listen import Listener

log = logging.getLogger(__name__)

#: How often a leader without LISTEN looks for new work.
POLL_INTERVAL_S = 0.25
#: Longest wait before asking for the lease again after a database error: a fleet must not stay
#: without a leader for long once PostgreSQL is back.
MAX_RETRY_DELAY_S = 2.0
#: Waits before asking for the lease again after a database error: 0.5 s, doubling, at most the above.
RETRY = Backoff(first_s=0.5, max_s=MAX_RETRY_DELAY_S)


@dataclass
class LeaderState:
    """What a test, a metric or the console can read about this process's leader loop."""

    is_leader: bool = False
    elections: int = 0
    step_downs: int = 0
    duty_failures: int = 0


class LeaderLoop:
    """Runs ``duties`` in this process whenever it holds ``lease``."""

    def __init__(self, lease: Lease, duties: Sequence[Duty], *,
                 borrow: Callable[[], contextlib.AbstractContextManager[psycopg.Connection]],
                 open_leader_connection: Callable[[], psycopg.Connection], listen: bool,
                 standby_interval_s: float = 2.0) -> None:
        """``borrow`` lends a connection for standby checks; ``open_leader_connection`` opens the leader's own."""
        self.lease = lease
        self.duties = list(duties)
        self.borrow = borrow
        self.open_leader_connection = open_leader_connection
        self.listen = listen
        self.standby_interval_s = standby_interval_s
        self.state = LeaderState()

    def duty(self, name: str) -> Duty | None:
        """The duty called ``name``, if this loop runs one."""
        return next((d for d in self.duties if d.name == name), None)

    def run(self, stop: threading.Event, retiring: threading.Event | None = None) -> None:
        """Stand by and lead until ``stop`` is set; never raises.

        Once ``retiring`` is set (the process is draining to exit) it no longer takes the lease: a
        standby that won it in its last seconds would step down at once, one more leader change.
        """
        delays = RETRY.delays()
        while not stop.is_set():
            if retiring is not None and retiring.is_set():
                stop.wait(self.standby_interval_s)
                continue
            try:
                with self.borrow() as conn:
                    acquired = self.lease.try_acquire(conn)
                if acquired:
                    self._lead(stop)
                    delays = RETRY.delays()
                    continue
                stop.wait(self.standby_interval_s)
                delays = RETRY.delays()
            except Exception as exc:
                delay = next(delays)
                log.warning("leader loop: database unavailable; retrying",
                            extra={"error": first_line(exc), "retry_in_s": delay})
                stop.wait(delay)
        self.state.is_leader = False

    def _lead(self, stop: threading.Event) -> None:
        conn = self.open_leader_connection()
        try:
            pid = conn.info.backend_pid if self.listen else None
            if not self.lease.try_acquire(conn, backend_pid=pid):
                return
            self._listener(conn).start()
            self.state.is_leader = True
            self.state.elections += 1
            log.info("leading the fleet", extra={"epoch": self.lease.epoch, "listen": self.listen})
            self._serve(conn, stop)
        finally:
            self._step_down(conn, graceful=stop.is_set())

    def _serve(self, conn: psycopg.Connection, stop: threading.Event) -> None:
        served = threading.Event()
        keeper = threading.Thread(target=self._keep_lease, args=(stop, served), name="stayler-lease", daemon=True)
        keeper.start()
        try:
            self._run_duties(conn, stop)
        finally:
            served.set()
            keeper.join(timeout=self.lease.ttl_s)

    def _keep_lease(self, stop: threading.Event, served: threading.Event) -> None:
        """Renew the lease every third of its length until leading ends; independent of the duties."""
        renew_every = self.lease.ttl_s / 3
        while not served.wait(renew_every) and not stop.is_set():
            try:
                with self.borrow() as conn:
                    if not self.lease.renew(conn):
                        return  # taken: the duties loop sees epoch None and steps down
            except Exception as exc:
                # One failed renewal is not fatal: the next may succeed within the lease. When none
                # does, the local deadline passes and the duties loop steps down.
                log.warning("could not renew the leader lease; trying again", extra={"error": first_line(exc)})

    def _run_duties(self, conn: psycopg.Connection, stop: threading.Event) -> None:
        now = time.monotonic()
        due = {d.name: now + d.initial_delay_s for d in self.duties}
        while not stop.is_set():
            if not self.lease.valid():
                log.warning("leader lease not renewed in time (frozen, cut off or taken); stepping down")
                return
            now = time.monotonic()
            for duty in self.duties:
                if now >= due[duty.name] and self.lease.valid():
                    self._run_duty(conn, duty, due, now)
            wake = min([*due.values(), now + min(1.0, self.lease.ttl_s / 3)])
            if self._wait(conn, stop, max(wake - time.monotonic(), 0.0)):
                for duty in self.duties:
                    if duty.on_notify:
                        due[duty.name] = 0.0

    def _run_duty(self, conn: psycopg.Connection, duty: Duty, due: dict[str, float], now: float) -> None:
        try:
            work = duty.run_once(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise  # the connection is gone: step down, then stand by again
        except Exception:
            self.state.duty_failures += 1
            log.exception("a leader duty failed; it runs again at its next interval", extra={"duty": duty.name})
            work = 0
        due[duty.name] = now + duty.interval_s
        if duty.wake_in_s is not None:
            due[duty.name] = min(due[duty.name], now + duty.wake_in_s)
        if work:
            for name in duty.wakes:
                if name in due:
                    due[name] = now

    def _listener(self, conn: psycopg.Connection) -> Listener:
        """The leader's connection as a listener on the jobs channel (polling when behind a pooler)."""
        return Listener(conn, (channels.JOBS,), listening=self.listen, poll_s=POLL_INTERVAL_S)

    def _wait(self, conn: psycopg.Connection, stop: threading.Event, timeout: float) -> bool:
        """Sleep until ``timeout`` passes or (with LISTEN) a job is queued; True when notified or polling."""
        return self._listener(conn).wait(timeout, sleep=stop.wait) != []

    def _step_down(self, conn: psycopg.Connection, *, graceful: bool) -> None:
        if self.state.is_leader:
            self.state.step_downs += 1
        self.state.is_leader = False
        for duty in self.duties:
            duty.on_step_down()
        if graceful:
            with contextlib.suppress(Exception):
                self.lease.release(conn)
        self.lease.epoch = None
        with contextlib.suppress(Exception):
            conn.close()


def start_in_thread(loop: LeaderLoop, stop: threading.Event,
                    retiring: threading.Event | None = None) -> threading.Thread:
    """Run the leader loop in a daemon thread of this process (no new lease once ``retiring`` is set)."""
    thread = threading.Thread(target=loop.run, args=(stop, retiring), name="stayler-leader", daemon=True)
    thread.start()
    return thread

