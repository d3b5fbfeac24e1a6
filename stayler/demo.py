"""The main job: services, migrations, a worker fleet, sample conversions, and a summary."""

from __future__ import annotations

import argparse
import time
import uuid

import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.services import database, redis_server
from core.settings import Settings
from modelkit.samples import make_garment, make_person, to_bytes
from producer import register_image, status, submit
from producer.accounts import create_user, create_vendor
from producer.conversions import ConversionStatus
from producer.images import ImageLimits
from schema import statuses
from schema.connections import connect
from schema.migrate import migrate_configured
from schema.statuses import TERMINAL
from storage import Storage, from_settings
from worker.supervisor import running_workers


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
    done = sum(r.status == statuses.ConversionStatus.COMPLETED for r in rows)
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
    """Each conversion's own time (submitted → ended), then its result path whole, then what to try next.

    The worker's ``processing_time_ms`` is its batch's model time, the same for every conversion of
    a batch, so the table shows each conversion's own wait instead.
    """
    table = Table(title=f"{len(rows)} conversions in {elapsed:.1f} s")
    for col in ("conversion", "status", "attempts", "ready after ms"):
        table.add_column(col, justify="right" if col == "ready after ms" else "left")
    for r in rows:
        table.add_row(str(r.id)[:8], r.status, str(r.attempt or 0), _ready_after_ms(r))
    console.print(table)
    base = where.rstrip("/")
    console.print("results (whole paths):")
    for r in rows:
        outcome = f"{base}/{r.result_key}" if r.result_key else (r.job_error_message or r.status)
        # soft_wrap: a path is printed whole, never cut or folded at the terminal's width.
        console.print(f"  {str(r.id)[:8]}  {outcome}", soft_wrap=True, highlight=False)
    console.print(NEXT_STEPS, soft_wrap=True, highlight=False)


def _ready_after_ms(r: ConversionStatus) -> str:
    if r.completed_at is None:
        return ""
    return f"{(r.completed_at - r.created_at).total_seconds() * 1000:.0f}"


NEXT_STEPS = """What to try next:
  stayler status <id>                      one conversion, its attempts and error, the result path
  stayler submit --help                    your own photos (docs/examples/, tests/data/photos/)
  stayler api                              the HTTP API: /docs is its reference, /console the operations console
  README.md "Producing conversions"        a CLI session to paste; docs/api.md for HTTP and webhooks"""
