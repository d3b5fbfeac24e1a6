"""The main job: services, migrations, a worker fleet, sample conversions, and a summary."""

from __future__ import annotations

import argparse
import time
import uuid

import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.settings import Settings
from imaging.samples import make_garment, make_person, to_bytes
from producer import register_image, status, submit
from producer.accounts import create_user, create_vendor
from producer.conversions import ConversionStatus
from producer.images import ImageLimits
from schema.connections import connect
from schema.migrate import migrate_configured
from schema.statuses import TERMINAL
from stayler.fleet import running_workers
from stayler.services import database, redis_server
from storage import Storage, from_settings


def _register_samples(conn: psycopg.Connection, storage: Storage, settings: Settings, count: int
                      ) -> list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]]:
    """A user with ``count`` person photos; a vendor's public garment and the user's own garment."""
    limits = ImageLimits.from_settings(settings)
    user = create_user(conn, f"demo-{uuid.uuid4().hex[:8]}@stayler.example", "Demo user")
    vendor = create_vendor(conn, "Demo vendor")
    public_garment = register_image(conn, storage, to_bytes(make_garment(seed=1)), owner_id=vendor,
                                    owner_type="vendor", image_type="cloth", is_public=True,
                                    file_name="striped-tee.jpg", limits=limits)
    own_garment = register_image(conn, storage, to_bytes(make_garment(seed=2, transparent=True), "PNG"),
                                 owner_id=user, owner_type="user", image_type="cloth",
                                 file_name="my-tee.png", limits=limits)
    pairs = []
    for i in range(count):
        person = make_person(seed=i, offset_x=(i % 3 - 1) * 0.08, scale=0.8 + 0.05 * (i % 3)).image
        record = register_image(conn, storage, to_bytes(person), owner_id=user, owner_type="user",
                                image_type="user", file_name=f"person-{i}.jpg", limits=limits)
        garment = public_garment if i % 2 == 0 else own_garment
        pairs.append((user, record.id, garment.id))
    return pairs


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Run sample conversions through a real worker fleet and print what happened."""
    console = Console()
    storage = from_settings(settings)
    with database(settings) as db_url, redis_server(settings) as redis_url:
        applied = migrate_configured(settings, db_url)
        console.print(f"database ready ({len(applied)} migration(s) applied now); storage at {storage.describe()}")
        log_path = settings.state_dir / "logs" / "workers.log"
        with running_workers(settings, db_url, redis_url, processes=args.processes, log_path=log_path), \
                connect(db_url, settings, "producer") as conn:
            console.print(f"started {args.processes} worker processes (log: {log_path})")
            pairs = _register_samples(conn, storage, settings, args.conversions)
            started = time.monotonic()
            ids = [submit(conn, user_id=user, user_image_id=person, cloth_image_id=garment, style_name="casual",
                          max_retries=settings.default_max_retries) for user, person, garment in pairs]
            rows = _wait(conn, ids, args.timeout, console)
            elapsed = time.monotonic() - started
        _summary(console, rows, elapsed, storage.describe())
    done = sum(r.status == "completed" for r in rows)
    return 0 if done == len(ids) else 1


def _wait(conn: psycopg.Connection, ids: list[uuid.UUID], timeout: float, console: Console) -> list[ConversionStatus]:
    deadline = time.monotonic() + timeout
    with Progress(TextColumn("converting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("convert", total=len(ids))
        while True:
            rows = status(conn, ids)
            finished = sum(r.status in TERMINAL for r in rows)
            progress.update(task, completed=finished)
            if finished == len(ids) or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)


def _summary(console: Console, rows: list[ConversionStatus], elapsed: float, where: str) -> None:
    table = Table(title=f"{len(rows)} conversions in {elapsed:.1f} s")
    for col in ("conversion", "status", "attempts", "time ms", "result"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r.id)[:8], r.status, str(r.attempt or 0), str(r.processing_time_ms or ""),
                      r.result_key or (r.job_error_message or ""))
    console.print(table)
    console.print(f"result images (and thumbnails) are under {where.rstrip('/')}/results/")
