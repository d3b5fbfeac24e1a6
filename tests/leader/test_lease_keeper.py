"""The lease is renewed by a thread of its own: a duty round longer than the lease never lets it lapse."""

from __future__ import annotations

import threading
import time

import psycopg

from tests.leader.test_lease_and_loop import Duty, make_loop


class SlowDuty(Duty):
    """A duty whose first round takes ``seconds`` (a mass cleanup against a slow store)."""

    def __init__(self, seconds: float) -> None:
        super().__init__("clean", 0.1)
        self.seconds = seconds
        self.rounds = 0
        self.slow_round_done = threading.Event()

    def run_once(self, conn: psycopg.Connection) -> int:
        self.rounds += 1
        if self.rounds == 1:
            time.sleep(self.seconds)
            self.slow_round_done.set()
        return 0


def test_a_duty_round_longer_than_the_lease_does_not_change_the_leader(db_url: str, db: psycopg.Connection) -> None:
    # Regression (issue 26, defect 2): renewal shared the thread with the duties; a 7 s clean round
    # let the 5 s lease lapse and leadership changed mid-round.
    ttl_s = 1.2
    slow = SlowDuty(seconds=ttl_s * 2.5)
    leader, _ = make_loop(db_url, [slow], holder="leader", ttl_s=ttl_s)
    standby, _ = make_loop(db_url, [SlowDuty(0)], holder="standby", ttl_s=ttl_s)
    stop = threading.Event()
    threads = [threading.Thread(target=leader.run, args=(stop,))]
    threads[0].start()
    try:
        deadline = time.monotonic() + 10
        while not leader.state.is_leader and time.monotonic() < deadline:
            time.sleep(0.02)
        assert leader.state.is_leader
        threads.append(threading.Thread(target=standby.run, args=(stop,)))
        threads[1].start()
        assert slow.slow_round_done.wait(ttl_s * 10)
        time.sleep(ttl_s / 2)  # the standby asks every 0.1 s
        assert (leader.state.elections, leader.state.step_downs) == (1, 0)
        assert standby.state.elections == 0
        assert db.execute("SELECT holder, epoch FROM leader_lease WHERE name = 'fleet'").fetchone() == ("leader", 1)
        assert slow.rounds >= 2  # the duties go on after the long round
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)


def test_a_draining_standby_does_not_take_a_free_lease(db_url: str, db: psycopg.Connection) -> None:
    # Regression (issue 26, the multi-host run): when one process of a host died, Dramatiq drained
    # the host's other process for its grace period, and that standby took the lease the dead
    # leader left, then stepped down as it exited: two leader changes for one fault.
    retiring = threading.Event()
    retiring.set()
    draining, _ = make_loop(db_url, [SlowDuty(0)], holder="draining", ttl_s=1.0)
    stop = threading.Event()
    thread = threading.Thread(target=draining.run, args=(stop, retiring))
    thread.start()
    try:
        time.sleep(1.0)  # ten standby rounds with the lease free
        assert draining.state.elections == 0
        assert db.execute("SELECT count(*) FROM leader_lease WHERE name = 'fleet' AND holder = 'draining'"
                          ).fetchone() == (0,)
        retiring.clear()  # (a live standby, for contrast, takes it within a round or two)
        deadline = time.monotonic() + 10
        while not draining.state.is_leader and time.monotonic() < deadline:
            time.sleep(0.02)
        assert draining.state.elections == 1
    finally:
        stop.set()
        thread.join(timeout=10)
