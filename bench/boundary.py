"""``stayler bench boundary``: what hostile customers cost the API (issue 19), in one run.

* the API process's peak RSS (``VmHWM``) while 20 clients upload worst-case images at once: the
  largest image the decode budget accepts (RGBA, the costliest mode per pixel) and the small 16-bit
  PNG that decodes into gigabytes (refused from its header); target < 512 MiB;
* ``/healthz`` p99 while clients list pages of 200 conversions carrying the largest allowed metadata;
  target < 100 ms;
* healthy webhook deliveries' p99 with one drip receiver among 50 endpoints, against the same run
  without it (target ≤ 1.2×): measured by ``bench.boundary_webhooks`` when that module is present.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from PIL import Image

from bench.common import Row, Services, Sizes, Workload, free_port
from core.settings import Settings
from imaging.budget import bytes_per_pixel

NAME = "boundary"
UPLOADERS = 20
RSS_TARGET_MIB = 512
HEALTHZ_TARGET_MS = 100.0


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def edge_rgba_png(budget: int) -> bytes:
    """The largest square RGBA PNG whose decode the budget accepts (a gradient, so it is a real image)."""
    side = int((budget / bytes_per_pixel("RGBA")) ** 0.5)
    ramp = (np.arange(side, dtype=np.uint32) * 255 // max(1, side - 1)).astype(np.uint8)
    rgba = np.empty((side, side, 4), dtype=np.uint8)
    rgba[..., 0] = ramp[None, :]
    rgba[..., 1] = ramp[:, None]
    rgba[..., 2] = 128
    rgba[..., 3] = 200
    return _png(rgba)


def bomb_png16(side: int = 6000) -> bytes:
    """A 16-bit grey PNG of ``side`` × ``side`` pixels in about 90 KB (issue 19, row 2)."""
    return _png(np.zeros((side, side), dtype=np.uint16))


@contextlib.contextmanager
def api_process(db_url: str, work: Path, **env_overrides: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``stayler api`` on a free loopback port; yields its base URL and process."""
    port = free_port()
    env = dict(os.environ)
    env.update({"DATABASE_URL": db_url, "STAYLER_STORAGE_DIR": str(work / "storage"), "STAYLER_LOG_LEVEL": "WARNING",
                "STAYLER_STATE_DIR": str(work / "state"), **env_overrides})
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
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (``VmHWM``) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


async def upload_all(base: str, key: str, bodies: list[bytes]) -> list[int]:
    """POST every body to /v1/images at once; their status codes."""
    async with httpx.AsyncClient(base_url=base, timeout=300, headers={"Authorization": f"Bearer {key}"}) as client:
        async def one(data: bytes) -> int:
            response = await client.post("/v1/images", files={"file": ("x.png", data, "image/png")},
                                         data={"type": "user"})
            return response.status_code
        return list(await asyncio.gather(*(one(b) for b in bodies)))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _list_pages(base: str, key: str, seconds: float, listers: int) -> int:
    stop = time.monotonic() + seconds
    pages = 0

    async def lister() -> None:
        nonlocal pages
        async with httpx.AsyncClient(base_url=base, timeout=60, headers={"Authorization": f"Bearer {key}"}) as c:
            while time.monotonic() < stop:
                response = await c.get("/v1/conversions", params={"limit": 200})
                response.raise_for_status()
                pages += 1

    await asyncio.gather(*(lister() for _ in range(listers)))
    return pages


def _listers_main(base: str, key: str, seconds: float, listers: int, pages: Any) -> None:
    """The listing clients, in a process of their own so their reading never delays the probe."""
    pages.value = asyncio.run(_list_pages(base, key, seconds, listers))


