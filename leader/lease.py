"""The leader's lease: a row in ``leader_lease`` that the holder renews and a standby takes once it lapses.

Expiry is decided by the database's clock, so hosts' clocks never matter. The holder also keeps
a local deadline on its monotonic clock (``valid``): it stops leading when it has not renewed
within the lease, even before it learns that someone else took over. A process frozen by
SIGSTOP or a stalled VM wakes up past that deadline and steps down at once; its connection was
ended by the new holder anyway (``leader_lease_acquire`` terminates the previous backend).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import psycopg

from schema.queries import Q

log = logging.getLogger(__name__)

#: The lease the fleet's leader holds.
FLEET = "fleet"
#: Fraction of the lease after which the holder no longer trusts it without a renewal.
SAFETY = 0.8


class Lease:
    """One holder's view of a named lease."""

    def __init__(self, holder: str, ttl_s: float, *, name: str = FLEET,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``holder`` names this process in ``leader_lease.holder`` (host, pid, random suffix)."""
        self.holder = holder
        self.ttl_s = ttl_s
        self.name = name
        self.clock = clock
        self.epoch: int | None = None
        self._valid_until = 0.0

    def try_acquire(self, conn: psycopg.Connection, backend_pid: int | None = None) -> bool:
        """Take the lease if it is free or lapsed (or renew it if held); True when held now."""
        started = self.clock()
        row = conn.execute(Q.leader_lease_acquire, {"name": self.name, "holder": self.holder, "ttl_s": self.ttl_s,
                                                    "backend_pid": backend_pid}).fetchone()
        if row is None or not row[0]:
            self.epoch = None
            return False
        acquired, epoch, _holder, _expires_in_s, terminated_pid = row
        if self.epoch != epoch:
            log.info("leader lease acquired", extra={"epoch": epoch, "terminated_pid": terminated_pid})
        self.epoch = int(epoch)
        self._valid_until = started + self.ttl_s * SAFETY
        return bool(acquired)

    def renew(self, conn: psycopg.Connection) -> bool:
        """Extend the lease; False when it was lost (lapsed and taken): stop leading at once."""
        if self.epoch is None:
            return False
        started = self.clock()
        row = conn.execute(Q.leader_lease_renew, {"name": self.name, "holder": self.holder, "epoch": self.epoch,
                                                  "ttl_s": self.ttl_s}).fetchone()
        if row is None or row[0] is None:
            log.warning("leader lease lost", extra={"epoch": self.epoch})
            self.epoch = None
            return False
        self._valid_until = started + self.ttl_s * SAFETY
        return True

    def valid(self) -> bool:
        """Whether this holder may still act as the leader (monotonic deadline not passed)."""
        return self.epoch is not None and self.clock() < self._valid_until

    def release(self, conn: psycopg.Connection) -> None:
        """Give the lease up so a standby takes over at once (graceful shutdown)."""
        if self.epoch is not None:
            conn.execute(Q.leader_lease_release, {"name": self.name, "holder": self.holder, "epoch": self.epoch})
        self.epoch = None
