"""The worker registry tells the truth after a freeze: a worker marked stopped is live again when it heartbeats."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.e2e.test_leader_failover import lease_holder_pid
from tests.support.fleet import Env
from tests.support.wait import wait_for
from tests.support.workload import Workload, connect


def stopped(db_url: str, pid: int) -> bool | None:
    with connect(db_url) as conn:
        row = conn.execute("SELECT stopped_at IS NOT NULL FROM workers WHERE pid = %s "
                           "ORDER BY started_at DESC LIMIT 1", (pid,)).fetchone()
    return None if row is None else bool(row[0])


@pytest.mark.slow
@pytest.mark.parametrize("frozen", ["standby", "leader"])
def test_a_frozen_worker_marked_stopped_is_listed_live_again_once_it_heartbeats(env: Env, frozen: str) -> None:
    # Regression (issue 26, defect 3): renewal never cleared stopped_at, so after a freeze the
    # registry listed no live worker while two hosts processed jobs, the leader among them.
    env.start_fleet(processes=1, threads=1)
    env.start_fleet(processes=1, threads=1)
    with connect(env.db_url) as conn:
        work = Workload(conn, env.storage_dir)
        warm = work.submit(2)
        wait_for(lambda: work.all_terminal(warm), 60, "the fleets to work", env)
        wait_for(lambda: conn.execute("SELECT count(*) FROM workers WHERE stopped_at IS NULL").fetchone() == (2,),
                 30, "two registered workers", env)
        leader = wait_for(lambda: lease_holder_pid(env.db_url), 30, "a leader", env)
        pids = [r[0] for r in conn.execute("SELECT pid FROM workers WHERE stopped_at IS NULL")]
        victim = leader if frozen == "leader" else next(p for p in pids if p != leader)
        os.kill(victim, signal.SIGSTOP)
        try:
            # The other process leads now (or already did) and marks the silent one stopped.
            wait_for(lambda: stopped(env.db_url, victim), 30, "the frozen worker to be marked stopped", env)
        finally:
            os.kill(victim, signal.SIGCONT)
        wait_for(lambda: stopped(env.db_url, victim) is False, 15, "the resumed worker to be listed live", env)
        time.sleep(1.0)  # several heartbeats and rescue rounds later it is still live
        assert stopped(env.db_url, victim) is False
        alive = conn.execute("SELECT count(*) FROM workers WHERE stopped_at IS NULL").fetchone()
        assert alive == (2,), env.logs()
        after = work.submit(2)
        wait_for(lambda: work.all_terminal(after), 60, "work after the freeze", env)
