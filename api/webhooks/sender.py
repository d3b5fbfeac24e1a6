"""The webhook sender (``stayler webhooks``): delivers the outbox at least once.

Due deliveries are claimed in a short transaction that counts the attempt and moves
``next_attempt_at`` ahead by a lease, then they are POSTed (several at once) outside any
transaction, then each attempt is recorded: delivered (2xx), or due again after exponential backoff
with jitter; a delivery older than STAYLER_WEBHOOK_RETRY_PERIOD_S fails, and an endpoint that has
failed for that whole period is disabled. Several senders may run: SKIP LOCKED and the lease keep
them apart.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from api.results import conversion_view, open_storage, result_links, url_ttl_s
from api.webhooks.signing import headers
from api.webhooks.urlguard import UrlRefusedError, check_url
from core.settings import Settings
from schema.queries import Q
from storage import Storage

log = logging.getLogger("stayler.webhooks")

CHANNEL = "stayler_webhooks"
BATCH = 20
PARALLEL = 8
#: Re-check for due retries at least this often when no NOTIFY arrives.
IDLE_WAIT_S = 1.0


def backoff_s(attempt: int, settings: Settings) -> float:
    """Delay before the next attempt: base × 2^(attempt-1), capped, with equal jitter."""
    delay = min(settings.webhook_backoff_max_s, settings.webhook_backoff_base_s * 2 ** max(0, attempt - 1))
    return delay * (0.5 + random.random() * 0.5)


def payload(conn: psycopg.Connection, delivery: dict[str, Any], storage: Storage, settings: Settings) -> bytes:
    """The event body: ``type``, ``timestamp`` and the conversion as ``GET /v1/conversions/{id}`` shows it."""
    row = None
    owner = conn.execute(Q.webhook_conversion_owner, {"conversion_id": delivery["conversion_id"]}).fetchone()
    if owner is not None:
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(Q.api_conversions_get_many, {"ids": [delivery["conversion_id"]], "user_id": owner[0],
                                                           "vendor_id": owner[1]}).fetchone()
    data: dict[str, Any] = {"id": str(delivery["conversion_id"])}
    if row is not None:
        view = conversion_view(row, result_links(row, storage, "", url_ttl_s(settings)))
        data = json.loads(view.model_dump_json())
    body = {"type": delivery["type"], "timestamp": delivery["event_created_at"].isoformat(), "data": data}
    return json.dumps(body, separators=(",", ":")).encode()


class Sender:
    """Claims due deliveries, posts them, records each attempt."""

    def __init__(self, settings: Settings, database_url: str, *, storage: Storage | None = None) -> None:
        """A sender for ``database_url``."""
        self.settings = settings
        self.url = database_url
        self.storage = storage or open_storage(settings)
        self.client = httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False,
                                   limits=httpx.Limits(max_connections=PARALLEL))
        self.pool = ThreadPoolExecutor(PARALLEL, thread_name_prefix="stayler-webhook")
        # A batch is posted PARALLEL at a time, each bounded by the timeout: the lease covers the batch.
        self.lease_s = settings.webhook_timeout_s * (BATCH // PARALLEL + 1) + 5

    def close(self) -> None:
        """Close the HTTP client and the posting threads."""
        self.pool.shutdown(wait=True)
        self.client.close()

    def run_once(self, conn: psycopg.Connection) -> int:
        """Deliver every due delivery (in batches); returns how many attempts were made."""
        made = 0
        while True:
            with conn.cursor(row_factory=dict_row) as cur:
                due = cur.execute(Q.webhook_delivery_claim, {"limit": BATCH, "lease_s": self.lease_s}).fetchall()
            bodies = [payload(conn, delivery, self.storage, self.settings) for delivery in due]
            # One slow endpoint must not hold up the others: the POSTs run side by side.
            outcomes = list(self.pool.map(self.post, due, bodies))
            for delivery, (status_code, latency_ms, error) in zip(due, outcomes, strict=True):
                self.record(conn, delivery, status_code, latency_ms, error)
            made += len(due)
            if len(due) < BATCH:
                return made

    def post(self, delivery: dict[str, Any], body: bytes) -> tuple[int | None, int, str | None]:
        """POST one signed delivery; returns (status code, latency ms, error or None)."""
        msg_id = f"msg_{delivery['event_id'].hex}"
        status_code: int | None = None
        error: str | None = None
        start = time.perf_counter()
        try:
            check_url(delivery["url"], allow_private=self.settings.webhook_allow_private)
            response = self.client.post(delivery["url"], content=body,
                                        headers=headers(bytes(delivery["secret"]), msg_id, body))
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except UrlRefusedError as exc:
            error = f"refused: {exc}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
        return status_code, int((time.perf_counter() - start) * 1000), error

    def record(self, conn: psycopg.Connection, delivery: dict[str, Any], status_code: int | None,
               latency_ms: int, error: str | None) -> None:
        """Write the attempt and the delivery's (and endpoint's) new state in one transaction."""
        ids = {"delivery_id": delivery["id"], "endpoint_id": delivery["endpoint_id"]}
        period = self.settings.webhook_retry_period_s
        with conn.transaction():
            conn.execute(Q.webhook_attempt_record, {"delivery_id": delivery["id"], "attempt": delivery["attempts"],
                                                    "status_code": status_code, "latency_ms": latency_ms,
                                                    "error": error})
            if error is None:
                conn.execute(Q.webhook_delivery_delivered, ids)
                log.info("webhook delivered", extra={"delivery_id": str(delivery["id"]), "status": status_code})
                return
            row = conn.execute(Q.webhook_endpoint_mark_failing, {**ids, "period_s": period}).fetchone()
            if row is not None and row[0]:
                conn.execute(Q.webhook_endpoint_disable, {**ids, "reason": f"failing for {period:g} s: {error}"})
                log.warning("webhook endpoint disabled", extra={"endpoint_id": str(delivery["endpoint_id"])})
                return
            conn.execute(Q.webhook_delivery_retry, {**ids, "period_s": period,
                                                    "delay_s": backoff_s(delivery["attempts"], self.settings)})
            log.info("webhook attempt failed", extra={"delivery_id": str(delivery["id"]), "error": error})

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set: woken by NOTIFY, and at least every ``IDLE_WAIT_S`` for retries."""
        while not stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not stop.is_set():
                        self.run_once(conn)
                        for _ in conn.notifies(timeout=IDLE_WAIT_S, stop_after=1):
                            pass
            except psycopg.OperationalError as exc:
                log.warning("webhook sender lost the database: %s", type(exc).__name__)
                stop.wait(1.0)
            except Exception:
                # A bug or a row deleted under us: claimed deliveries come due again when their lease ends.
                log.exception("webhook sender error; continuing")
                stop.wait(1.0)
