"""The multi-host fleet, simulated on one machine, while the shared services fail.

``python -m tests.multihost.runner [--conversions 1500]`` (or ``make multihost``;
``pytest -m slow tests/multihost/test_multihost.py -s``)

Three "hosts" (``stayler worker`` supervisors with their own state, scratch and metrics folders and
no shared folder) share only PostgreSQL (through PgBouncer in transaction mode; the leader's lease
and LISTEN go direct through ``STAYLER_DIRECT_DATABASE_URL``), a Sentinel-managed Redis
(``redis+sentinel://``) and an S3 server (moto, ``STAYLER_STORAGE_URL=s3://bucket/fleet``).
Conversions arrive at a steady rate through the pooler, by plain SQL and by the Python producer,
some cancelled, some slow, a few with an input damaged after upload. During the run the runner
SIGKILLs a busy worker process every few seconds (once the fleets are back from the previous
kill), restarts PostgreSQL, kills the Redis master (a replica is promoted by the Sentinels), makes
the S3 server unavailable for 10 s (every connection reset), partitions the leader's host for
20 s (every database connection of that host black-holed: no RST, TCP stays up) and freezes a host
that holds jobs (SIGSTOP of all its processes) for 15 s.

Afterwards it checks, from the database and the bucket, that every conversion ended, that each
completed one has exactly one result row, one result object and one thumbnail, that nothing is
stored for failed or cancelled ones, and that ``retry_count <= max_retries``; that no retry
was charged for a shared service's fault (no attempt requeued or failed with ``storage`` or
``database``); that the leader changed at most once per injected leader fault (the partition, the
PostgreSQL restart, a kill on the leader's host (Dramatiq then ends that host's whole fleet), a
freeze of the leader's host); and that no worker was ever listed stopped
while it heartbeats (sampled every second). It prints the figures, with the stall of each fault:
the longest time without a completed conversion from the fault's start until 30 s after it ended
(or until the next fault began), then the checked figures as a table, and exits 1 when one missed
its target.

The run waits by counted progress, not by the clock: it ends when every conversion ended and every
fault healed, or (a failure) when nothing was submitted, ended or injected for ``--stall-timeout``
seconds, so a slow, loaded machine makes it longer, not red.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg

from tests.multihost.cluster import Checked, Cluster, ClusterConfig, render
from tests.support.scratch import run_folder


@dataclass
class MultiHostConfig:
    """Knobs of a run; the fault times count from the first submission."""

    conversions: int = 1500
    hosts: int = 3
    processes: int = 2
    threads: int = 2
    rate_per_s: float = 30.0
    kill_every_s: tuple[float, float] = (3.0, 6.0)
    postgres_restart_at_s: float = 8.0
    postgres_down_s: float = 3.0
    redis_failover_at_s: float = 22.0
    s3_outage_at_s: float = 36.0
    s3_outage_s: float = 10.0
    partition_at_s: float = 50.0
    partition_s: float = 20.0
    freeze_at_s: float = 76.0
    freeze_s: float = 15.0
    cancel_share: float = 0.03
    slow_share: float = 0.05
    bad_share: float = 0.01
    max_retries: int = 5
    #: The run ends when nothing progressed (no submission, no conversion ended, no fault pending)
    #: for this long: the figures judge correctness, not how fast a loaded machine is.
    stall_timeout_s: float = 180.0
    seed: int = 11


@dataclass
class Fault:
    """One injected fault: when (wall clock), how long it was in force, and the stall it caused."""

    name: str
    started: float
    down_s: float
    stall_s: float = 0.0


@dataclass
class MultiHostFigures:
    """What the run did and what the checks found."""

    checked: Checked = field(default_factory=Checked)
    hosts: int = 0
    processes: int = 0
    kills: int = 0
    fleet_restarts: int = 0
    rescues: int = 0
    faults: list[Fault] = field(default_factory=list)
    peak_server_connections: int = 0
    max_connections: int = 0
    leftover_cleanup_markers: int = 0
    #: Lease epochs taken after the first election, and the faults that may move the leader.
    leader_changes: int = 0
    leader_faults: int = 0
    #: The most workers ever listed stopped while heartbeating after the stop (sampled every second).
    registry_lies: int = 0
    #: The run ended because nothing progressed for ``stall_timeout_s``.
    stalled: bool = False
    wall_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def all_problems(self) -> list[str]:
        """The checks' problems and the run's own."""
        return self.checked.problems + self.problems

    def render(self) -> str:
        """The figures as aligned lines."""
        c = self.checked
        rows: list[tuple[str, object]] = [
            ("hosts", f"{self.hosts} × {self.processes} worker processes"),
            ("conversions", f"{c.conversions} ({c.completed} completed, {c.failed} failed, {c.cancelled} cancelled)"),
            ("failed by error_type", ", ".join(f"{k} {v}" for k, v in c.failed_by_type.items()) or "none"),
            ("result objects", f"{c.result_objects} (a result and a thumbnail per completed conversion)"),
            ("kills (SIGKILL)", self.kills),
            ("fleet restarts", self.fleet_restarts),
            ("rescues", self.rescues),
            ("retries", f"{c.retries} (Σ retry_count; kills and damaged inputs included)"),
            ("retries for shared-service faults", f"{c.retries_for_shared_services} (attempts charged with "
                                                  "error_type storage or database)"),
            ("released uncharged", c.released),
            ("leader changes", f"{self.leader_changes} for {self.leader_faults} injected leader faults"),
            ("workers listed stopped while heartbeating", f"{self.registry_lies} (most at once)"),
        ]
        rows += [(f"fault: {f.name}", f"down {f.down_s:.1f} s, stall {f.stall_s:.1f} s") for f in self.faults]
        rows += [
            ("peak server connections", f"{self.peak_server_connections} (max_connections {self.max_connections})"),
            ("duplicates / lost", f"{c.duplicates} / {c.lost}"),
            ("wall time", f"{self.wall_s:.1f} s"),
            ("problems", f"{len(self.all_problems)}" + "".join(f"\n    - {p}" for p in self.all_problems[:20])),
        ]
        return render("multi-host figures", rows)

    def targets(self, expected: int) -> list[tuple[str, str, str, bool]]:
        """The checked figures: (figure, target, measured, met)."""
        c = self.checked
        other = [p for p in self.all_problems if "retries charged" not in p and "leader changes" not in p
                 and "listed stopped" not in p]
        return [
            ("conversions ended", f"{expected}", f"{c.completed + c.failed + c.cancelled}",
             c.completed + c.failed + c.cancelled == expected),
            ("lost", "0", f"{c.lost}", c.lost == 0),
            ("duplicates", "0", f"{c.duplicates}", c.duplicates == 0),
            ("Σ retry_count for shared-service faults", "0", f"{c.retries_for_shared_services}",
             c.retries_for_shared_services == 0),
            ("leader changes", f"≤ {self.leader_faults} (injected leader faults)", f"{self.leader_changes}",
             self.leader_changes <= self.leader_faults),
            ("workers listed stopped while heartbeating", "0", f"{self.registry_lies}", self.registry_lies == 0),
            ("faults injected", "5", f"{len(self.faults)}", len(self.faults) == 5),
            ("other problems", "0", f"{len(other)}", not other),
        ]

    def table(self, expected: int) -> str:
        """The checked figures as a Markdown table (the docs keep it as printed)."""
        lines = ["| figure | target | measured | met |", "|---|---|---|---|"]
        lines += [f"| {name} | {target} | {value} | {'yes' if ok else '**NO**'} |"
                  for name, target, value, ok in self.targets(expected)]
        return "\n".join(lines)

    def passed(self, expected: int) -> bool:
        """Every checked figure met its target."""
        return all(ok for *_, ok in self.targets(expected)) and not self.all_problems


class MultiHost:
    """One run over a :class:`Cluster` of three hosts."""

    def __init__(self, config: MultiHostConfig, cluster: Cluster) -> None:
        """Use ``cluster`` (not started yet)."""
        self.config = config
        self.cluster = cluster
        self.rng = random.Random(config.seed)
        self.figures = MultiHostFigures(hosts=cluster.config.hosts, processes=cluster.config.processes,
                                        max_connections=cluster.config.max_connections)
        self.submit_error: BaseException | None = None
        self._s3_thread: threading.Thread | None = None
        self._timed: list[tuple[float, Callable[[], None]]] = []
        self._epoch = -1
        self._leader_pid: int | None = None
        self._done_at_kill = -1

    def _submit(self) -> None:
        cfg = self.config
        try:
            self.cluster.submit(cfg.conversions, rate_per_s=cfg.rate_per_s, seed=cfg.seed,
                                cancel_share=cfg.cancel_share, slow_share=cfg.slow_share, bad_share=cfg.bad_share,
                                timeout_s=24 * 3600.0)  # the run's own stall watch ends a stuck submission
        except BaseException as exc:  # reported by the main thread
            self.submit_error = exc

    def _busy_pids(self) -> set[int]:
        with contextlib.suppress(psycopg.Error), psycopg.connect(self.cluster.direct_url, autocommit=True,
                                                                  connect_timeout=2) as conn:
            rows = conn.execute("SELECT DISTINCT worker_id FROM conversion_jobs WHERE status = 'processing'")
            return {int(r[0].split(":")[1]) for r in rows if r[0] and r[0].count(":") >= 1
                    and r[0].split(":")[1].isdigit()}
        return set()

    def _kill_one(self) -> None:
        pids = self.cluster.worker_pids()
        busy = self._busy_pids()
        preferred = [p for p in pids if p in busy] or pids
        if preferred:
            victim = self.rng.choice(preferred)
            # Dramatiq ends a whole fleet when one of its processes dies, so a kill on the leader's
            # host ends the leader too (gracefully, when it was another process there). The holder
            # is read now: the one the main loop last saw may be seconds old on a loaded machine.
            self._watch_leader()
            leader_host = self.cluster.host_of(self._leader_pid) if self._leader_pid is not None else None
            hits_leader = victim == self._leader_pid or (leader_host is not None
                                                         and self.cluster.host_of(victim) == leader_host)
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
                self.figures.kills += 1
                if hits_leader:
                    self.figures.leader_faults += 1

    def _recovered(self, done: int) -> bool:
        """The fleet is back from the last kill: every host runs all its processes, and work went on.

        Dramatiq ends a host's whole fleet when one process dies; on a loaded machine the restart
        takes longer than the kill interval, and kills at a fixed pace would keep the fleets down
        for good. Counting recovery keeps the kills a fault, not a measure of the machine's speed.
        """
        want = self.cluster.config.hosts * self.cluster.config.processes
        return done > self._done_at_kill and len(self.cluster.worker_pids()) >= want

    def _watch_leader(self) -> None:
        epoch, pid = self.cluster.leader()
        if epoch < 0:
            return
        if self._epoch >= 0 and epoch != self._epoch:
            self.figures.leader_changes += epoch - self._epoch
        self._epoch = epoch
        self._leader_pid = pid if pid is not None else self._leader_pid

    def _partition_leader_host(self) -> None:
        host = self.cluster.host_of(self._leader_pid) if self._leader_pid is not None else None
        host = 0 if host is None else host
        fault = Fault(f"leader's host {host} partitioned", time.time(), self.config.partition_s)
        self.figures.faults.append(fault)
        self.figures.leader_faults += 1
        self.cluster.partition(host, True)
        self._timed.append((time.monotonic() + self.config.partition_s, lambda: self.cluster.partition(host, False)))

    def _freeze_a_busy_host(self) -> None:
        busy = [self.cluster.host_of(p) for p in self._busy_pids()]
        candidates = [h for h in busy if h is not None] or list(range(len(self.cluster.hosts)))
        host = self.rng.choice(sorted(set(candidates)))
        fault = Fault(f"host {host} frozen (SIGSTOP)", time.time(), self.config.freeze_s)
        self.figures.faults.append(fault)
        if self._leader_pid is not None and self.cluster.host_of(self._leader_pid) == host:
            self.figures.leader_faults += 1
        self.cluster.freeze(host, True)
        self._timed.append((time.monotonic() + self.config.freeze_s, lambda: self.cluster.freeze(host, False)))

    def _run_due(self) -> None:
        now = time.monotonic()
        for item in [t for t in self._timed if t[0] <= now]:
            self._timed.remove(item)
            item[1]()

    def _restart_postgres(self) -> None:
        fault = Fault("PostgreSQL restart", time.time(), 0.0)
        self.cluster.pg.restart(down_s=self.config.postgres_down_s)
        fault.down_s = time.time() - fault.started
        self.figures.faults.append(fault)

    def _fail_over_redis(self) -> None:
        sentinel = self.cluster.sentinel
        assert sentinel is not None
        fault = Fault("Redis master killed", time.time(), 0.0)
        old = sentinel.kill_master()
        sentinel.wait_for_failover(old)
        fault.down_s = time.time() - fault.started  # until a replica answers as master
        self.figures.faults.append(fault)

    def _pause_s3(self) -> None:
        s3 = self.cluster.s3
        assert s3 is not None
        fault = Fault("S3 unavailable", time.time(), self.config.s3_outage_s)
        self.figures.faults.append(fault)

        def pause() -> None:
            with s3.paused(self.config.s3_outage_s):
                pass

        self._s3_thread = threading.Thread(target=pause, name="s3-outage", daemon=True)
        self._s3_thread.start()

    def run(self) -> MultiHostFigures:
        """Services, hosts, workload and faults, drain, clean-up wait, checks."""
        cfg = self.config
        cluster = self.cluster
        started = time.monotonic()
        cluster.start_services()
        cluster.start_hosts()
        cluster.wait_for_workers()
        submitter = threading.Thread(target=self._submit, name="multihost-submit", daemon=True)
        t0 = time.monotonic()
        submitter.start()
        next_kill = t0 + self.rng.uniform(*cfg.kill_every_s)
        done_faults: set[str] = set()
        progress: tuple[int, int, int] = (-1, -1, -1)
        last_progress = time.monotonic()
        while True:
            time.sleep(0.2)
            elapsed = time.monotonic() - t0
            counts = cluster.counts()
            done = sum(counts.get(s, 0) for s in ("completed", "failed", "cancelled"))
            now_progress = (len(cluster.submitted), done, len(done_faults))
            if now_progress != progress or self._timed or (self._s3_thread is not None and self._s3_thread.is_alive()):
                progress, last_progress = now_progress, time.monotonic()
            elif time.monotonic() - last_progress > cfg.stall_timeout_s:
                self.figures.stalled = True
                self.figures.problems.append(
                    f"no progress for {cfg.stall_timeout_s:.0f} s: {len(cluster.submitted)} submitted, {done} ended")
                break
            self._run_due()
            self._watch_leader()
            self.figures.registry_lies = max(self.figures.registry_lies, self.cluster.registry_lies())
            if not submitter.is_alive() and done >= cfg.conversions and len(done_faults) == 5 and not self._timed \
                    and (self._s3_thread is None or not self._s3_thread.is_alive()):
                break
            if "pg" not in done_faults and elapsed >= cfg.postgres_restart_at_s:
                done_faults.add("pg")
                self.figures.leader_faults += 1  # the leader's own connection ends with the server
                self._restart_postgres()
            elif "redis" not in done_faults and elapsed >= cfg.redis_failover_at_s:
                done_faults.add("redis")
                self._fail_over_redis()
            elif "s3" not in done_faults and elapsed >= cfg.s3_outage_at_s:
                done_faults.add("s3")
                self._pause_s3()
            elif "partition" not in done_faults and elapsed >= cfg.partition_at_s:
                done_faults.add("partition")
                self._partition_leader_host()
            elif "freeze" not in done_faults and elapsed >= cfg.freeze_at_s:
                done_faults.add("freeze")
                self._freeze_a_busy_host()
            if (submitter.is_alive() or done < cfg.conversions * 0.97) and time.monotonic() >= next_kill \
                    and self._recovered(done):
                self._kill_one()
                self._done_at_kill = done
                next_kill = time.monotonic() + self.rng.uniform(*cfg.kill_every_s)
        submitter.join(timeout=5)
        for _, undo in self._timed:  # timed out mid-fault: heal before checking
            undo()
        self._timed.clear()
        if self._s3_thread is not None:
            self._s3_thread.join(timeout=cfg.s3_outage_s + 5)
        self.figures.leftover_cleanup_markers = self._wait_for_cleanup()
        cluster.stop_hosts()
        self.figures.wall_s = time.monotonic() - started
        self._finish()
        return self.figures

    def _wait_for_cleanup(self, quiet_s: float = 30.0) -> int:
        """Give the leader's clean duty time to delete what lost attempts left; returns markers left.

        It waits while the markers go down, and gives up after ``quiet_s`` without one deleted.
        """
        last_change = time.monotonic()
        left = -1
        while time.monotonic() - last_change < quiet_s:
            with contextlib.suppress(psycopg.Error), psycopg.connect(self.cluster.direct_url, autocommit=True) as c:
                row = c.execute("SELECT count(*) FROM storage_cleanup").fetchone()
                now = int(row[0]) if row else 0
                if now == 0:
                    return 0
                if left < 0 or now < left:
                    last_change = time.monotonic()
                left = now
            time.sleep(0.5)
        return left

    def _finish(self) -> None:
        f = self.figures
        cluster = self.cluster
        f.checked = cluster.check(self.config.conversions)
        f.peak_server_connections = cluster.peak_connections
        if self.submit_error is not None:
            f.problems.append(f"submission failed: {self.submit_error!r}")
        if f.leftover_cleanup_markers:
            f.problems.append(f"{f.leftover_cleanup_markers} storage_cleanup markers left (none deleted for 30 s)")
        if len(f.faults) != 5:
            f.problems.append(f"not every fault ran: {[x.name for x in f.faults]}")
        if f.checked.retries_for_shared_services:
            f.problems.append(f"{f.checked.retries_for_shared_services} retries charged for shared-service faults")
        if f.leader_changes > f.leader_faults:
            f.problems.append(f"{f.leader_changes} leader changes for {f.leader_faults} injected leader faults")
        if f.registry_lies:
            f.problems.append(f"up to {f.registry_lies} workers listed stopped while heartbeating")
        logs = "\n".join(p.read_text(errors="replace") for p in sorted(cluster.log_dir.glob("host-*.log")))
        f.fleet_restarts = len(re.findall(r"the fleet exited unexpectedly", logs))
        f.rescues = len(re.findall(r"rescued a job from a dead worker", logs))
        with psycopg.connect(cluster.direct_url, autocommit=True) as conn:
            times = [float(r[0]) for r in conn.execute(
                "SELECT extract(epoch FROM completed_at) FROM conversion_jobs WHERE status = 'completed' "
                "ORDER BY completed_at")]
        starts = sorted(x.started for x in f.faults)
        for fault in f.faults:
            later = [t for t in starts if t > fault.started]
            f_end = min([fault.started + fault.down_s + 30.0, *later])  # the next fault's stall is its own
            inside = [t for t in times if fault.started <= t <= f_end]
            edges = [fault.started, *inside]
            fault.stall_s = max((b - a for a, b in itertools.pairwise(edges)), default=f_end - fault.started)


@contextlib.contextmanager
def multihost_run(config: MultiHostConfig, keep: bool = False) -> Iterator[MultiHost]:
    """A run in a temporary folder, every service stopped and the folder removed afterwards."""
    with run_folder("stayler-multihost-", keep) as work_dir:
        cluster = Cluster(ClusterConfig(hosts=config.hosts, processes=config.processes, threads=config.threads,
                                        max_retries=config.max_retries, direct_url=True, s3=True, sentinel=True,
                                        proxied=True,
                                        extra_env={"STAYLER_BACKOFF_BASE_S": "1", "STAYLER_BACKOFF_MAX_S": "8"}),
                          work_dir)
        try:
            yield MultiHost(config, cluster)
        finally:
            cluster.close()


def main(argv: list[str] | None = None) -> int:
    """Run it and print the figures; exit 1 when a check failed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversions", type=int, default=1500)
    parser.add_argument("--rate", type=float, default=30.0, help="submissions per second")
    parser.add_argument("--processes", type=int, default=2, help="worker processes per host")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--kill-every", default="3,6", help="seconds between SIGKILLs of a busy worker: LOW,HIGH")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="multiply every fault's start time (a smaller run: its faults come sooner)")
    parser.add_argument("--stall-timeout", type=float, default=180.0,
                        help="end the run when nothing progressed (submitted, ended, fault) for this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (logs)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    config = MultiHostConfig(conversions=args.conversions, rate_per_s=args.rate, processes=args.processes,
                             threads=args.threads, seed=args.seed, stall_timeout_s=args.stall_timeout)
    low, high = (float(x) for x in args.kill_every.split(","))
    config.kill_every_s = (low, high)
    for name in ("postgres_restart_at_s", "redis_failover_at_s", "s3_outage_at_s", "partition_at_s", "freeze_at_s"):
        setattr(config, name, getattr(config, name) * args.time_scale)
    with multihost_run(config, keep=args.keep) as run:
        figures = run.run()
        print(figures.render(), flush=True)
        print("\n" + figures.table(config.conversions), flush=True)
        if args.keep:
            print(f"run folder: {run.cluster.work_dir}")
    ok = figures.passed(config.conversions)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
