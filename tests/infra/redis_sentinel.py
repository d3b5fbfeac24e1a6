"""A Sentinel-managed Redis on private loopback ports: one master, two replicas, three Sentinels.

``RedisSentinelGroup.url`` is the ``redis+sentinel://`` URL of the broker; ``kill_master()``
SIGKILLs the current master and ``wait_for_failover()`` returns once the Sentinels name a promoted
replica. Sentinels need ``redis-sentinel`` (Debian's package) or a ``redis-server`` that accepts
``--sentinel``. The ``redis_sentinel`` fixture (module scope) stops every process at the end.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.reliability.servers import _redis_binary, free_port
from tests.support.services import refuse_in_fast_run

MASTER_NAME = "stayler"


def _sentinel_command(conf: Path) -> list[str]:
    found = shutil.which("redis-sentinel")
    return [found, str(conf)] if found else [_redis_binary(), str(conf), "--sentinel"]


def _wait_ping(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            redis.Redis(port=port, socket_timeout=1).ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class RedisSentinelGroup:
    """Three ``redis-server`` (master + 2 replicas) and three Sentinels (quorum 2) under one folder."""

    def __init__(self, *, down_after_ms: int = 1000, failover_timeout_ms: int = 5000) -> None:
        """Pick ports and a folder; :meth:`start` runs the processes."""
        self.root = Path(tempfile.mkdtemp(prefix="stayler-sentinel-"))
        self.data_ports = [free_port() for _ in range(3)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """The broker URL: every Sentinel, the master name, database 0."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/0"

    def _start_data(self, port: int, replica_of: int | None) -> None:
        args = [_redis_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                "--dir", str(self.root)]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        log = (self.root / f"redis-{port}.log").open("ab")
        self.procs[port] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        _wait_ping(port)

    def start(self) -> None:
        """Start the master, its replicas, then the Sentinels; wait until they see each other."""
        refuse_in_fast_run("Redis Sentinel")
        master = self.data_ports[0]
        self._start_data(master, None)
        for port in self.data_ports[1:]:
            self._start_data(port, master)
        for port in self.sentinel_ports:
            conf = self.root / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.root}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n")
            log = (self.root / f"sentinel-{port}.log").open("ab")
            self.procs[port] = subprocess.Popen(_sentinel_command(conf), stdout=log, stderr=subprocess.STDOUT)
            _wait_ping(port)
        deadline = time.monotonic() + 30
        while not self._converged():
            if time.monotonic() > deadline:
                raise RuntimeError(f"Sentinels did not discover each other; logs in {self.root}")
            time.sleep(0.1)

    def _converged(self) -> bool:
        for port in self.sentinel_ports:
            fields = redis.Redis(port=port, socket_timeout=1).sentinel_master(MASTER_NAME)
            if int(fields["num-other-sentinels"]) < 2 or int(fields["num-slaves"]) < 2:
                return False
        return True

    def master_port(self) -> int:
        """The port the Sentinels currently name as master."""
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError):
                _, master = redis.Redis(port=port, socket_timeout=1).execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
                return int(master)
        raise RuntimeError("no Sentinel answered")

    def kill_master(self) -> int:
        """SIGKILL the current master; returns its port."""
        port = self.master_port()
        proc = self.procs[port]
        proc.kill()
        proc.wait()
        return port

    def wait_for_failover(self, old_master: int, timeout_s: float = 30.0) -> int:
        """Block until a majority of Sentinels name a new master that answers as one; returns its port."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            port = self.master_port()
            if port != old_master:
                with contextlib.suppress(redis.RedisError):
                    if redis.Redis(port=port, socket_timeout=1).info("replication")["role"] == "master":
                        return port
            time.sleep(0.05)
        raise TimeoutError(f"no failover within {timeout_s} s; logs in {self.root}")

    def restart(self, port: int) -> None:
        """Start a killed data server again (Sentinels turn it into a replica of the new master)."""
        self._start_data(port, self.master_port())

    def stop(self) -> None:
        """Stop every process and delete the folder."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_sentinel() -> Iterator[RedisSentinelGroup]:
    """A fresh Sentinel-managed Redis group for the module."""
    group = RedisSentinelGroup()
    try:
        group.start()
        yield group
    finally:
        group.stop()
