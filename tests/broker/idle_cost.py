"""Idle cost and pick-up latency of a worker process's Redis consumer, on a private redis-server.

``python -m tests.broker.idle_cost [seconds]`` prints one line per design (``polling``: the previous
10 ms idle poll; ``blocking``: the wake-list wait): Redis commands a second and CPU share of one idle
worker process, and the enqueue → actor-start latency of messages sent to it while idle.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.broker.idle_worker import build, send
from tests.reliability.servers import ThrowawayRedis

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class IdleCost:
    """What one idle worker process cost, and how fast it picked messages up."""

    mode: str
    commands_per_s: float
    cpu_share: float
    latencies_ms: list[float]

    def line(self) -> str:
        """One human-readable line."""
        lat = sorted(self.latencies_ms)
        return (f"{self.mode}: {self.commands_per_s:.1f} Redis commands/s, {self.cpu_share * 100:.2f} % of a core "
                f"idle; enqueue → actor start over {len(lat)} messages: median {lat[len(lat) // 2]:.1f} ms, "
                f"max {lat[-1]:.1f} ms")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def measure(redis_url: str, mode: str, *, idle_s: float = 5.0, messages: int = 5, gap_s: float = 1.5) -> IdleCost:
    """Start one worker process of ``mode`` on ``redis_url`` (a private server), measure, stop it."""
    queue = f"idle-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([sys.executable, "-m", "tests.broker.idle_worker", redis_url, queue, mode], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        client = redis.Redis.from_url(redis_url)
        time.sleep(2.0)  # past the consumers' start-up
        commands, cpu, started = _commands(client), _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle_s)
        elapsed = time.monotonic() - started
        # The two INFO calls of this measurement are not the worker's.
        commands_per_s = (_commands(client) - commands - 1) / elapsed
        cpu_share = (_cpu_seconds(proc.pid) - cpu) / elapsed
        broker = build(redis_url, mode)
        for n in range(messages):
            if n or idle_s < gap_s:  # the first message follows the idle window, itself idleness enough
                time.sleep(gap_s)
            send(broker, queue)
        deadline = time.monotonic() + 10
        while client.llen(f"{queue}:received") < messages and time.monotonic() < deadline:
            time.sleep(0.01)
        latencies = []
        for raw in client.lrange(f"{queue}:received", 0, -1):
            sent, received = (float(x) for x in raw.decode().split(":"))
            latencies.append((received - sent) * 1000)
        return IdleCost(mode, commands_per_s, cpu_share, latencies)
    finally:
        proc.terminate()
        proc.wait(15)


def main() -> None:
    """Print both designs' figures."""
    idle_s = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    server = ThrowawayRedis()
    server.start()
    try:
        for mode in ("polling", "blocking"):
            print(measure(server.url, mode, idle_s=idle_s, messages=10).line(), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
