"""A real PgBouncer (Debian's ``pgbouncer``) on a private loopback port, in transaction mode.

``PgBouncer(upstream_url)`` pools every database of the upstream server under the same name
(``* = host=… port=…``), trusts the client (the upstream trusts its loopback too), and exposes the
admin console (``SHOW POOLS`` etc.) to user ``postgres``. Clients must not rely on session state
and must turn prepared statements off (psycopg: ``prepare_threshold=None``): PgBouncer 1.18, the
Debian 12 version, does not track them in transaction mode.

The settings this fixture runs with are the ones the project documents as tested.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.reliability.servers import free_port
from tests.support.services import refuse_in_fast_run

TESTED_SETTINGS = {
    "pool_mode": "transaction",
    "max_client_conn": "2000",
    "default_pool_size": "20",
    "reserve_pool_size": "0",
    "server_reset_query": "",
    "server_check_delay": "10",
    "ignore_startup_parameters": "extra_float_digits",
    # After a failed server login (PostgreSQL restarting) PgBouncer refuses new server logins for this
    # long; the default 15 s turned a 3 s PostgreSQL restart into a 17 s stall (tests/multihost).
    "server_login_retry": "1",
}


def pgbouncer_binary() -> str | None:
    """The ``pgbouncer`` executable, or None when it is not installed."""
    return shutil.which("pgbouncer") or next(
        (str(p) for p in (Path("/usr/sbin/pgbouncer"), Path("/usr/bin/pgbouncer")) if p.exists()), None)


class PgBouncer:
    """One PgBouncer process in front of ``upstream_url``'s server."""

    def __init__(self, upstream_url: str, **settings: str | int) -> None:
        """Write the configuration; :meth:`start` runs it. ``settings`` override ``TESTED_SETTINGS``."""
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed (apt-get install -y pgbouncer)")
        self.binary = binary
        upstream = urlsplit(upstream_url)
        self.upstream_host = upstream.hostname or "127.0.0.1"
        self.upstream_port = upstream.port or 5432
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="stayler-pgbouncer-"))
        self.settings = {**TESTED_SETTINGS, **{k: str(v) for k, v in settings.items()}}
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = None
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            self._user = "postgres" if _user_exists("postgres") else "nobody"
        self._write_config()

    def _write_config(self) -> None:
        (self.root / "users.txt").write_text('"postgres" ""\n')
        lines = ["[databases]", f"* = host={self.upstream_host} port={self.upstream_port}", "", "[pgbouncer]",
                 "listen_addr = 127.0.0.1", f"listen_port = {self.port}", "unix_socket_dir =",
                 "auth_type = trust", f"auth_file = {self.root / 'users.txt'}", "admin_users = postgres",
                 "stats_users = postgres", f"logfile = {self.root / 'pgbouncer.log'}",
                 f"pidfile = {self.root / 'pgbouncer.pid'}"]
        lines += [f"{key} = {value}" for key, value in self.settings.items()]
        (self.root / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
        if self._user is not None:
            shutil.chown(self.root, self._user)
            for path in self.root.iterdir():
                shutil.chown(path, self._user)

    def url(self, database: str = "postgres") -> str:
        """A client URL through the pooler for ``database``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Run PgBouncer and wait until it accepts a query."""
        refuse_in_fast_run("PgBouncer")
        args = [self.binary, str(self.root / "pgbouncer.ini")]
        if self._user is not None:
            args[1:1] = ["-u", self._user]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                with psycopg.connect(self.url(), prepare_threshold=None, autocommit=True, connect_timeout=2) as c:
                    c.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.root / "pgbouncer.log")
                    raise RuntimeError(f"pgbouncer did not start: {log.read_text() if log.exists() else ''}"
                                       ) from None
                time.sleep(0.1)

    def show(self, what: str) -> list[dict[str, Any]]:
        """Rows of an admin console ``SHOW`` command (``POOLS``, ``SERVERS``, ``CLIENTS``, ``STATS``…)."""
        if not what.isalpha():
            raise ValueError(f"not a SHOW subject: {what!r}")
        with psycopg.connect(self.url("pgbouncer"), autocommit=True, prepare_threshold=None,
                             cursor_factory=psycopg.ClientCursor) as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(f"SHOW {what}")
            return cur.fetchall()

    def server_connections(self) -> int:
        """Server connections PgBouncer holds open right now (active, idle, used, tested, logging in)."""
        keys = ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login")
        return sum(int(row[k]) for row in self.show("POOLS") if row["database"] != "pgbouncer" for k in keys)

    def restart(self) -> None:
        """Stop PgBouncer (every client connection ends) and start it again on the same port."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.start()

    def stop(self) -> None:
        """Stop PgBouncer and delete its folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def running_pgbouncer(upstream_url: str, **settings: str | int) -> Iterator[PgBouncer]:
    """A started PgBouncer in front of ``upstream_url`` for the block."""
    bouncer = PgBouncer(upstream_url, **settings)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture(scope="module")
def pgbouncer_for() -> Iterator[Any]:
    """A factory: ``pgbouncer_for(upstream_url, **settings)`` starts one; all are stopped after the module."""
    if pgbouncer_binary() is None:
        pytest.skip("pgbouncer is not installed (apt-get install -y pgbouncer)")
    started: list[PgBouncer] = []

    def start(upstream_url: str, **settings: str | int) -> PgBouncer:
        bouncer = PgBouncer(upstream_url, **settings)
        started.append(bouncer)
        bouncer.start()
        return bouncer

    yield start
    for bouncer in started:
        bouncer.stop()
