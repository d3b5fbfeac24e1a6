"""End to end with real worker processes: conversions submitted over HTTP, a worker SIGKILLed mid-job,
and still every conversion ends, can be waited for, downloaded, and is announced by exactly one webhook."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from api.webhooks.sender import Sender
from tests.api.test_webhooks import Receiver, wait_until
from tests.support.fleet import Env, kill_tree, stop

pytestmark = pytest.mark.e2e


@pytest.fixture
def fleet_env(db_url: str, redis_url: str, queue_name: str, tmp_path: Path) -> Iterator[Env]:
    (tmp_path / "storage").mkdir(exist_ok=True)
    (tmp_path / "logs").mkdir()
    env = Env(db_url, redis_url, queue_name, tmp_path / "storage", tmp_path / "logs")
    yield env
    for proc in env.fleets:
        stop(proc, timeout=20)
        kill_tree(proc.pid)


def _processing_pid(db_url: str) -> int | None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT worker_id FROM conversion_jobs WHERE status = 'processing' LIMIT 1").fetchone()
    return int(str(row[0]).split(":")[1]) if row and row[0] else None


@pytest.mark.slow  # a fleet run; the default suite keeps tests/e2e rescue of a killed worker
def test_nothing_is_lost_across_a_worker_sigkill(make_api, fleet_env: Env) -> None:
    api = make_api()
    receiver = Receiver()
    sender = Sender(api.settings, api.db_url, storage=api.storage)
    stop_sender = threading.Event()
    sender_thread = threading.Thread(target=sender.run, args=(stop_sender,), daemon=True)
    sender_thread.start()
    try:
        owner = api.owner()
        assert owner.client("operator").post("/v1/webhooks", json={"url": receiver.url}).status_code == 201
        person, garment = owner.image("user"), owner.image("cloth")
        ids = [owner.conversion(user_image_id=person, cloth_image_id=garment, style_name="slow")["id"]
               for _ in range(8)]
        fleet_env.start_fleet(STAYLER_FAILPOINTS="sleep=slow:1")
        fleet_env.start_fleet(STAYLER_FAILPOINTS="sleep=slow:1")
        pid = wait_until(lambda: _processing_pid(api.db_url), timeout=60)
        os.kill(pid, signal.SIGKILL)

        statuses = {cid: owner.client("read").get(f"/v1/conversions/{cid}", params={"wait": 60}).json()
                    for cid in ids}
        assert {c["status"] for c in statuses.values()} == {"completed"}, fleet_env.logs()
        assert max(c["attempts"] for c in statuses.values()) >= 2  # the killed worker's job was rescued
        for cid, body in statuses.items():
            image = owner.client("read").get(body["result"]["url"])
            assert image.status_code == 200 and len(image.content) > 100, cid
        wait_until(lambda: len(receiver.delivered()) >= len(ids), timeout=30)
        announced = [json.loads(m["body"])["data"]["id"] for m in receiver.delivered()]
        assert sorted(announced) == sorted(ids)
        with psycopg.connect(api.db_url, autocommit=True) as conn:
            rows = conn.execute("SELECT conversion_id, count(*) FROM webhook_events GROUP BY 1").fetchall()
        assert sorted(str(r[0]) for r in rows) == sorted(ids) and {r[1] for r in rows} == {1}
    finally:
        stop_sender.set()
        sender_thread.join(timeout=10)
        sender.close()
        receiver.close()
