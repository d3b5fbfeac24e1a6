"""Hostile customer, issue 19 row 3: a receiver that drips its answer a byte a second is cut off at one
deadline for the whole request and never delays another customer's webhooks; a receiver that answers
400 MB is read up to a small cap; ``stayler webhooks`` honours SIGTERM within its grace period."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.api.test_webhooks import wait_until
from tests.hostile.webhook_peers import deliveries, receiver, run_sender_once

ROOT = Path(__file__).resolve().parents[2]


def test_a_dripping_receiver_is_cut_at_the_deadline_and_holds_up_no_other_endpoint(make_api,
                                                                                   run_sender) -> None:
    api = make_api(webhook_timeout_s=2.0)
    with receiver("drip", drip_s=0.5) as drip, receiver() as fast:
        mallory, bob = api.owner(), api.owner()
        mallory_hook = mallory.client("operator").post("/v1/webhooks", json={"url": drip.url()}).json()
        bob.client("operator").post("/v1/webhooks", json={"url": fast.url()})
        run_sender(api)
        api.complete(mallory.conversion()["id"])
        wait_until(lambda: drip.requests and drip.open_connections)
        # Bob's conversion ends while Mallory's receiver is dripping: it is delivered meanwhile.
        api.complete(bob.conversion()["id"])
        wait_until(lambda: fast.requests)
        assert drip.sent < 60, "bob's webhook waited for the drip to end"
        # The drip is cut at the deadline (2 s), long before its 600 bytes (300 s) are out.
        log = wait_until(lambda: [d for d in mallory.client("read").get(
            f"/v1/webhooks/{mallory_hook['id']}/deliveries").json() if d["attempt_log"]])
        first = log[0]["attempt_log"][0]
        assert first["status_code"] is None and first["error"].startswith("Timeout")
        assert drip.sent < 60


def test_a_huge_answer_is_read_up_to_the_cap_and_dropped(make_api) -> None:
    api = make_api(webhook_max_response_bytes=64 * 1024)
    with receiver("huge", answer_bytes=400 * 2**20) as huge:
        owner = api.owner()
        owner.client("operator").post("/v1/webhooks", json={"url": huge.url()})
        api.complete(owner.conversion()["id"])
        run_sender_once(api)
        [(status, attempts, log)] = deliveries(api).values()
        assert (status, attempts, log) == ("delivered", 1, [["200", None]])
        wait_until(lambda: huge.open_connections == 0)
        # The sender hung up after the cap: the receiver could push only what the sockets' buffers hold.
        assert huge.sent < 32 * 2**20, huge.sent


def _sender_process(api, tmp_path: Path, **env: str) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "DATABASE_URL": api.db_url, "PYTHONPATH": str(ROOT),
                   "STAYLER_STATE_DIR": str(tmp_path / "state"), "STAYLER_STORAGE_DIR": str(api.settings.storage_root),
                   "STAYLER_WEBHOOK_ALLOW_PRIVATE": "true", "STAYLER_WEBHOOK_BACKOFF_BASE_S": "0.1",
                   "STAYLER_WEBHOOK_BACKOFF_MAX_S": "0.4", "STAYLER_LOG_FORMAT": "json", **env}
    log = (tmp_path / "sender.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "stayler.cli", "webhooks"], env=environment, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_the_sender_process_stays_small_under_a_400_mb_answer(api, tmp_path) -> None:
    with receiver("huge", answer_bytes=400 * 2**20) as huge, receiver() as calm:
        owner = api.owner()
        owner.client("operator").post("/v1/webhooks", json={"url": huge.url()})
        calm_owner = api.owner()
        calm_owner.client("operator").post("/v1/webhooks", json={"url": calm.url()})
        process = _sender_process(api, tmp_path)
        try:
            api.complete(calm_owner.conversion()["id"])
            wait_until(lambda: calm.requests or process.poll() is not None, timeout=60)  # the sender is up
            assert process.poll() is None, (tmp_path / "sender.log").read_text()
            baseline = _peak_rss_mib(process.pid)
            api.complete(owner.conversion()["id"])
            wait_until(lambda: len([d for d in deliveries(api).values() if d[0] == "delivered"]) == 2, timeout=60)
            peak = _peak_rss_mib(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        # abfa2b2 held the whole answer: 866 MiB. Now the answer costs at most the cap (64 KiB).
        assert peak - baseline < 50, (baseline, peak)


@pytest.mark.slow
def test_sigterm_stops_a_sender_that_is_talking_to_a_dripping_receiver(api, tmp_path) -> None:
    timeout_s = 3.0
    with receiver("drip", drip_s=1.0) as drip:
        owner = api.owner()
        owner.client("operator").post("/v1/webhooks", json={"url": drip.url()})
        process = _sender_process(api, tmp_path, STAYLER_WEBHOOK_TIMEOUT_S=str(timeout_s),
                                  STAYLER_SHUTDOWN_GRACE_S="5")
        try:
            api.complete(owner.conversion()["id"])
            wait_until(lambda: drip.open_connections, timeout=60)
            process.send_signal(signal.SIGTERM)
            # The drip would go on for 600 s; the sender stops within its deadline plus the grace period.
            # (the wait's own timeout is the ceiling: it raises when the sender outlives it)
            code = process.wait(timeout=timeout_s + 5 + 15)
            dripped = drip.sent
        finally:
            if process.poll() is None:
                process.kill()
        assert code == 0, (tmp_path / "sender.log").read_text()
        assert dripped < 600  # it stopped mid-drip (600 bytes at one a second), not after the drip ended
        with psycopg.connect(api.db_url, autocommit=True) as conn:
            attempts = conn.execute("SELECT count(*) FROM webhook_attempts").fetchone()
        assert attempts == (1,)  # the attempt in flight was recorded before the process left


@pytest.mark.slow
def test_one_dripping_endpoint_takes_one_slot_not_the_sender(make_api, run_sender) -> None:
    """Mallory's many deliveries queue behind each other; other owners keep getting theirs."""
    api = make_api(webhook_timeout_s=2.0, webhook_concurrency=2)
    with receiver("drip", drip_s=0.5) as drip, receiver() as fast:
        mallory, bob = api.owner(), api.owner()
        mallory.client("operator").post("/v1/webhooks", json={"url": drip.url()})
        bob.client("operator").post("/v1/webhooks", json={"url": fast.url()})
        for _ in range(3):
            api.complete(mallory.conversion()["id"])
        run_sender(api)
        wait_until(lambda: drip.open_connections)
        for _ in range(3):
            api.complete(bob.conversion()["id"])
        wait_until(lambda: len(fast.requests) == 3)
        assert drip.most_open == 1  # one POST at a time per endpoint: the other slot stayed Bob's