def _healthz_under_lists(base: str, key: str, seconds: float, listers: int) -> tuple[list[float], int]:
    """/healthz latencies (probed from this process) while ``listers`` clients in another list pages."""
    ctx = multiprocessing.get_context("spawn")
    pages = ctx.Value("i", 0)
    proc = ctx.Process(target=_listers_main, args=(base, key, seconds + 1.0, listers, pages))
    proc.start()
    times: list[float] = []
    try:
        time.sleep(1.0)  # the listers are running
        stop = time.monotonic() + seconds
        with httpx.Client(base_url=base, timeout=60) as client:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                client.get("/healthz").raise_for_status()
                times.append(time.perf_counter() - t0)
                time.sleep(0.02)
    finally:
        proc.join(seconds + 60)
    return times, int(pages.value)


def largest_metadata(max_bytes: int) -> dict[str, str]:
    """A metadata object just under ``max_bytes`` serialized."""
    return {"note": "m" * (max_bytes - 64)}


def run(svc: Services, sizes: Sizes) -> list[Row]:
    """Measure the rows above on one fresh database."""
    from api.keys import create_key

    smoke = sizes.enqueue_single < 1000
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = Settings()
    work = svc.work_dir / "boundary"
    work.mkdir(parents=True, exist_ok=True)
    edge, bomb = edge_rgba_png(settings.max_decode_bytes), bomb_png16()
    rows: list[Row] = []
    with svc.fresh_database("boundary") as url, psycopg.connect(url, autocommit=True) as conn:
        load = Workload(conn, work / "storage", sizes.null_person_size)
        _, key = create_key(conn, scope="producer", user_id=load.user)
        metadata = json.dumps(largest_metadata(settings.api_max_metadata_bytes))
        for _ in range(200):
            conn.execute("SELECT create_conversion(user_id := %s, user_image_id := %s, cloth_image_id := %s, "
                         "metadata := %s::jsonb)", (load.user, load.person, load.garment, metadata))
        with api_process(url, work) as (base, proc):
            idle = peak_rss_mib(proc.pid)
            bodies = [edge] * (UPLOADERS // 2) + [bomb] * (UPLOADERS - UPLOADERS // 2)
            t0 = time.perf_counter()
            codes = asyncio.run(upload_all(base, key, bodies))
            upload_s = time.perf_counter() - t0
            peak = peak_rss_mib(proc.pid)
            probes, pages = _healthz_under_lists(base, key, 3.0 if smoke else 15.0, 4)
    accepted = sum(1 for c in codes if c == 201)
    refused = sum(1 for c in codes if c == 413)
    rows.append(Row(NAME, f"API peak RSS, {UPLOADERS} concurrent worst-case uploads (1 uvicorn process)", peak, "MiB",
                    target=f"< {RSS_TARGET_MIB} MiB", met=peak < RSS_TARGET_MIB,
                    note=f"{UPLOADERS // 2} × {len(edge) // 1024:,} KB RGBA PNG at the decode budget "
                         f"({settings.max_decode_bytes // 2**20} MiB): {accepted} stored; {UPLOADERS - UPLOADERS // 2}"
                         f" × {len(bomb) // 1024} KB 16-bit PNG 6000×6000: {refused} refused from the header; "
                         f"idle {idle:.0f} MiB; {upload_s:.1f} s; "
                         f"{settings.api_max_concurrent_decodes} decodes at once"))
    p99 = _pct(probes, 0.99) * 1000
    rows.append(Row(NAME, "/healthz p99 while 4 clients list 200 conversions with the largest metadata", p99, "ms",
                    target=f"< {HEALTHZ_TARGET_MS:.0f} ms", met=p99 < HEALTHZ_TARGET_MS,
                    note=f"{len(probes)} probes, p50 {_pct(probes, 0.5) * 1000:.1f} ms; {pages} pages of 200 "
                         f"× {settings.api_max_metadata_bytes // 1024} KiB metadata served"))
    rows.extend(_webhook_rows(svc, sizes))
    return rows


def _webhook_rows(svc: Services, sizes: Sizes) -> list[Row]:
    """The webhook drip row, from ``bench.boundary_webhooks`` (the webhook sender's half of issue 19)."""
    from bench import boundary_webhooks

    return boundary_webhooks.run(svc, sizes)
