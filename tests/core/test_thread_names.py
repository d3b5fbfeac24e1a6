"""OS thread names: Python threads get their names, native threads the name of the block they start in."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from core.thread_names import label_python_threads, naming_native_threads, os_name_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names are read from /proc")


def _comm(native_id: int) -> str:
    return Path(f"/proc/self/task/{native_id}/comm").read_text().strip()


def test_a_python_thread_gets_its_name_without_the_project_prefix_and_the_main_thread_keeps_its_own() -> None:
    main_before = _comm(threading.main_thread().native_id or 0)
    started, release = threading.Event(), threading.Event()

    def wait() -> None:
        started.set()
        release.wait(5)

    thread = threading.Thread(target=wait, name="stayler-heartbeat")
    thread.start()
    started.wait(5)
    try:
        assert label_python_threads() >= 1
        assert thread.native_id is not None
        assert _comm(thread.native_id) == "heartbeat"
        assert _comm(threading.main_thread().native_id or 0) == main_before
    finally:
        release.set()
        thread.join()


def test_dramatiq_threads_are_named_by_role_and_long_names_are_cut_to_fifteen_bytes() -> None:
    from dramatiq.worker import ConsumerThread, WorkerThread

    assert os_name_for(WorkerThread.__new__(WorkerThread)) == "dq-worker"
    assert os_name_for(ConsumerThread.__new__(ConsumerThread)) == "dq-consumer"
    assert os_name_for(threading.Thread(name="stayler-a-very-long-thread-name")) == "a-very-long-thr"


def test_native_threads_started_in_the_block_inherit_its_name_and_the_caller_gets_its_name_back() -> None:
    me = threading.get_native_id()
    before = _comm(me)
    seen: list[str] = []
    with naming_native_threads("onnx-intra"):
        assert _comm(me) == "onnx-intra"
        child = threading.Thread(target=lambda: seen.append(_comm(threading.get_native_id())))
        child.start()
        child.join()
    assert seen == ["onnx-intra"]  # a new thread starts with its creator's name, as onnxruntime's pool does
    assert _comm(me) == before
