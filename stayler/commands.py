"""Handlers of the ``stayler`` subcommands that talk to the database (producer, worker, dispatcher)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.cli import parse_uuid
from core.services import database, redis_server
from core.settings import Settings
from producer import cancel, register_image, status, submit, wait
from producer.accounts import create_user, create_vendor
from producer.batch import Owner, rows_from_csv, rows_from_folder, submit_batch
from producer.conversions import ConversionStatus, conversion_stats, image_stats, operator_cancel
from producer.errors import ProducerError
from producer.images import ImageLimits
from schema import statuses
from schema.connections import connect
from schema.statuses import TERMINAL
from storage import Storage, from_settings

console = Console()
err_console = Console(stderr=True)

#: Exit code of ``stayler cancel`` when the conversion had already ended (the API's 409).
CANCEL_ALREADY_ENDED = 1


@contextmanager
def connection(settings: Settings) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the configured (or embedded) database."""
    with database(settings) as url, _connected(url, settings) as conn:
        yield conn


@contextmanager
def _connected(url: str, settings: Settings) -> Iterator[psycopg.Connection]:
    try:
        conn = connect(url, settings, "cli")
    except psycopg.OperationalError as exc:
        raise ProducerError("database_unavailable", f"cannot connect to the database: {exc}".strip()) from exc
    with conn:
        yield conn


def storage_for(settings: Settings) -> Storage:
    """The configured storage backend (``STAYLER_STORAGE_URL``, else the folder under the state dir)."""
    return from_settings(settings)


def owner_of(args: argparse.Namespace) -> Owner:
    """The owner given by --user-id / --vendor-id (exactly one)."""
    if bool(args.user_id) == bool(args.vendor_id):
        raise ProducerError("owner_required", "give exactly one of --user-id or --vendor-id")
    return Owner(args.user_id, args.vendor_id)


def cmd_users_add(args: argparse.Namespace, settings: Settings) -> int:
    """stayler users add"""
    with connection(settings) as conn:
        print(create_user(conn, args.email, args.name))
    return 0


def cmd_vendors_add(args: argparse.Namespace, settings: Settings) -> int:
    """stayler vendors add"""
    with connection(settings) as conn:
        print(create_vendor(conn, args.name))
    return 0


