"""Building a process's leader loop from the settings: the lease, the duties, the connections."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence

import dramatiq
import psycopg

from leader.config import LeaderSettings
from leader.duties import Duty
from leader.duties.clean import CleanDuty
from leader.duties.dispatch import DispatchDuty
from leader.duties.expiry import ExpiryDuty
from leader.duties.gauges import GaugesDuty
from leader.duties.orphans import OrphansDuty
from leader.duties.rescue import RescueDuty
from leader.duties.retention import RetentionDuty
from leader.fairness import FairGauges, FairnessDuty
from leader.lease import Lease
from leader.loop import LeaderLoop
from leader.queue_gauges import QueueGauges
from schema.connections import connect
from schema.listen import listen_target
from storage import Storage


def leader_holder() -> str:
    """A fleet-unique name for this process's bid for the lease."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def max_waiting(settings: LeaderSettings) -> int:
    """How many claim messages may wait in Redis at once."""
    return max(8, 4 * settings.worker_processes * settings.worker_threads)


def default_duties(settings: LeaderSettings, broker: dramatiq.Broker, storage: Storage, *,
                   gauges: QueueGauges | None = None, on_rescue: Callable[[str], None] | None = None
                   ) -> list[Duty]:
    """Dispatch, rescue, clean, retention, orphans, expiry, fairness (and the gauges when metrics are on)."""
    duties: list[Duty] = [
        DispatchDuty(broker, settings.queue_name, batch_size=settings.claim_batch_size,
                     max_waiting=max_waiting(settings), interval_s=settings.sweep_interval_s),
        RescueDuty(rescue_after_s=settings.rescue_after_s, interval_s=settings.rescue_interval_s,
                   backoff_base_s=settings.backoff_base_s, backoff_max_s=settings.backoff_max_s, on_rescue=on_rescue),
        CleanDuty(storage, interval_s=settings.rescue_interval_s),
        RetentionDuty(settings.retention),
        OrphansDuty(storage, interval_s=settings.orphan_interval_s),
        ExpiryDuty(settings.retention),
    ]
    if gauges is not None:
        duties.append(GaugesDuty(gauges))
    duties.append(FairnessDuty(settings.fair_share, FairGauges() if gauges is not None else None))
    return duties


def build_leader(settings: LeaderSettings, duties: Sequence[Duty], *,
                 borrow: Callable[[], contextlib.AbstractContextManager[psycopg.Connection]] | None = None,
                 holder: str | None = None) -> LeaderLoop:
    """A leader loop over ``duties``; standby checks use ``borrow`` (else a connection of its own)."""
    target = listen_target(settings)
    if borrow is None:
        borrow = _StandbyConnection(settings).borrow
    return LeaderLoop(
        Lease(holder or leader_holder(), settings.leader_lease_s), duties, borrow=borrow,
        open_leader_connection=lambda: connect(target.url, settings, "leader", pooled=not target.direct),
        listen=target.direct,
        standby_interval_s=min(2.0, settings.leader_lease_s / 3),
    )


class _StandbyConnection:
    """One kept connection for a standalone leader's standby checks (no reconnect per check)."""

    def __init__(self, settings: LeaderSettings) -> None:
        self.settings = settings
        self.conn: psycopg.Connection | None = None

    @contextlib.contextmanager
    def borrow(self) -> Iterator[psycopg.Connection]:
        assert self.settings.database_url is not None
        if self.conn is None or self.conn.closed:
            self.conn = connect(self.settings.database_url, self.settings, "leader")
        try:
            yield self.conn
        except Exception:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None
            raise
