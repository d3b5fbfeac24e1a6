"""The webhook sender (``stayler webhooks``): fans events out and delivers them at least once.

Each round first fans new events out into deliveries (one per subscribed endpoint, written here rather
than in the transaction that ended the conversion), then claims due deliveries, at most one per
endpoint and none of an endpoint that already has a POST in flight in this process, for the free
slots of ``STAYLER_WEBHOOK_CONCURRENCY``. The claim counts the attempt and moves ``next_attempt_at``
ahead by a lease; the POSTs run on their own threads, each to the addresses the URL guard resolved
and checked, under one deadline (:mod:`api.webhooks.transport`). Each outcome is recorded on its own
as soon as it is known: delivered (2xx), or due again after exponential backoff with jitter; a delivery
older than STAYLER_WEBHOOK_RETRY_PERIOD_S fails, and an endpoint that has failed for that whole period
is disabled. A slow or dripping receiver therefore holds one slot for at most one deadline and never
delays another endpoint's deliveries. A delivery whose message cannot be built fails alone.
Several senders may run: SKIP LOCKED and the lease keep them apart. The sender works on one
connection that also LISTENs for new events (:func:`schema.listen.keep_listening`: the direct URL when
one is configured; behind a transaction pooler it does not LISTEN and looks every ``IDLE_WAIT_S``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import ssl
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from api.results import conversion_view, open_storage, result_links, url_ttl_s
from api.webhooks.resolver import Resolver
from api.webhooks.secretbox import SecretBox, SecretKeyError
from api.webhooks.signing import headers
from api.webhooks.transport import DeliveryError, post
from api.webhooks.urlguard import UrlRefusedError, parse_url, resolve_checked
from core.backoff import Backoff
from core.settings import Settings
from schema import channels
from schema.listen import Listener, keep_listening
from schema.queries import Q
from storage import Storage

log = logging.getLogger("stayler.webhooks")

#: Events fanned out per statement.
FAN_OUT_BATCH = 100
#: Re-check for due retries at least this often when no NOTIFY arrives.
IDLE_WAIT_S = 1.0
#: Secrets re-encrypted per statement when keys rotate.
REWRAP_BATCH = 500
#: Waits before connecting again after the database was lost or a round failed: 1 s each time.
RECONNECT = Backoff(first_s=1.0, max_s=1.0)


def backoff_s(attempt: int, settings: Settings) -> float:
    """Delay before the next attempt: base × 2^(attempt-1), capped, with equal jitter."""
    delay = min(settings.webhook_backoff_max_s, settings.webhook_backoff_base_s * 2 ** max(0, attempt - 1))
    return delay * (0.5 + random.random() * 0.5)


def payload(conn: psycopg.Connection, delivery: dict[str, Any], storage: Storage, settings: Settings) -> bytes:
    """The event body: ``type``, ``timestamp`` and the conversion as ``GET /v1/conversions/{id}`` shows it."""
    row = None
    owner = conn.execute(Q.conversion_get_owner, {"conversion_id": delivery["conversion_id"]}).fetchone()
    if owner is not None:
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(Q.conversion_get_many_owned, {"ids": [delivery["conversion_id"]], "user_id": owner[0],
                                                           "vendor_id": owner[1]}).fetchone()
    data: dict[str, Any] = {"id": str(delivery["conversion_id"])}
    if row is not None:
        view = conversion_view(row, result_links(row, storage, "", url_ttl_s(settings)))
        data = json.loads(view.model_dump_json())
    body = {"type": delivery["type"], "timestamp": delivery["event_created_at"].isoformat(), "data": data}
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Outcome:
    """One attempt's result: the status code (None without an answer), latency, error (None = delivered)."""

    status_code: int | None
    latency_ms: int
    error: str | None


