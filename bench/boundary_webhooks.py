"""Boundary: healthy webhook deliveries while one receiver drips its answer (issue 19, row 3).

50 owners each have one endpoint on a loopback receiver that answers at once. The real sender
(:class:`api.webhooks.sender.Sender`, default limits) runs in a thread. Each round cancels one
conversion of every owner (the real terminal move, trigger and fan-out); a delivery's latency is from
the commit of its cancel to the receiver holding the POST. The run is made twice in the same process:
once with all 50 endpoints healthy, once with one of them replaced by a receiver that answers one byte
a second. The figure is the p99 of the 49 healthy endpoints' deliveries in each run, and their ratio
(target ≤ 1.2×: a dripping receiver holds one slot, never the others' deliveries).
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg

from bench.common import SMOKE, Row, Services, Sizes
from core.settings import Settings
from modelkit.samples import make_garment, make_person, to_bytes
from producer.accounts import create_user
from producer.conversions import cancel, submit
from producer.images import ImageLimits, register_image
from storage import LocalStorage

NAME = "boundary"
ENDPOINTS = 50
TARGET_RATIO = 1.2


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Arrivals:
    """A loopback receiver answering 204 at once; it notes when each conversion's POST arrived."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        arrivals = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                arrivals.seen[json.loads(body)["data"]["id"]] = time.monotonic()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def drip_receiver() -> Iterator[int]:
    """A receiver that reads each POST, then answers one byte a second until the sender hangs up."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 100_000:
                    if stop.is_set():
                        return
                    conn.sendall(bytes([byte]))
                    time.sleep(1.0)
            except OSError:
                return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        listener.close()


def _owners(conn: psycopg.Connection, storage: LocalStorage, settings: Settings, count: int,
            rounds: int) -> list[tuple[uuid.UUID, list[uuid.UUID]]]:
    """``count`` users with ``rounds`` queued conversions each."""
    limits = ImageLimits.from_settings(settings)
    person, garment = to_bytes(make_person(64, 64, seed=1).image), to_bytes(make_garment(seed=1))
    owners = []
    for _ in range(count):
        user = create_user(conn)
        p = register_image(conn, storage, person, owner_id=user, owner_type="user", image_type="user", limits=limits)
        g = register_image(conn, storage, garment, owner_id=user, owner_type="user", image_type="cloth",
                           limits=limits)
        owners.append((user, [submit(conn, user_image_id=p.id, cloth_image_id=g.id, user_id=user)
                              for _ in range(rounds)]))
    return owners


def _measure(services: Services, work: Path, rounds: int, with_drip: bool) -> list[float]:
    """Latencies (ms) of the healthy endpoints' deliveries in one run."""
    from api.webhooks.sender import Sender

    label = "drip" if with_drip else "calm"
    with services.fresh_database(f"wh_{label}") as db_url:
        settings = Settings(storage_dir=work / label, webhook_allow_private=True, webhook_max_endpoints=1)
        storage = LocalStorage(settings.storage_root)
        healthy = Arrivals()
        with drip_receiver() as drip_port, psycopg.connect(db_url, autocommit=True) as conn:
            owners = _owners(conn, storage, settings, ENDPOINTS, rounds)
            for i, (user, _) in enumerate(owners):
                port = drip_port if with_drip and i == 0 else healthy.port
                conn.execute("INSERT INTO webhook_endpoints (user_id, url, events, secret) "
                             "VALUES (%s, %s, ARRAY['conversion.cancelled'], %s)",
                             (user, f"http://127.0.0.1:{port}/hooks/{i}", uuid.uuid4().bytes * 2))
            sender = Sender(settings, db_url, storage=storage)
            stop = threading.Event()
            thread = threading.Thread(target=sender.run, args=(stop,), daemon=True)
            thread.start()
            ended: dict[str, float] = {}
            try:
                for r in range(rounds):
                    for i, (user, conversions) in enumerate(owners):
                        cancel(conn, conversions[r], user_id=user)
                        if not (with_drip and i == 0):
                            ended[str(conversions[r])] = time.monotonic()
                    time.sleep(0.5)
                deadline = time.monotonic() + 60
                while len(set(ended) & set(healthy.seen)) < len(ended) and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                stop.set()
                thread.join(timeout=30)
                sender.close()
                healthy.close()
        missing = set(ended) - set(healthy.seen)
        if missing:
            raise RuntimeError(f"{len(missing)} healthy webhooks were not delivered within 60 s")
        return [1000 * (healthy.seen[cid] - t) for cid, t in ended.items()]


def run(services: Services, sizes: Sizes) -> list[Row]:
    """Healthy deliveries' p99 with one dripping receiver among 50 endpoints vs. the same run without it."""
    rounds = 3 if sizes is SMOKE or sizes.repeats <= 1 else 10
    work = services.work_dir / "boundary_webhooks"
    # The two configurations alternate, ``sizes.repeats`` times each; each keeps its best run, so a load
    # spike from outside during one run does not decide the ratio.
    calm_runs, drip_runs = [], []
    for _ in range(max(1, sizes.repeats)):
        calm_runs.append(_measure(services, work, rounds, with_drip=False))
        drip_runs.append(_measure(services, work, rounds, with_drip=True))
    calm = min(calm_runs, key=lambda run_: _pct(run_, 0.99))
    dripping = min(drip_runs, key=lambda run_: _pct(run_, 0.99))
    calm_p99, drip_p99 = _pct(calm, 0.99), _pct(dripping, 0.99)
    ratio = drip_p99 / calm_p99 if calm_p99 > 0 else None
    note = (f"{len(calm)} / {len(dripping)} healthy deliveries, {rounds} rounds, best of {len(calm_runs)}; "
            f"medians {statistics.median(calm):.1f} / {statistics.median(dripping):.1f} ms")
    return [
        Row(NAME, f"webhook p99, {ENDPOINTS} healthy endpoints", calm_p99, "ms", note=note),
        Row(NAME, f"webhook p99, {ENDPOINTS - 1} healthy + 1 dripping (1 B/s)", drip_p99, "ms", ratio=ratio,
            ratio_of="of all healthy", target=f"≤ {TARGET_RATIO}×",
            met=None if ratio is None else ratio <= TARGET_RATIO, note=note),
    ]
