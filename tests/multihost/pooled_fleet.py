"""Forty worker processes through a real PgBouncer into a PostgreSQL that allows thirty connections.

``python -m tests.multihost.pooled_fleet [--conversions 3000] [--no-direct-url]``
(``pytest -m slow tests/multihost/test_pooled_fleet.py -s``)

A private PostgreSQL with ``max_connections = 30``, PgBouncer in transaction mode in front of it
(the settings of ``tests.infra.pgbouncer.TESTED_SETTINGS``: ``default_pool_size = 20``), and four
``stayler worker`` supervisors of ten single-threaded processes each (null model), all with
``DATABASE_URL`` pointing at PgBouncer and ``STAYLER_DATABASE_POOLED=true``; the leader reaches the
server directly through ``STAYLER_DIRECT_DATABASE_URL`` (or, with ``--no-direct-url``, polls through
the pooler). Conversions are submitted through the pooler by plain SQL and the Python producer;
the run drains them, checks that none was lost or done twice, and reports the peak number of
server-side connections (polled from ``pg_stat_activity``).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg

from tests.multihost.cluster import Checked, Cluster, ClusterConfig, render
from tests.support.scratch import run_folder


@dataclass
class PooledFigures:
    """What the run measured."""

    conversions: int = 0
    processes: int = 0
    direct_url: bool = True
    peak_server_connections: int = 0
    peak_pgbouncer_server_connections: int = 0
    max_connections: int = 30
    drain_s: float = 0.0
    conversions_per_s: float = 0.0
    wall_s: float = 0.0
    checked: Checked = field(default_factory=Checked)

    def render(self) -> str:
        """The figures as aligned lines."""
        c = self.checked
        return render("PgBouncer fleet figures", [
            ("worker processes", f"{self.processes} (leader {'direct' if self.direct_url else 'polling, pooled'})"),
            ("conversions", f"{c.conversions} ({c.completed} completed, {c.failed} failed, {c.cancelled} cancelled)"),
            ("peak server connections", f"{self.peak_server_connections} (max_connections {self.max_connections})"),
            ("peak PgBouncer server conns", self.peak_pgbouncer_server_connections),
            ("drain", f"{self.drain_s:.1f} s, {self.conversions_per_s:.0f} conv/s (first submit → last completion)"),
            ("duplicates / lost", f"{c.duplicates} / {c.lost}"),
            ("wall time", f"{self.wall_s:.1f} s"),
            ("problems", f"{len(c.problems)}" + "".join(f"\n    - {p}" for p in c.problems[:20])),
        ])


def run(cluster: Cluster, conversions: int, timeout_s: float = 240.0) -> PooledFigures:
    """Start the hosts, submit, drain, check."""
    cfg = cluster.config
    figures = PooledFigures(processes=cfg.hosts * cfg.processes, direct_url=cfg.direct_url,
                            max_connections=cfg.max_connections)
    started = time.monotonic()
    cluster.start_services()
    cluster.start_hosts()
    cluster.wait_for_workers()
    cluster.submit(conversions)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = cluster.counts()
        if counts and sum(counts.get(s, 0) for s in ("completed", "failed", "cancelled")) >= conversions:
            break
        time.sleep(0.5)
    with psycopg.connect(cluster.direct_url, autocommit=True) as conn:
        row = conn.execute("SELECT extract(epoch FROM max(completed_at) - min(created_at)) FROM conversion_jobs"
                           ).fetchone()
    figures.drain_s = float(row[0]) if row and row[0] is not None else 0.0
    cluster.stop_hosts()
    figures.checked = cluster.check(conversions)
    figures.conversions = figures.checked.conversions
    figures.conversions_per_s = figures.checked.completed / figures.drain_s if figures.drain_s else 0.0
    figures.peak_server_connections = cluster.peak_connections
    figures.peak_pgbouncer_server_connections = cluster.peak_pooled
    figures.wall_s = time.monotonic() - started
    return figures


def pooled_config(direct_url: bool = True) -> ClusterConfig:
    """Four hosts of ten single-threaded processes, PgBouncer pool 20, server max_connections 30."""
    return ClusterConfig(hosts=4, processes=10, threads=1, batch_size=8, max_connections=30, pool_size=20,
                         direct_url=direct_url, s3=False, sentinel=False, extra_env={"STAYLER_FAILPOINTS": ""})


@contextlib.contextmanager
def pooled_cluster(config: ClusterConfig, keep: bool = False) -> Iterator[Cluster]:
    """A cluster in a temporary folder, stopped and removed afterwards (unless ``keep``)."""
    with run_folder("stayler-pooled-", keep) as work_dir:
        cluster = Cluster(config, work_dir)
        try:
            yield cluster
        finally:
            cluster.close()


def main(argv: list[str] | None = None) -> int:
    """Run it and print the figures; exit 1 when a check failed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversions", type=int, default=3000)
    parser.add_argument("--no-direct-url", action="store_true", help="no STAYLER_DIRECT_DATABASE_URL: the leader polls")
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--processes", type=int, default=10, help="per host")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (logs)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    config = pooled_config(not args.no_direct_url)
    config.hosts, config.processes = args.hosts, args.processes
    with pooled_cluster(config, keep=args.keep) as cluster:
        figures = run(cluster, args.conversions)
        print(figures.render(), flush=True)
        if args.keep:
            print(f"run folder: {cluster.work_dir}")
    ok = not figures.checked.problems and figures.peak_server_connections <= figures.max_connections
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