class Sender:
    """Fans out events, claims due deliveries, posts them side by side, records each attempt on its own."""

    def __init__(self, settings: Settings, database_url: str, *, storage: Storage | None = None,
                 resolver: Resolver | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        """A sender for ``database_url``; ``resolver`` and ``ssl_context`` default to the system's."""
        self.settings = settings
        self.url = database_url
        self.storage = storage or open_storage(settings)
        self.concurrency = settings.webhook_concurrency
        self.resolver = resolver or Resolver(threads=self.concurrency)
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.box = SecretBox.from_setting(settings.secret_keys.get_secret_value())
        self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="stayler-webhook")
        self.inflight: dict[Future[Outcome], dict[str, Any]] = {}
        # A POST is sent right after its claim and ends within the resolve and request deadlines.
        self.lease_s = settings.webhook_resolve_timeout_s + settings.webhook_timeout_s + 5
        self._rewrapped = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def close(self) -> None:
        """Stop the posting threads (each ends within its deadline) and the resolver."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.resolver.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self, _future: Future[Outcome]) -> None:
        with contextlib.suppress(OSError):  # the pipe is full (already woken) or closed
            os.write(self._wake_w, b"x")

    def step(self, conn: psycopg.Connection) -> int:
        """Record finished POSTs, fan out new events, claim and start due deliveries; returns how many started."""
        self.record_finished(conn)
        while conn.execute(Q.webhook_fan_out, {"batch_size": FAN_OUT_BATCH}).fetchone() == (FAN_OUT_BATCH,):
            pass
        free = self.concurrency - len(self.inflight)
        if free <= 0:
            return 0
        busy = [d["endpoint_id"] for d in self.inflight.values()]
        with conn.cursor(row_factory=dict_row) as cur:
            due = cur.execute(Q.webhook_delivery_claim, {"limit": free, "lease_s": self.lease_s,
                                                         "busy": busy}).fetchall()
        for delivery in due:
            try:
                key = self.box.open(bytes(delivery["secret"]))
            except SecretKeyError as exc:  # a configuration fault: retried, so a key put back recovers it
                self.record(conn, delivery, Outcome(None, 0, f"secret cannot be decrypted: {exc}"))
                continue
            try:
                body = payload(conn, delivery, self.storage, self.settings)
            except psycopg.OperationalError:
                raise
            except Exception as exc:  # this delivery cannot be built: it fails alone
                self.fail_unbuildable(conn, delivery, exc)
                continue
            future = self.pool.submit(self.post, delivery, body, key)
            self.inflight[future] = delivery
            future.add_done_callback(self._wake)
        return len(due)

    def record_finished(self, conn: psycopg.Connection) -> int:
        """Record every POST that has ended; returns how many."""
        done = [f for f in self.inflight if f.done()]
        for future in done:
            delivery = self.inflight.pop(future)
            try:
                outcome = future.result()
            except Exception as exc:  # a bug in posting: counted as a failed attempt
                outcome = Outcome(None, 0, f"{type(exc).__name__}: {str(exc)[:200]}")
            self.record(conn, delivery, outcome)
        return len(done)

    def run_once(self, conn: psycopg.Connection) -> int:
        """Deliver every due delivery and wait for all of them; returns how many attempts were made."""
        made = 0
        while True:
            started = self.step(conn)
            made += started
            if not self.inflight:
                if not started:
                    return made
                continue
            wait(list(self.inflight), return_when=FIRST_COMPLETED)

    def post(self, delivery: dict[str, Any], body: bytes, key: bytes) -> Outcome:
        """Resolve and check the URL once, then POST the signed delivery to a checked address."""
        msg_id = f"msg_{delivery['event_id'].hex}"
        start = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        try:
            target = parse_url(delivery["url"])
            addresses = resolve_checked(target, self.resolver, timeout_s=self.settings.webhook_resolve_timeout_s,
                                        allow_private=self.settings.webhook_allow_private)
            status_code = post(target, addresses, body, headers(key, msg_id, body),
                               timeout_s=self.settings.webhook_timeout_s,
                               max_response_bytes=self.settings.webhook_max_response_bytes,
                               ssl_context=self.ssl_context)
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except UrlRefusedError as exc:
            error = f"refused: {exc}"
        except DeliveryError as exc:
            error = str(exc)[:300]
        return Outcome(status_code, int((time.perf_counter() - start) * 1000), error)

    def fail_unbuildable(self, conn: psycopg.Connection, delivery: dict[str, Any], exc: BaseException) -> None:
        """A delivery whose message cannot be built: one attempt recorded, the delivery failed for good."""
        error = f"message not built: {type(exc).__name__}"
        log.warning("webhook delivery failed: its message cannot be built",
                    extra={"delivery_id": str(delivery["id"]), "error": type(exc).__name__})
        try:
            with conn.transaction():
                conn.execute(Q.webhook_attempt_record, {"delivery_id": delivery["id"], "attempt": delivery["attempts"],
                                                        "status_code": None, "latency_ms": 0, "error": error})
                conn.execute(Q.webhook_delivery_fail, {"delivery_id": delivery["id"]})
        except psycopg.OperationalError:
            raise
        except psycopg.Error:
            log.exception("webhook delivery outcome not recorded", extra={"delivery_id": str(delivery["id"])})

    def record(self, conn: psycopg.Connection, delivery: dict[str, Any], outcome: Outcome) -> None:
        """Write the attempt and the delivery's (and endpoint's) new state in a transaction of its own.

        A failure here (the endpoint was deleted meanwhile, say) is logged and touches no other delivery.
        """
        try:
            self._record(conn, delivery, outcome)
        except psycopg.OperationalError:
            raise
        except psycopg.Error:
            log.exception("webhook delivery outcome not recorded", extra={"delivery_id": str(delivery["id"])})

    def _record(self, conn: psycopg.Connection, delivery: dict[str, Any], outcome: Outcome) -> None:
        ids = {"delivery_id": delivery["id"], "endpoint_id": delivery["endpoint_id"]}
        period = self.settings.webhook_retry_period_s
        with conn.transaction():
            conn.execute(Q.webhook_attempt_record, {"delivery_id": delivery["id"], "attempt": delivery["attempts"],
                                                    "status_code": outcome.status_code,
                                                    "latency_ms": outcome.latency_ms, "error": outcome.error})
            if outcome.error is None:
                conn.execute(Q.webhook_delivery_mark_delivered, ids)
                log.info("webhook delivered", extra={"delivery_id": str(delivery["id"]),
                                                     "status": outcome.status_code})
                return
            row = conn.execute(Q.webhook_endpoint_mark_failing, {**ids, "period_s": period}).fetchone()
            if row is not None and row[0]:
                conn.execute(Q.webhook_endpoint_disable, {**ids, "reason": f"failing for {period:g} s: "
                                                                          f"{outcome.error}"})
                log.warning("webhook endpoint disabled", extra={"endpoint_id": str(delivery["endpoint_id"])})
                return
            conn.execute(Q.webhook_delivery_retry, {**ids, "period_s": period,
                                                    "delay_s": backoff_s(delivery["attempts"], self.settings)})
            log.info("webhook attempt failed", extra={"delivery_id": str(delivery["id"]), "error": outcome.error})

    def rewrap_secrets(self, conn: psycopg.Connection) -> int:
        """Encrypt every plaintext secret, and re-encrypt those under an older key, with the first key."""
        if not self.box.keys:
            return 0
        after, done = uuid.UUID(int=0), 0
        while True:
            rows = conn.execute(Q.webhook_endpoint_list_secrets_to_rewrap, {"prefix": self.box.primary, "after": after,
                                                               "limit": REWRAP_BATCH}).fetchall()
            for endpoint_id, stored in rows:
                try:
                    sealed = self.box.seal(self.box.open(bytes(stored)))
                except ValueError as exc:
                    log.warning("webhook secret not re-encrypted: %s", exc, extra={"endpoint_id": str(endpoint_id)})
                    continue
                done += conn.execute(Q.webhook_endpoint_rewrap_secret, {"id": endpoint_id, "old": stored,
                                                               "new": sealed}).rowcount
            if len(rows) < REWRAP_BATCH:
                if done:
                    log.info("webhook secrets re-encrypted under the first STAYLER_SECRET_KEYS key: %d", done)
                return done
            after = rows[-1][0]

    def _wait(self, listener: Listener, timeout_s: float) -> None:
        """Sleep until a NOTIFY, a finished POST or ``timeout_s``; consumes what woke it.

        A NOTIFY that arrived while a statement ran was read off the socket with the statement's results
        (psycopg queues it), so the socket alone would not show it: such a round starts again at once.
        """
        listener.wait(timeout_s, wake_fds=(self._wake_r,))
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def drain(self, conn: psycopg.Connection | None, grace_s: float) -> None:
        """On shutdown: wait up to ``grace_s`` for the POSTs in flight and record them (others come due again)."""
        if self.inflight:
            wait(list(self.inflight), timeout=grace_s)
        if conn is not None and not conn.closed:
            try:
                self.record_finished(conn)
            except psycopg.Error:
                log.warning("webhook outcomes not recorded at shutdown; they are delivered again")
        self.inflight.clear()

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set: woken by NOTIFY, by a finished POST, and at least every ``IDLE_WAIT_S``.

        When ``stop`` is set no more deliveries are claimed; the POSTs in flight (each bounded by its
        deadline) are recorded within ``STAYLER_SHUTDOWN_GRACE_S``.
        """
        if not self.box.keys:
            log.warning("STAYLER_SECRET_KEYS is not set: webhook signing secrets are stored unencrypted")
        keep_listening(self.settings, "webhooks", (channels.WEBHOOKS,), lambda listener: self._serve(listener, stop),
                       stop, backoff=RECONNECT, url=self.url, poll_s=IDLE_WAIT_S, on_error=self._on_error)

    def _serve(self, listener: Listener, stop: threading.Event) -> None:
        """Rewrap the secrets once per process, then deliver on ``listener`` until ``stop`` is set."""
        conn = listener.conn
        if not self._rewrapped:
            self._rewrapped = True
            try:
                self.rewrap_secrets(conn)
            except psycopg.OperationalError:
                self._rewrapped = False
                raise
            except psycopg.Error:  # the rotation waits for the next start; delivery does not
                log.exception("webhook secrets not re-encrypted")
        while not stop.is_set():
            self.step(conn)
            self._wait(listener, IDLE_WAIT_S)
        self.drain(conn, self.settings.shutdown_grace_s)

    @staticmethod
    def _on_error(exc: Exception) -> None:
        if isinstance(exc, psycopg.OperationalError):
            # POSTs in flight go on; their outcomes are recorded on the next connection.
            log.warning("webhook sender lost the database: %s", type(exc).__name__)
        else:
            # A bug or a row deleted under us: claimed deliveries come due again when their lease ends.
            log.exception("webhook sender error; continuing", exc_info=exc)
