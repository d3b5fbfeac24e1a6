"""The leader loop hears the jobs channel when its connection is direct, and polls when it is pooled."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import psycopg

from core.settings import Settings
from leader.duties import Duty
from leader.lease import Lease
from leader.loop import LeaderLoop
from schema import channels
from schema.connections import connect

SETTINGS = Settings(db_timeout_s=3)
PATIENCE_S = 20.0


class WokenDuty(Duty):
    """A duty due only when woken (its interval is far away); counts its rounds."""

    name = "woken"
    interval_s = 3600.0
    on_notify = True

    def __init__(self, rounds: int) -> None:
        self.runs = 0
        self.rounds = rounds
        self.done = threading.Event()

    def run_once(self, conn: psycopg.Connection) -> int:
        self.runs += 1
        if self.runs >= self.rounds:
            self.done.set()
        return 0


def lead(db_url: str, duty: WokenDuty, *, listen: bool, notify_every_s: float | None = None) -> list[str]:
    """Run a loop until ``duty`` has run its rounds; returns the leader connection's LISTEN channels."""
    standby = connect(db_url, SETTINGS, "worker")
    opened: list[psycopg.Connection] = []

    @contextlib.contextmanager
    def borrow() -> Iterator[psycopg.Connection]:
        yield standby

    def open_leader() -> psycopg.Connection:
        opened.append(connect(db_url, SETTINGS, "leader"))
        return opened[-1]

    loop = LeaderLoop(Lease("me", 3.0), [duty], borrow=borrow,
                      open_leader_connection=open_leader, listen=listen, standby_interval_s=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    listening: list[str] = []
    try:
        with psycopg.connect(db_url, autocommit=True) as other:
            for _ in range(int(PATIENCE_S / 0.2)):
                if duty.done.wait(0.2):
                    break
                if notify_every_s is not None and loop.state.is_leader:
                    other.execute("SELECT pg_notify(%s, '')", (channels.JOBS,))
            pid = opened[0].info.backend_pid
            listening = [row[0] for row in other.execute(
                "SELECT query FROM pg_stat_activity WHERE pid = %s AND query ILIKE 'LISTEN%%'", (pid,))]
    finally:
        stop.set()
        thread.join(timeout=10)
        standby.close()
    assert duty.done.is_set(), duty.runs
    return listening


def test_a_direct_leader_listens_and_each_notification_wakes_the_duty(db_url: str) -> None:
    duty = WokenDuty(rounds=4)
    listening = lead(db_url, duty, listen=True, notify_every_s=0.2)
    assert len(listening) == 1 and channels.JOBS in listening[0] and duty.runs >= 4


def test_a_pooled_leader_does_not_listen_and_polls(db_url: str) -> None:
    duty = WokenDuty(rounds=4)
    listening = lead(db_url, duty, listen=False)  # no notification is ever sent: polling alone wakes it
    assert listening == [] and duty.runs >= 4