def cmd_images_add(args: argparse.Namespace, settings: Settings) -> int:
    """stayler images add"""
    owner = owner_of(args)
    path: Path = args.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProducerError("invalid_argument", f"cannot read {path}: {exc.strerror}") from exc
    with connection(settings) as conn:
        record = register_image(
            conn, storage_for(settings), data, owner_id=owner.id, owner_type=owner.type, image_type=args.type,
            limits=ImageLimits.from_settings(settings), file_name=path.name, album_id=args.album_id,
            is_public=args.public, tags=args.tag or [], metadata=args.metadata or {})
    if args.json:
        print(json.dumps(vars(record), default=str))
    else:
        print(record.id)
    return 0


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    """stayler submit"""
    owner = owner_of(args)
    max_retries = settings.default_max_retries if args.max_retries is None else args.max_retries
    with database(settings) as url, _connected(url, settings) as conn:
        if args.csv or args.folder:
            if args.csv:
                rows = rows_from_csv(args.csv)
            else:
                if not args.garment:
                    raise ProducerError("invalid_argument", "--folder needs --garment (a file or an image id)")
                rows = rows_from_folder(args.folder, args.garment, args.style, args.priority)
            with Progress(TextColumn("submitting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=err_console) as progress:
                task = progress.add_task("submit", total=len(rows))
                outcomes = submit_batch(
                    conn, storage_for(settings), rows, owner, limits=ImageLimits.from_settings(settings),
                    max_retries=max_retries, on_row=lambda _: progress.advance(task),
                    reconnect=lambda: connect(url, settings, "cli"), reconnect_for_s=max(settings.db_timeout_s, 10.0))
            refused = [o for o in outcomes if o.error]
            for o in outcomes:
                print(o.conversion_id if o.conversion_id else f"refused\t{o.row.person}\t{o.error}")
            err_console.print(f"{len(outcomes) - len(refused)} submitted, {len(refused)} refused")
            return 1 if refused else 0
        if not (args.person and args.garment):
            raise ProducerError("invalid_argument", "give --person and --garment (image ids), or --folder/--csv")
        cid = submit(conn, user_id=owner.user_id, vendor_id=owner.vendor_id,
                     user_image_id=parse_uuid(args.person), cloth_image_id=parse_uuid(args.garment),
                     conversion_type=args.type, style_name=args.style, priority=args.priority,
                     max_retries=max_retries, metadata=args.metadata or {}, idempotency_key=args.idempotency_key)
    print(cid)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """stayler status"""
    with connection(settings) as conn:
        if args.wait > 0:
            wait(conn, args.ids, args.wait)
        rows = status(conn, args.ids)
    if args.json:
        print(json.dumps([vars(r) for r in rows], default=str))
    else:
        for r in rows:
            print(status_lines(r))
    missing = set(args.ids) - {r.id for r in rows}
    for cid in missing:
        err_console.print(f"no conversion {cid}")
    if missing:
        return 1
    unfinished = [r for r in rows if r.status not in TERMINAL]
    if args.wait > 0 and unfinished:
        err_console.print(f"{len(unfinished)} conversion(s) still running after {args.wait:g} s")
        return 3
    return 0


def status_lines(r: ConversionStatus) -> str:
    """A conversion as a few lines: its id and state on the first, then its result or error whole.

    Lines, not a table, so an id or a path is never cut or folded at the terminal's width.
    """
    head = [str(r.id), r.status, f"attempt {r.attempt or 0}", f"retries {r.retry_count}/{r.max_retries}"]
    if r.processing_time_ms is not None:
        head.append(f"{r.processing_time_ms} ms")
    lines = ["  ".join(head)]
    if r.result_url:
        lines.append(f"  result: {r.result_url}")
    if r.error_type:
        lines.append(f"  error:  {r.error_type}: {r.job_error_message or ''}".rstrip())
    return "\n".join(lines)


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    """stayler cancel"""
    owner = args.user_id is not None or args.vendor_id is not None
    if args.operator is None and not owner:
        raise ProducerError("owner_required", "cancel needs the owner (--user-id or --vendor-id), "
                                              "or --operator NAME --reason TEXT for the audited operator path")
    if args.operator is not None and (owner or not args.reason):
        raise ProducerError("invalid_argument", "--operator takes --reason and no owner")
    with connection(settings) as conn:
        if args.operator is not None:
            result = operator_cancel(conn, args.id, operator=args.operator, reason=args.reason)
        else:
            result = cancel(conn, args.id, user_id=args.user_id, vendor_id=args.vendor_id)
    if result != statuses.ConversionStatus.CANCELLED:
        # The API answers 409 invalid_status_transition here: nothing was cancelled, so say so and fail.
        print(f"stayler: error: invalid_status_transition: conversion {args.id} already ended: {result} "
              "(nothing was cancelled)", file=sys.stderr)
        return CANCEL_ALREADY_ENDED
    print(result)
    return 0


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    """stayler stats"""
    with connection(settings) as conn:
        conv = conversion_stats(conn, user_id=args.user_id, vendor_id=args.vendor_id,
                                date_from=args.date_from, date_to=args.date_to)
        owner = args.user_id or args.vendor_id
        images = image_stats(conn, owner_id=owner, owner_type=("user" if args.user_id else "vendor") if owner else None)
    if args.json:
        print(json.dumps({"conversions": conv, "images": images}, default=str))
        return 0
    for title, data in (("Conversions", conv), ("Images", images)):
        table = Table(title=title)
        table.add_column("measure")
        table.add_column("value", justify="right")
        for key, value in data.items():
            table.add_row(key, "" if value is None else str(value))
        console.print(table)
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """stayler worker"""
    from worker.supervisor import run_workers_foreground

    with database(settings) as db_url, redis_server(settings) as redis_url:
        from schema.migrate import migrate_configured

        migrate_configured(settings, db_url)
        return run_workers_foreground(settings, db_url, redis_url, processes=args.processes, threads=args.threads)


def cmd_dispatcher(args: argparse.Namespace, settings: Settings) -> int:
    """stayler dispatcher"""
    import signal

    from broker.redis import make_broker
    from leader.assembly import build_leader, default_duties
    from leader.config import LeaderSettings

    with database(settings) as db_url, redis_server(settings) as redis_url:
        settings = settings.model_copy(update={"database_url": db_url, "redis_url": redis_url})
        broker = make_broker(redis_url)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        leader = LeaderSettings.from_settings(settings)
        build_leader(leader, default_duties(leader, broker, storage_for(settings))).run(stop)
    return 0
