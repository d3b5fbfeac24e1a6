"""The leader lease and the leader loop against a real PostgreSQL."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import psycopg

from core.settings import Settings
from leader.duties import Duty as BaseDuty
from leader.lease import Lease
from leader.loop import LeaderLoop
from schema.connections import connect

SETTINGS = Settings(db_timeout_s=3)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_holder_at_a_time_and_a_standby_takes_a_lapsed_lease(db: psycopg.Connection) -> None:
    a, b = Lease("a", ttl_s=0.5), Lease("b", ttl_s=0.5)
    assert a.try_acquire(db)
    assert not b.try_acquire(db)
    assert a.renew(db)
    time.sleep(0.7)
    assert b.try_acquire(db)
    assert b.epoch == (a.epoch or 0) + 1
    assert not a.renew(db)  # lapsed and taken: a must stop leading
    assert not a.valid()


def test_taking_a_lapsed_lease_ends_the_previous_holders_backend(db_url: str, db: psycopg.Connection) -> None:
    with connect(db_url, SETTINGS, "leader") as old:
        frozen = Lease("frozen", ttl_s=0.3)
        assert frozen.try_acquire(old, backend_pid=old.info.backend_pid)
        time.sleep(0.5)
        assert Lease("standby", ttl_s=5).try_acquire(db)
        time.sleep(0.2)
        ended = db.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (old.info.backend_pid,)).fetchone()
        assert ended == (0,)


def test_a_holder_that_did_not_renew_in_time_stops_trusting_its_lease(db: psycopg.Connection) -> None:
    clock = FakeClock()
    lease = Lease("a", ttl_s=10, clock=clock)
    assert lease.try_acquire(db)
    clock.now += 7
    assert lease.valid()
    clock.now += 2  # past 80 % of the lease without a renewal (a frozen process waking up)
    assert not lease.valid()


class Duty(BaseDuty):
    def __init__(self, name: str, interval_s: float, *, fails: bool = False, initial_delay_s: float = 0.0) -> None:
        self.name = name
        self.interval_s = interval_s
        self.fails = fails
        self.initial_delay_s = initial_delay_s
        self.runs: list[float] = []

    def run_once(self, conn: psycopg.Connection) -> int:
        self.runs.append(time.monotonic())
        if self.fails:
            raise RuntimeError("this duty always fails")
        return 0


def make_loop(db_url: str, duties: list[Duty], *, holder: str = "me", ttl_s: float = 3.0
              ) -> tuple[LeaderLoop, list[int]]:
    borrowed: list[int] = []
    standby = connect(db_url, SETTINGS, "worker")

    @contextlib.contextmanager
    def borrow() -> Iterator[psycopg.Connection]:
        borrowed.append(1)
        yield standby

    loop = LeaderLoop(Lease(holder, ttl_s), duties, borrow=borrow,
                      open_leader_connection=lambda: connect(db_url, SETTINGS, "leader"), listen=True,
                      standby_interval_s=0.1)
    return loop, borrowed


def run_for(loop: LeaderLoop, seconds: float) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_failing_duty_never_stops_the_others(db_url: str) -> None:
    # Regression (issue 10, defect 3): a failing rescue round ended the leader loop before it dispatched.
    failing, dispatch = Duty("rescue", 0.1, fails=True), Duty("dispatch", 0.1)
    loop, _ = make_loop(db_url, [failing, dispatch])
    run_for(loop, 1.0)
    assert len(failing.runs) >= 3 and len(dispatch.runs) >= 3
    assert loop.state.elections == 1 and loop.state.duty_failures >= 3


def test_a_new_leader_waits_before_its_first_rescue(db_url: str) -> None:
    # Regression (issue 10, defect 8): a leader elected right after an outage rescued at once and
    # charged live workers whose heartbeats had not caught up.
    rescue = Duty("rescue", 0.1, initial_delay_s=1.0)
    loop, _ = make_loop(db_url, [rescue])
    started = time.monotonic()
    run_for(loop, 1.6)
    assert rescue.runs and rescue.runs[0] - started >= 1.0


def test_a_leader_whose_lease_was_taken_steps_down(db_url: str, db: psycopg.Connection) -> None:
    work = Duty("dispatch", 0.05)
    loop, _ = make_loop(db_url, [work], ttl_s=0.6)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not loop.state.is_leader and time.monotonic() < deadline:
            time.sleep(0.02)
        assert loop.state.is_leader
        db.execute("UPDATE leader_lease SET holder = 'someone else', epoch = epoch + 1, "
                   "expires_at = now() + interval '1 hour'")
        deadline = time.monotonic() + 5
        while loop.state.is_leader and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not loop.state.is_leader and loop.state.step_downs == 1
        runs = len(work.runs)
        time.sleep(0.3)
        assert len(work.runs) == runs  # a standby does no duty
    finally:
        stop.set()
        thread.join(timeout=10)


def test_a_standby_borrows_its_connection_and_opens_none(db_url: str, db: psycopg.Connection) -> None:
    # Regression (issue 10, defect 13): each standby opened a new connection every poll.
    db.execute("UPDATE leader_lease SET holder = 'another host', expires_at = now() + interval '1 hour'")
    opened: list[int] = []
    loop, borrowed = make_loop(db_url, [Duty("dispatch", 1)])
    original = loop.open_leader_connection

    def counted() -> psycopg.Connection:
        opened.append(1)
        return original()

    loop.open_leader_connection = counted
    run_for(loop, 0.8)
    assert len(borrowed) >= 3 and opened == []
    assert loop.state.elections == 0
