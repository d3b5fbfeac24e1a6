"""The leader under faults of real hosts: frozen (SIGSTOP), and the connections a fleet holds."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from tests.support.fleet import Env
from tests.support.wait import wait_for
from tests.support.workload import Workload, connect

LEASE_S = 3.0


def lease_holder_pid(db_url: str) -> int | None:
    with connect(db_url) as conn:
        row = conn.execute("SELECT holder FROM leader_lease WHERE name = 'fleet' AND expires_at > now()").fetchone()
    return int(row[0].split(":")[1]) if row and row[0] else None


def test_a_frozen_leader_is_replaced_within_the_lease(env: Env) -> None:
    # Regression (issue 10, defect 2): after SIGSTOP of the leader nothing was dispatched or rescued
    # for as long as it lasted; the standby never took over (a session advisory lock).
    overrides = {"STAYLER_LEADER_LEASE_S": str(LEASE_S)}
    env.start_fleet(processes=1, threads=1, **overrides)
    env.start_fleet(processes=1, threads=1, **overrides)
    with connect(env.db_url) as conn:
        work = Workload(conn, env.storage_dir)
        warm = work.submit(2)
        wait_for(lambda: work.all_terminal(warm), 60, "the fleets to work", env)
        wait_for(lambda: conn.execute("SELECT count(*) FROM workers WHERE stopped_at IS NULL").fetchone() == (2,),
                 30, "two registered workers", env)
        pid = wait_for(lambda: lease_holder_pid(env.db_url), 30, "a leader", env)
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(0.2)
            submitted = time.monotonic()
            [conv] = work.submit(1)
            wait_for(lambda: work.all_terminal([conv]), 30, "a conversion while the leader is frozen", env)
            elapsed = time.monotonic() - submitted
            print(f"\nleader frozen: a new conversion completed in {elapsed:.2f} s (lease {LEASE_S:g} s)")
            # Events, not a stopwatch: the conversion completed while the old leader was still
            # stopped, so a standby took the lease and dispatched it.
            assert psutil.Process(pid).status() == psutil.STATUS_STOPPED, env.logs()
            assert work.statuses([conv]) == {conv: "completed"}
            new = lease_holder_pid(env.db_url)
            assert new is not None and new != pid
        finally:
            os.kill(pid, signal.SIGCONT)
        # The old leader wakes up past its deadline and stays a standby.
        time.sleep(LEASE_S)
        assert lease_holder_pid(env.db_url) == new
        [after] = work.submit(1)
        wait_for(lambda: work.all_terminal([after]), 30, "a conversion after the old leader woke up", env)


@pytest.mark.slow  # a fleet run; the default suite keeps the frozen-leader test
def test_a_fleet_holds_two_connections_per_process_plus_one_leader_and_never_churns(env: Env) -> None:
    env.start_fleet(processes=2, threads=2)
    with connect(env.db_url) as conn:
        work = Workload(conn, env.storage_dir)
        ids = work.submit(4)
        wait_for(lambda: work.all_terminal(ids), 60, "the fleet to work", env)

        def sessions() -> list[tuple[str, object]]:
            rows = conn.execute("SELECT application_name, backend_start FROM pg_stat_activity "
                                "WHERE datname = current_database() AND application_name LIKE 'stayler-%%'"
                                ).fetchall()
            return sorted((str(r[0]), r[1]) for r in rows)

        time.sleep(2.0)
        before = sessions()
        time.sleep(3.0)
        after = sessions()
    assert before == after, "connections were opened or closed by an idle fleet"
    per_process: dict[str, int] = {}
    leaders = 0
    for name, _ in after:
        role, where = name.split(" ", 1)
        if role == "stayler-leader":
            leaders += 1
        else:
            assert role == "stayler-worker", name
            per_process[where] = per_process.get(where, 0) + 1
    assert leaders == 1
    assert len(per_process) == 2 and max(per_process.values()) <= 2, after


@pytest.mark.slow  # a fleet run; tests/worker/test_jobqueue.py checks every connection names itself
def test_no_connection_is_anonymous(env: Env) -> None:
    env.start_fleet(processes=1, threads=1)
    with connect(env.db_url) as conn:
        work = Workload(conn, env.storage_dir)
        ids = work.submit(1)
        wait_for(lambda: work.all_terminal(ids), 60, "the fleet to work", env)
        me = conn.info.backend_pid
        names = [r[0] for r in conn.execute(
            "SELECT application_name FROM pg_stat_activity WHERE datname = current_database() AND pid <> %s "
            "AND backend_type = 'client backend'", (me,)).fetchall()]
    assert names and all(n.startswith("stayler-") for n in names), names

