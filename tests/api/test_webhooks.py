"""Webhooks: endpoints over HTTP, the outbox written with the terminal status, signed deliveries to a
real HTTP receiver, redelivery after failures, and endpoints disabled after the retry period."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from api.webhooks.sender import Sender
from api.webhooks.signing import verify
from tests.api.conftest import problem_type, scalar


class Receiver:
    """An HTTP server that records every POST and answers with the next status of a script."""

    def __init__(self, statuses: list[int] | None = None, delay_s: float = 0.0,
                 gate: threading.Event | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.statuses = list(statuses or [])
        #: POSTs that reached the handler (counted before the gate: a request held open counts).
        self.arrived = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.arrived += 1
                if gate is not None:
                    gate.wait(30)  # held open until the test opens the gate
                time.sleep(delay_s)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.messages.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                                          "status": status})
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/stayler"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def delivered(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if 200 <= m["status"] < 300]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def run_sender():
    started: list[tuple[threading.Event, threading.Thread, Sender]] = []

    def start(api) -> Sender:
        sender = Sender(api.settings, api.db_url, storage=api.storage)
        stop = threading.Event()
        thread = threading.Thread(target=sender.run, args=(stop,), daemon=True)
        thread.start()
        started.append((stop, thread, sender))
        return sender

    yield start
    for stop, thread, sender in started:
        stop.set()
        thread.join(timeout=10)
        sender.close()


def wait_until(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def spec_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """Standard Webhooks, written out independently of api.webhooks.signing."""
    key = base64.b64decode(secret.split("_", 1)[1])
    mac = hmac.new(key, msg_id.encode() + b"." + timestamp.encode() + b"." + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def test_a_completion_is_delivered_signed(api, receiver, run_sender) -> None:
    owner = api.owner()
    created = owner.client("operator").post("/v1/webhooks", json={"url": receiver.url})
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["secret"].startswith("whsec_") and len(base64.b64decode(endpoint["secret"][6:])) >= 24
    assert endpoint["events"] == ["conversion.completed", "conversion.failed", "conversion.cancelled"]
    assert "secret" not in owner.client("read").get("/v1/webhooks").json()[0]
    run_sender(api)
    conversion = owner.conversion()
    api.complete(conversion["id"])
    [message] = wait_until(receiver.delivered)
    headers, body = message["headers"], message["body"]
    assert headers["webhook-signature"] == spec_signature(endpoint["secret"], headers["webhook-id"],
                                                          headers["webhook-timestamp"], body)
    assert verify(endpoint["secret"], headers, body)
    assert not verify(endpoint["secret"], headers, body + b" ")
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 30
    event = json.loads(body)
    assert event["type"] == "conversion.completed"
    assert event["data"]["id"] == conversion["id"] and event["data"]["status"] == "completed"
    assert event["data"]["result"]["url"] == f"/v1/conversions/{conversion['id']}/result"
    log = wait_until(lambda: [d for d in owner.client("read").get(
        f"/v1/webhooks/{endpoint['id']}/deliveries").json() if d["status"] == "delivered"])
    assert log[0]["attempts"] == 1 and log[0]["attempt_log"][0]["status_code"] == 200
    assert log[0]["conversion_id"] == conversion["id"] and log[0]["type"] == "conversion.completed"
    assert headers["webhook-id"] == f"msg_{uuid.UUID(log[0]['event_id']).hex}"


def test_failed_and_cancelled_events_and_subscriptions(api, receiver, run_sender) -> None:
    owner = api.owner()
    owner.client("operator").post("/v1/webhooks", json={"url": receiver.url,
                                                        "events": ["conversion.failed", "conversion.cancelled"]})
    run_sender(api)
    done, failed, cancelled = owner.conversion(), owner.conversion(), owner.conversion()
    api.complete(done["id"])
    api.fail(failed["id"])
    owner.client().post(f"/v1/conversions/{cancelled['id']}/cancel")
    wait_until(lambda: len(receiver.delivered()) >= 2)
    time.sleep(0.5)
    events = {json.loads(m["body"])["type"]: json.loads(m["body"])["data"] for m in receiver.delivered()}
    assert set(events) == {"conversion.failed", "conversion.cancelled"}
    assert events["conversion.failed"]["error_type"] == "invalid_image"
    assert events["conversion.cancelled"]["id"] == cancelled["id"]


def test_redelivery_after_the_receiver_fails(api, run_sender) -> None:
    receiver = Receiver([500, 503])
    try:
        owner = api.owner()
        endpoint = owner.client("operator").post("/v1/webhooks", json={"url": receiver.url}).json()
        run_sender(api)
        api.complete(owner.conversion()["id"])
        wait_until(receiver.delivered)
        assert [m["status"] for m in receiver.messages] == [500, 503, 200]
        assert len({m["headers"]["webhook-id"] for m in receiver.messages}) == 1
        [delivery] = owner.client("read").get(f"/v1/webhooks/{endpoint['id']}/deliveries").json()
        assert delivery["status"] == "delivered" and delivery["attempts"] == 3
        assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 503, 200]
        assert delivery["attempt_log"][0]["error"] == "HTTP 500"
        assert all(a["latency_ms"] is not None for a in delivery["attempt_log"])
        assert owner.client("read").get("/v1/webhooks").json()[0]["failing_since"] is None
    finally:
        receiver.close()


def test_a_dead_receiver_is_retried_then_its_endpoint_disabled(make_api, run_sender) -> None:
    api = make_api(webhook_retry_period_s=1.5)
    receiver = Receiver()
    receiver.close()  # nothing listens on its port any more: connection refused
    owner = api.owner()
    endpoint = owner.client("operator").post("/v1/webhooks", json={"url": receiver.url}).json()
    run_sender(api)
    api.complete(owner.conversion()["id"])
    listed = wait_until(lambda: [e for e in owner.client("read").get("/v1/webhooks").json() if not e["enabled"]])
    assert listed[0]["disabled_at"] and "failing for" in listed[0]["disabled_reason"]
    [delivery] = owner.client("read").get(f"/v1/webhooks/{endpoint['id']}/deliveries").json()
    assert delivery["status"] == "failed" and delivery["attempts"] >= 3
    assert all(a["status_code"] is None and "Connect" in a["error"] for a in delivery["attempt_log"])
    # A disabled endpoint gets nothing more.
    api.complete(owner.conversion()["id"])
    time.sleep(0.5)
    assert len(owner.client("read").get(f"/v1/webhooks/{endpoint['id']}/deliveries").json()) == 1


def test_the_outbox_is_written_in_the_terminal_transaction(api, receiver) -> None:
    owner = api.owner()
    owner.client("operator").post("/v1/webhooks", json={"url": receiver.url})
    conversion = owner.conversion()
    cid = uuid.UUID(conversion["id"])
    with psycopg.connect(api.db_url) as conn:
        conn.execute("SELECT update_conversion_status(conversion_id := %s, status := 'failed', "
                     "error_message := 'x', error_type := 'internal')", (cid,))
        # One event row, whatever the number of endpoints: the sender writes the deliveries (0400).
        assert scalar(conn, "SELECT count(*) FROM webhook_events") == 1
        assert scalar(conn, "SELECT count(*) FROM webhook_deliveries") == 0
        conn.rollback()
        assert scalar(conn, "SELECT count(*) FROM webhook_events") == 0
    api.fail(conversion["id"])
    with psycopg.connect(api.db_url) as conn:
        assert conn.execute("SELECT type FROM webhook_events WHERE conversion_id = %s", (cid,)).fetchall() == [
            ("conversion.failed",)]


def test_endpoint_management_and_isolation(api, receiver) -> None:
    alice, bob = api.owner(), api.owner()
    endpoint = alice.client("operator").post("/v1/webhooks", json={"url": receiver.url}).json()
    assert [e["id"] for e in alice.client("read").get("/v1/webhooks").json()] == [endpoint["id"]]
    assert bob.client("read").get("/v1/webhooks").json() == []
    for response in (bob.client("read").get(f"/v1/webhooks/{endpoint['id']}/deliveries"),
                     bob.client("operator").delete(f"/v1/webhooks/{endpoint['id']}")):
        assert response.status_code == 404 and problem_type(response) == "webhook_not_found"
    assert alice.client("operator").delete(f"/v1/webhooks/{endpoint['id']}").status_code == 204
    gone = alice.client("operator").delete(f"/v1/webhooks/{endpoint['id']}")
    assert gone.status_code == 404
    bad_event = alice.client("operator").post("/v1/webhooks", json={"url": receiver.url, "events": ["x"]})
    assert bad_event.status_code == 422 and problem_type(bad_event) == "validation_error"


def test_private_and_odd_urls_are_refused_in_production(make_api) -> None:
    api = make_api(webhook_allow_private=False)
    owner = api.owner()
    for url in ("http://127.0.0.1:9/x", "http://localhost/x", "http://10.1.2.3/x", "http://169.254.169.254/latest",
                "http://[::1]/x", "http://192.168.0.10/x", "ftp://example.com/x", "http://user:pw@example.com/",
                "http://no-such-host.invalid/x", "not a url"):
        response = owner.client("operator").post("/v1/webhooks", json={"url": url})
        assert response.status_code == 422, (url, response.text)
        assert problem_type(response) == "webhook_url_refused"


def test_a_sender_that_dies_mid_post_leaves_the_delivery_due_again(api, receiver, run_sender) -> None:
    from schema.queries import Q

    owner = api.owner()
    owner.client("operator").post("/v1/webhooks", json={"url": receiver.url})
    api.complete(owner.conversion()["id"])
    with psycopg.connect(api.db_url, autocommit=True) as conn:  # a sender claims, then is SIGKILLed
        conn.execute(Q.webhook_fan_out, {"batch_size": 100})
        [claimed] = conn.execute(Q.webhook_delivery_claim, {"limit": 10, "lease_s": 1.0, "busy": []}).fetchall()
    run_sender(api)
    [message] = wait_until(receiver.delivered)

    def recorded() -> tuple[str, int] | None:  # the receiver has the message before the sender has its answer
        with psycopg.connect(api.db_url, autocommit=True) as conn:
            row = conn.execute("SELECT status, attempts FROM webhook_deliveries").fetchone()
        return row if row is not None and row[0] != "pending" else None

    assert wait_until(recorded) == ("delivered", 2)
    assert message["headers"]["webhook-id"] == f"msg_{claimed[6].hex}"


def test_a_slow_endpoint_does_not_hold_up_the_others(make_api, run_sender) -> None:
    api = make_api(webhook_timeout_s=20.0)
    slow_gate, fast_gate = threading.Event(), threading.Event()
    slow, fast = Receiver(gate=slow_gate), Receiver(gate=fast_gate)
    try:
        alice, bob = api.owner(), api.owner()
        alice.client("operator").post("/v1/webhooks", json={"url": slow.url})
        bob.client("operator").post("/v1/webhooks", json={"url": fast.url})
        api.complete(alice.conversion()["id"])
        api.complete(bob.conversion()["id"])
        run_sender(api)
        # Counted, not timed: both POSTs are open at once while both endpoints hold them, which a
        # sender posting one at a time never reaches; then the fast one answers while the slow one
        # still holds its request.
        wait_until(lambda: slow.arrived == 1 and fast.arrived == 1)
        fast_gate.set()
        wait_until(fast.delivered)
        assert slow.arrived == 1 and not slow.delivered()
        slow_gate.set()
        wait_until(slow.delivered)
    finally:
        slow_gate.set()
        fast_gate.set()
        slow.close()
        fast.close()
