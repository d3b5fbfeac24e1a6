"""The worker's one door to the queue: the connections, the timeouts and every queue statement.

Everything the network can do to a statement is decided here, once:

- **Lock conflicts** (deadlock, serialization failure) roll the transaction back, so the statement
  is simply run again; they never charge an attempt.
- **A connection that breaks** (restart, failover, a pooler restart, a cut cable) is dropped from
  the pool and the statement retried on a fresh one, for up to ``retry_for_s``, when running it
  twice is harmless: renewals, failures and releases are fenced on the attempt.
- **An ambiguous claim** (the connection broke after the claim was sent): the jobs may be
  ``processing`` under this claim's token with nobody working on them, so the token is released,
  now or, if the database is away, by the next heartbeat.
- **An ambiguous completion** (the connection broke after ``jobs_complete`` was sent; the server
  may have committed): the jobs are read back. A job completed under this attempt with this file
  is ``completed``; one still held is completed again; anything else is ``fenced``. Only when even
  the read-back fails is the outcome ``unknown``, and then no file may be deleted.

Nothing outside this module runs queue SQL (an import-linter contract keeps ``schema.queries`` and
the pool out of the other worker modules).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, Protocol, TypeVar

import psycopg
from psycopg.rows import class_row
from psycopg_pool import ConnectionPool, PoolTimeout

from core.backoff import LOCK_CONFLICT, RECONNECT
from core.logs import first_line
from schema.connections import ConnectionSettings, connection_kwargs
from schema.deadline import WATCHDOG
from schema.queries import Q
from schema.statuses import JobStatus
from worker.config import WorkerSettings
from worker.errors import Failure
from worker.jobs import Claim, Completion

log = logging.getLogger(__name__)

T = TypeVar("T")
CompletionOutcome = Literal["completed", "fenced", "unknown"]
#: SQLSTATEs after which the transaction was rolled back and can simply run again.
CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})


class QueueUnavailable(Exception):  # noqa: N818 (a state, not a programming error)
    """The database could not be reached within the retry budget."""

    error_type = "database"
    transient = True


def is_conflict(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the transaction was rolled back; run it again."""
    return isinstance(exc, psycopg.Error) and getattr(exc, "sqlstate", None) in CONFLICT_SQLSTATES


def is_connection_error(exc: BaseException) -> bool:
    """The connection or the server went away (not a refusal of the statement itself)."""
    if is_conflict(exc):
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | PoolTimeout)


class ConnectionSource(Protocol):
    """Where the door's connections come from: a pool in a worker, one connection in a test."""

    def borrow(self) -> contextlib.AbstractContextManager[psycopg.Connection]:
        """A connection for one statement."""
        ...

    def discard_broken(self) -> None:
        """Forget connections that may have died with the server."""
        ...

    def close(self) -> None:
        """Close every connection."""
        ...


class PoolSource:
    """A small psycopg pool: ``size`` connections per process, opened at boot and kept.

    Opening the whole budget at once (not on demand) keeps an idle fleet from opening a connection
    whenever the heartbeat, the lease keeper and the standby check happen to borrow at the same moment.
    """

    def __init__(self, url: str, settings: ConnectionSettings, *, size: int = 2, role: str = "worker") -> None:
        """Open the pool in the background (a database that is down does not block the boot)."""
        self.pool = ConnectionPool(url, min_size=size, max_size=size, kwargs=connection_kwargs(settings, role),
                                   open=False, name=f"stayler-{role}", timeout=settings.db_timeout_s,
                                   reconnect_timeout=0)
        self._checking = threading.Lock()
        self.pool.open(wait=False)

    def borrow(self) -> contextlib.AbstractContextManager[psycopg.Connection]:
        """A pooled connection for one statement."""
        return self.pool.connection()

    def discard_broken(self) -> None:
        """Check the idle connections in the background; broken ones are replaced.

        In the background because a check through a black hole waits for its statement deadline:
        the caller's retry must not wait for it too (a connection it borrows meanwhile that is dead
        fails fast, or at its own deadline).
        """
        if not self._checking.acquire(blocking=False):
            return  # a check is under way
        threading.Thread(target=self._check, name="stayler-pool-check", daemon=True).start()

    def _check(self) -> None:
        try:
            with contextlib.suppress(Exception):
                self.pool.check()
        finally:
            self._checking.release()

    def close(self) -> None:
        """Close the pool."""
        self.pool.close(timeout=5)


