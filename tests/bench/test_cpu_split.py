"""The latency benchmark's CPU split: snapshots of /proc, their difference per conversion, merged windows."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time

import pytest

from bench.cpu_split import CpuSnapshot, CpuSplit


def _snap(seconds: dict[tuple[str, str], float], busy: float, steal: float = 0.0, faults: int = 0) -> CpuSnapshot:
    return CpuSnapshot(seconds, busy, steal, faults)


def test_the_split_is_per_conversion_biggest_first_and_the_rest_of_the_machine_is_not_attributed() -> None:
    before = _snap({("worker 1", "dq-worker"): 1.0, ("Redis", ""): 0.5}, busy=10.0, steal=1.0, faults=100)
    after = _snap({("worker 1", "dq-worker"): 3.0, ("worker 1", "onnx-intra"): 0.4, ("Redis", ""): 0.6},
                  busy=13.0, steal=1.2, faults=300)
    split = CpuSplit.between(before, after, conversions=100)
    assert split.per_conversion_ms[0] == (("worker 1", "dq-worker"), pytest.approx(20.0))
    assert dict(split.by_role())["worker 1"] == pytest.approx(24.0)
    assert split.threads_of("worker 1") == [("dq-worker", pytest.approx(20.0)), ("onnx-intra", pytest.approx(4.0))]
    assert dict(split.by_role())["not attributed (kernel, exited processes)"] == pytest.approx(5.0)  # 3 s − 2.5 s
    assert split.machine_busy_ms == pytest.approx(30.0)
    assert split.steal_ms == pytest.approx(2.0)
    assert split.worker_faults == pytest.approx(2.0)


def test_merged_windows_weigh_each_by_its_conversions() -> None:
    a = CpuSplit([(("worker 1", "dq-worker"), 10.0)], 20.0, 0.0, 10, worker_faults=100.0)
    b = CpuSplit([(("worker 1", "dq-worker"), 40.0)], 50.0, 3.0, 30, worker_faults=0.0)
    merged = CpuSplit.merge([a, b])
    assert merged.conversions == 40
    assert merged.per_conversion_ms == [(("worker 1", "dq-worker"), pytest.approx(32.5))]
    assert merged.machine_busy_ms == pytest.approx(42.5)
    assert merged.worker_faults == pytest.approx(25.0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_real_snapshot_sees_a_busy_named_thread_of_a_worker_process() -> None:
    from core.thread_names import label_python_threads

    stop = threading.Event()
    block = b"x" * 1_000_000

    def spin() -> None:  # hashing a large block runs with the GIL released: the snapshots are not held up
        while not stop.is_set():
            hashlib.sha256(block).digest()

    thread = threading.Thread(target=spin, name="stayler-spinner")
    thread.start()
    try:
        label_python_threads()
        before = CpuSnapshot.take(None, {os.getpid()})
        time.sleep(0.3)
        after = CpuSnapshot.take(None, {os.getpid()})  # while the thread lives: an ended thread leaves /proc
    finally:
        stop.set()
        thread.join()
    split = CpuSplit.between(before, after, conversions=1)
    spinner = dict(split.threads_of("worker 1")).get("spinner", 0.0)
    assert spinner > 50.0  # ms of CPU in 300 ms of hashing
    assert after.worker_faults >= before.worker_faults > 0
