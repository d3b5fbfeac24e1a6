"""7. The HTTP API: ``POST /v1/conversions`` at 50 concurrent clients, ``GET ?wait`` completions, and the
Python producer's rate in the same run.

The API runs as its own process (``stayler api``, one uvicorn process) so the load generator (asyncio,
50 keep-alive connections, in this process) does not share its interpreter. Submits: every client posts
one conversion after another until the total is reached; rate = total / wall time, latency per request.
Waiting: conversions are created first, 50 clients each hold ``?wait=60`` on their share (one at a
time), then a null-model fleet runs them; the latency is from the conversion's ``completed_at`` (the
commit that sends the NOTIFY) to the waiting client holding the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import psycopg

from bench.common import Row, Services, Sizes, Workload, fleet, free_port

NAME = "api"
CLIENTS = 50


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.contextmanager
def api_server(db_url: str, work: Path) -> Iterator[str]:
    """``stayler api`` on a free loopback port for the block; yields its base URL."""
    port = free_port()
    env = dict(os.environ)
    env.update({"DATABASE_URL": db_url, "STAYLER_STORAGE_DIR": str(work / "storage"), "STAYLER_LOG_LEVEL": "WARNING",
                "STAYLER_STATE_DIR": str(work / "state"), "STAYLER_API_DB_POOL_SIZE": "20",
                # the API's speed is measured, not its rate limit and quota
                "STAYLER_API_RATE_PER_S": "0", "STAYLER_API_QUOTA_FREE_PER_DAY": "0"})
    env.pop("STAYLER_STORAGE_URL", None)
    log = (work / "api.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "stayler.cli", "api", "--port", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("stayler api did not start: " + (work / "api.log").read_text()[-2000:])
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class RawConnection:
    """One keep-alive HTTP/1.1 connection written by hand: httpx costs the load generator ~6 ms of CPU
    per request, more than the server under test on these 2 cores; this costs a fraction of that."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, key: str) -> None:
        self.reader, self.writer = reader, writer
        self.head = f"Host: {host}\r\nAuthorization: Bearer {key}\r\n"

    @classmethod
    async def open(cls, base: str, key: str) -> RawConnection:
        """Connect to ``base`` (``http://host:port``)."""
        host = base.removeprefix("http://")
        name, port = host.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(name, int(port))
        return cls(reader, writer, host, key)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request and read its whole response; returns (status, body)."""
        extra = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n" if body else ""
        self.writer.write(f"{method} {path} HTTP/1.1\r\n{self.head}{extra}\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        """Close the connection."""
        self.writer.close()


async def _submit_all(base: str, key: str, body: dict[str, str], total: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    remaining = total
    payload = json.dumps(body).encode()
    conns = [await RawConnection.open(base, key) for _ in range(CLIENTS)]

    async def one_client(conn: RawConnection) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            status, answer = await conn.request("POST", "/v1/conversions", payload)
            latencies.append(time.perf_counter() - t0)
            if status != 202:
                raise RuntimeError(f"POST /v1/conversions answered {status}: {answer[:200]!r}")

    start = time.perf_counter()
    try:
        await asyncio.gather(*(one_client(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    return time.perf_counter() - start, latencies


async def _wait_all(base: str, key: str, ids: list[str], ready: asyncio.Event) -> dict[str, float]:
    answered: dict[str, float] = {}
    conns = [await RawConnection.open(base, key) for _ in range(CLIENTS)]

    async def one_client(conn: RawConnection, share: list[str]) -> None:
        for i, cid in enumerate(share):
            if i == 0:
                ready.set()
            status, answer = await conn.request("GET", f"/v1/conversions/{cid}?wait=60")
            if status != 200 or json.loads(answer).get("status") != "completed":
                raise RuntimeError(f"conversion {cid} not completed after ?wait=60: {status}")
            answered[cid] = time.time()

    try:
        await asyncio.gather(*(one_client(c, ids[i::CLIENTS]) for i, c in enumerate(conns)))
    finally:
        for c in conns:
            c.close()
    return answered


def run(svc: Services, sizes: Sizes) -> list[Row]:
    """Measure submits and waits through HTTP, and the producer's rate, on one fresh database."""
    from api.keys import create_key

    total = sizes.enqueue_single
    waits = max(CLIENTS, total // 10)
    work = svc.work_dir / "api"
    work.mkdir(parents=True, exist_ok=True)
    with svc.fresh_database("api") as url, psycopg.connect(url, autocommit=True) as conn:
        load = Workload(conn, work / "storage", sizes.null_person_size)
        _, key = create_key(conn, scope="producer", user_id=load.user)
        body = {"user_image_id": str(load.person), "cloth_image_id": str(load.garment)}
        t0 = time.perf_counter()
        for _ in range(total):
            load.submit_one()
        producer_rate = total / (time.perf_counter() - t0)
        with api_server(url, work) as base:
            asyncio.run(_submit_all(base, key, body, CLIENTS))  # warm the pool and the connections
            seconds, latencies = asyncio.run(_submit_all(base, key, body, total))
    with svc.fresh_database("apiwait") as url, psycopg.connect(url, autocommit=True) as conn:
        load = Workload(conn, work / "storage", sizes.null_person_size)
        _, key = create_key(conn, scope="read", user_id=load.user)
        ids = [str(load.submit_one()) for _ in range(waits)]
        with api_server(url, work) as base:
            answered = asyncio.run(_wait_with_fleet(svc, url, work, base, key, ids))
        done: dict[str, datetime] = dict(conn.execute("SELECT conversion_id::text, completed_at FROM conversion_jobs "
                                 "WHERE conversion_id = ANY(%s::uuid[])", ([uuid.UUID(i) for i in ids],)).fetchall())
    wake = [max(0.0, answered[cid] - _epoch(done[cid])) for cid in ids]
    http_rate = total / seconds
    span = max(answered.values()) - min(_epoch(d) for d in done.values())
    return [
        Row(NAME, f"POST /v1/conversions, {CLIENTS} concurrent clients, 1 uvicorn process", http_rate, "conv/s",
            ratio=http_rate / producer_rate, ratio_of="producer.submit",
            note=f"{total:,} requests; p50 {_pct(latencies, 0.5) * 1000:.1f} ms, "
                 f"p99 {_pct(latencies, 0.99) * 1000:.1f} ms"),
        Row(NAME, "  its latency p50", _pct(latencies, 0.5) * 1000, "ms"),
        Row(NAME, "  its latency p99", _pct(latencies, 0.99) * 1000, "ms"),
        Row(NAME, "producer.submit in the same run, one transaction each", producer_rate, "conv/s",
            note=f"{total:,} conversions"),
        Row(NAME, f"GET ?wait=60 completions, {CLIENTS} waiting clients (null model, 1 proc × 2 thr)",
            len(ids) / span if span > 0 else None, "conv/s",
            note=f"{len(ids):,} conversions; completed_at → answer p50 {_pct(wake, 0.5) * 1000:.1f} ms, "
                 f"p99 {_pct(wake, 0.99) * 1000:.1f} ms, mean {statistics.fmean(wake) * 1000:.1f} ms"),
        Row(NAME, "  completed_at → waiting client answered p50", _pct(wake, 0.5) * 1000, "ms"),
        Row(NAME, "  completed_at → waiting client answered p99", _pct(wake, 0.99) * 1000, "ms"),
    ]


def _epoch(value: datetime) -> float:
    return value.timestamp()


async def _wait_with_fleet(svc: Services, url: str, work: Path, base: str, key: str,
                           ids: list[str]) -> dict[str, float]:
    ready = asyncio.Event()
    waiting = asyncio.create_task(_wait_all(base, key, ids, ready))
    await ready.wait()
    await asyncio.sleep(1.0)  # every client is holding its first ?wait
    with fleet(url, svc.redis_url, svc.queue_name("api"), work, processes=1, threads=2, STAYLER_MODEL="null",
               STAYLER_MODEL_THREADS="1", STAYLER_CLAIM_BATCH_SIZE="8"):
        return await waiting