class FixedSource:
    """One given connection (tests, benchmarks, the CLI)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        """Use ``conn`` for every statement."""
        self.conn = conn

    @contextlib.contextmanager
    def borrow(self) -> Iterator[psycopg.Connection]:
        """The one connection."""
        yield self.conn

    def discard_broken(self) -> None:
        """Nothing to discard: the caller owns the connection."""

    def close(self) -> None:
        """The caller owns the connection."""


class JobQueue:
    """Claim, renew, complete, fail and release jobs; register and stop the worker."""

    def __init__(self, source: ConnectionSource, worker_id: str, *, backoff_base_s: float = 1.0,
                 backoff_max_s: float = 300.0, retry_for_s: float = 15.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """A door over ``source`` for the worker ``worker_id``."""
        self.source = source
        self.worker_id = worker_id
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.retry_for_s = retry_for_s
        self._sleep = sleep
        self._lock = threading.Lock()
        self._unreleased_claims: list[uuid.UUID] = []
        self._unreleased_holds: dict[uuid.UUID, int] = {}

    @classmethod
    def from_settings(cls, settings: WorkerSettings, worker_id: str, *, size: int = 2) -> JobQueue:
        """A door with its own pool of at most ``size`` connections."""
        if not settings.database_url:
            raise RuntimeError("DATABASE_URL is not set")
        return cls(PoolSource(settings.database_url, settings, size=size), worker_id,
                   backoff_base_s=settings.backoff_base_s, backoff_max_s=settings.backoff_max_s,
                   retry_for_s=settings.db_timeout_s)

    @classmethod
    def on_connection(cls, conn: psycopg.Connection, worker_id: str, **kwargs: Any) -> JobQueue:
        """A door over one connection the caller owns."""
        return cls(FixedSource(conn), worker_id, **kwargs)

    def borrow(self) -> contextlib.AbstractContextManager[psycopg.Connection]:
        """A connection for a short statement of another service of the process (the leader's standby)."""
        return self.source.borrow()

    def close(self) -> None:
        """Close the door's connections."""
        self.source.close()


    def _once(self, work: Callable[[psycopg.Connection], T], *, budget_s: float | None = None) -> T:
        """Run ``work`` on one connection, again on lock conflicts (rolled back, so harmless).

        ``budget_s`` bounds this run as a whole (the caller's retry budget left): the connection is
        cut when it passes, on top of each statement's own deadline (``schema.deadline``).
        """
        for attempt in range(8):
            try:
                with self.source.borrow() as conn, _within(conn, budget_s):
                    return work(conn)
            except psycopg.Error as exc:
                if not is_conflict(exc) or attempt == 7:
                    raise
                log.info("lock conflict; running the statement again", extra={"sqlstate": exc.sqlstate})
                self._sleep(LOCK_CONFLICT.delay(attempt))
        raise AssertionError("unreachable")

    def _retrying(self, what: str, work: Callable[[psycopg.Connection], T]) -> T:
        """Run a statement that is harmless to repeat, across broken connections, within the budget."""
        deadline = time.monotonic() + self.retry_for_s
        delays = RECONNECT.delays()
        while True:
            try:
                return self._once(work, budget_s=max(deadline - time.monotonic(), 0.1))
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                self.source.discard_broken()
                delay = next(delays)
                if time.monotonic() + delay > deadline:
                    raise QueueUnavailable(f"{what}: database unavailable: {first_line(exc)}") from exc
                self._sleep(delay)


    def claim(self, limit: int, *, allow_suspect: bool = True) -> list[Claim]:
        """Claim up to ``limit`` ready jobs; raises ``QueueUnavailable`` when the database is away.

        ``allow_suspect``: the caller holds nothing, so it may take a suspect job (which then comes
        alone). A process that holds jobs must pass False.

        When the connection breaks after the claim was sent, the claim may have committed with no
        one to work on its jobs: its token is released (now if possible, else by ``flush``).
        """
        token = uuid.uuid4()

        def work(conn: psycopg.Connection) -> list[Claim]:
            with conn.cursor(row_factory=class_row(Claim)) as cur:
                return cur.execute(Q.job_claim_batch, {"worker_id": self.worker_id, "limit": limit,
                                                       "claim_token": token,
                                                       "allow_suspect": allow_suspect}).fetchall()

        try:
            return self._once(work)
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            self.source.discard_broken()
            with self._lock:
                self._unreleased_claims.append(token)
            with contextlib.suppress(QueueUnavailable):
                self.flush()
            raise QueueUnavailable(f"claiming jobs: database unavailable: {first_line(exc)}") from exc

    def flush(self) -> int:
        """Release what could not be released when the database was away; returns how many were released.

        That is the jobs of claims whose replies were lost, and the jobs handed back (``hand_back``)
        during the outage.
        """
        with self._lock:
            tokens = list(self._unreleased_claims)
            holds = list(self._unreleased_holds.items())
        released = 0
        if holds:
            done = self.release(holds)
            released += len(done)
            with self._lock:
                for job_id, attempt in holds:
                    if self._unreleased_holds.get(job_id) == attempt:
                        del self._unreleased_holds[job_id]
            log.warning("handed back jobs held during a database outage, uncharged", extra={"released": len(done)})
        for token in tokens:
            rows = self._retrying("releasing an unanswered claim", _release_claim_work(token))
            released += len(rows)
            with self._lock:  # another thread's flush may have released it too (harmless): remove once
                if token in self._unreleased_claims:
                    self._unreleased_claims.remove(token)
            if rows:
                log.warning("released the jobs of a claim whose reply was lost", extra={"released": len(rows)})
        return released

    def renew(self, held: Sequence[tuple[uuid.UUID, int]]) -> set[uuid.UUID]:
        """Renew held claims; returns the job ids still held (the others were cancelled or rescued)."""
        if not held:
            return set()
        params = {"job_ids": [job_id for job_id, _ in held], "attempts": [attempt for _, attempt in held]}
        rows = self._retrying("renewing claims", lambda conn: conn.execute(Q.jobs_heartbeat, params).fetchall())
        return {row[0] for row in rows}

    def release(self, held: Sequence[tuple[uuid.UUID, int]]) -> list[uuid.UUID]:
        """Hand claims back without penalty (graceful shutdown); returns the job ids released."""
        if not held:
            return []
        params = {"job_ids": [job_id for job_id, _ in held], "attempts": [attempt for _, attempt in held]}
        rows = self._retrying("releasing claims", lambda conn: conn.execute(Q.jobs_release, params).fetchall())
        return [row[0] for row in rows]


    def hand_back(self, held: Sequence[tuple[uuid.UUID, int]], *, defer: bool = False) -> bool:
        """Release claims uncharged (a shared service is down); True when done now.

        When the database itself is away (or ``defer``: the caller just found it away), the claims
        are remembered and released by the next ``flush`` (the heartbeat's), whichever comes first
        of that and the rescuer (fenced on the attempt, so only one of them moves each job).
        """
        if not held:
            return True
        if not defer:
            try:
                self.release(held)
                return True
            except QueueUnavailable:
                pass
        with self._lock:
            self._unreleased_holds.update(dict(held))
        return False

    def ping(self) -> None:
        """One trivial statement: raises when the database cannot be reached (the health probe)."""
        self._once(lambda conn: conn.execute(Q.db_ping).fetchone())

    def complete(self, completions: Sequence[Completion]) -> dict[uuid.UUID, CompletionOutcome]:
        """Record results in one fenced transaction; per job: completed, fenced out, or unknown."""
        if not completions:
            return {}
        try:
            return self._once(lambda conn: self._complete_on(conn, completions))
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            log.warning("the connection broke while recording results; reading the outcome back",
                        extra={"error": first_line(exc), "jobs": len(completions)})
            self.source.discard_broken()
            return self._resolve(completions)

    def _complete_on(self, conn: psycopg.Connection, completions: Sequence[Completion]
                     ) -> dict[uuid.UUID, CompletionOutcome]:
        # With a subject to note, both statements share one transaction (else the one statement commits).
        noting = any(c.subject for c in completions)
        with conn.transaction() if noting else contextlib.nullcontext():
            rows = conn.execute(Q.jobs_complete, {"items": completion_items(completions)}).fetchall()
            outcome: dict[uuid.UUID, CompletionOutcome] = {
                row[0]: ("completed" if row[1] is not None else "fenced") for row in rows}
            # Who was dressed goes into the result image's metadata with the result, or not at all.
            notes = [{"job_id": str(c.claim.job_id), "attempt": c.claim.attempt, "subject": c.subject}
                     for c in completions if c.subject and outcome.get(c.claim.job_id) == JobStatus.COMPLETED]
            if notes:
                conn.execute(Q.jobs_note_subject, {"items": json.dumps(notes)})
        return outcome

    def _resolve(self, completions: Sequence[Completion]) -> dict[uuid.UUID, CompletionOutcome]:
        """Settle an ambiguous completion by reading the jobs back (and completing those still held)."""
        outcome: dict[uuid.UUID, CompletionOutcome] = {c.claim.job_id: "unknown" for c in completions}
        pending = list(completions)
        deadline = time.monotonic() + self.retry_for_s
        delays = RECONNECT.delays()
        rounds = 0
        while pending:
            try:
                params = {"job_ids": [c.claim.job_id for c in pending]}
                rows = self._once(lambda conn, p=params: conn.execute(Q.job_get_outcomes, p).fetchall())  # type: ignore[misc]
                state = {row[0]: (row[1], row[2], row[3]) for row in rows}
                again: list[Completion] = []
                for c in pending:
                    status, attempt, result_key = state.get(c.claim.job_id, (None, None, None))
                    if status == JobStatus.COMPLETED and attempt == c.claim.attempt and result_key == c.file_path:
                        outcome[c.claim.job_id] = "completed"
                    elif status == JobStatus.PROCESSING and attempt == c.claim.attempt:
                        again.append(c)
                    else:
                        outcome[c.claim.job_id] = "fenced"
                pending = []
                if again:
                    retried = self._once(lambda conn, a=again: self._complete_on(conn, a))  # type: ignore[misc]
                    outcome.update(retried)
                    # Fenced now may mean the first, ambiguous statement committed while we waited
                    # for its row lock: read those back once more (bounded by the rounds below).
                    rounds += 1
                    if rounds < 3:
                        pending = [c for c in again if retried.get(c.claim.job_id) == "fenced"]
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                self.source.discard_broken()
                delay = next(delays)
                if time.monotonic() + delay > deadline:
                    log.error("could not learn whether results were recorded; keeping their files",
                              extra={"error": first_line(exc)})
                    break
                self._sleep(delay)
        return outcome

    def fail(self, claim: Claim, failure: Failure, *, processing_time_ms: int | None,
             ai_model_version: str | None) -> str | None:
        """Record a failed attempt: 'queued' (retry with backoff), 'failed', or None if no longer held."""
        params = {
            "job_id": claim.job_id, "attempt": claim.attempt, "error_type": failure.error_type,
            "error_message": failure.message, "transient": failure.transient,
            "backoff_base_s": self.backoff_base_s, "backoff_max_s": self.backoff_max_s,
            "processing_time_ms": processing_time_ms, "ai_model_version": ai_model_version,
        }
        row = self._retrying("recording a failure", lambda conn: conn.execute(Q.job_fail, params).fetchone())
        return row[0] if row else None


    def register(self, *, hostname: str, pid: int, concurrency: int, model_name: str, model_version: str) -> None:
        """Write this process to the worker registry."""
        params = {"id": self.worker_id, "hostname": hostname, "pid": pid, "concurrency": concurrency,
                  "model_name": model_name, "model_version": model_version}
        self._retrying("registering the worker", lambda conn: conn.execute(Q.worker_register, params))

    def renew_worker(self, services_down: str | None = None) -> bool:
        """Mark this process alive (clearing a stop the rescuer marked while it was silent).

        ``services_down`` names the shared services this process finds down (the console shows it).
        False when its registry row is gone (pruned while the process was frozen): register again.
        """
        params = {"id": self.worker_id, "services_down": services_down}
        row = self._retrying("renewing the worker", lambda conn: conn.execute(Q.workers_renew, params).fetchone())
        return bool(row and row[0])

    def stop_worker(self) -> None:
        """Mark this process stopped."""
        self._retrying("stopping the worker", lambda conn: conn.execute(Q.worker_stop, {"id": self.worker_id}))


def _within(conn: psycopg.Connection, budget_s: float | None) -> contextlib.AbstractContextManager[None]:
    return WATCHDOG.guard(conn, budget_s) if budget_s is not None else contextlib.nullcontext()


def completion_items(completions: Sequence[Completion]) -> str:
    """The JSON array ``jobs_complete()`` takes."""
    return json.dumps([{
        "job_id": str(c.claim.job_id), "attempt": c.claim.attempt, "file_path": c.file_path,
        "file_name": c.file_name, "original_url": c.original_url, "thumbnail_url": c.thumbnail_url,
        "file_size": c.file_size, "mime_type": c.mime_type, "width": c.width, "height": c.height,
        "processing_time_ms": c.processing_time_ms, "ai_model_version": c.ai_model_version,
    } for c in completions])


def _release_claim_work(token: uuid.UUID) -> Callable[[psycopg.Connection], list[Any]]:
    def work(conn: psycopg.Connection) -> list[Any]:
        return conn.execute(Q.jobs_release_claim, {"claim_token": token}).fetchall()

    return work

