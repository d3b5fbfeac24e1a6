"""The broker follows a Redis failover run by real Sentinels: master SIGKILLed, a replica promoted."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from broker.redis import make_broker
from broker.sentinel import parse_sentinel_url
from tests.broker.idle_cost import ROOT
from tests.broker.idle_worker import send
from tests.infra.redis_sentinel import RedisSentinelGroup, redis_sentinel

__all__ = ["redis_sentinel"]


def _receipts(path: Path) -> dict[int, tuple[float, float]]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        seq, sent, received = line.split()
        out[int(seq)] = (float(sent), float(received))
    return out


def test_sentinel_urls_parse() -> None:
    target = parse_sentinel_url("redis+sentinel://:pw@10.0.0.1:26379,[::1]:26380,h3/mymaster/2?sentinel_password=s")
    assert target.sentinels == [("10.0.0.1", 26379), ("::1", 26380), ("h3", 26379)]
    assert (target.master, target.db, target.password, target.sentinel_password) == ("mymaster", 2, "pw", "s")
    with pytest.raises(ValueError, match="master-name"):
        parse_sentinel_url("redis+sentinel://h:26379")


def test_the_broker_keeps_enqueueing_and_consuming_through_a_failover(
        redis_sentinel: RedisSentinelGroup, tmp_path: Path) -> None:
    queue = f"failover-{uuid.uuid4().hex[:8]}"
    receipts = tmp_path / "receipts.txt"
    command = [sys.executable, "-m", "tests.broker.idle_worker", redis_sentinel.url, queue, "blocking", str(receipts)]
    with (tmp_path / "worker.log").open("wb") as log:
        worker = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log)
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == b"ready"
        producer = make_broker(redis_sentinel.url)
        sent_at: dict[int, float] = {}
        seq = 0

        def send_for(seconds: float) -> float:
            nonlocal seq
            longest = 0.0
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                started = time.monotonic()
                sent_at[seq] = time.time()
                send(producer, queue, seq)
                longest = max(longest, time.monotonic() - started)
                seq += 1
                time.sleep(0.05)
            return longest

        send_for(2.0)
        before = seq
        killed_at = time.time()
        old = redis_sentinel.kill_master()
        longest_enqueue = send_for(0.5)
        new = redis_sentinel.wait_for_failover(old)
        promoted_after = time.time() - killed_at
        longest_enqueue = max(longest_enqueue, send_for(3.0))
        deadline = time.monotonic() + 20
        while len(_receipts(receipts)) < seq and time.monotonic() < deadline:
            time.sleep(0.1)
        got = _receipts(receipts)
        after_kill = [got[s][1] for s in range(before, seq) if s in got]
        stall = min(after_kill) - killed_at if after_kill else float("inf")
        lost = sorted(set(range(seq)) - set(got))
        print(f"failover {old} → {new}: promoted {promoted_after:.2f} s after the kill; first message picked up "
              f"{stall:.2f} s after the kill; longest enqueue {longest_enqueue:.2f} s; {seq} sent, "
              f"{len(lost)} lost {lost[:10]}, {len(got) - len(set(got))} duplicates")
        assert new != old
        assert not lost, f"messages lost: {lost}"
        assert after_kill  # messages sent after the kill were consumed (from the promoted master)
    finally:
        worker.terminate()
        worker.wait(20)
