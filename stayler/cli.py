"""The ``stayler`` command: one entry point with a subcommand per task, each with its own --help.

The shell only composes: every package that has commands exposes ``register(subparsers)`` in its
``cli.py``, and the shell's own commands (the database, the producer tasks, the
fleet, the web process, the demo) are registered the same way, here and in :mod:`stayler.web`.
Every subcommand sets ``handler(args, settings) -> exit code`` (:mod:`core.cli`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from core import logs
from core.cli import Handler, Subparsers, add, group, lazy, owner_args, parse_json_object, parse_uuid, parse_when
from core.settings import Settings, get_settings

DESCRIPTION = """\
AI Stayler conversion workers: a PostgreSQL-backed job queue whose Dramatiq worker processes run
ONNX virtual try-on (person photo + garment photo -> the person wearing the garment).

Configuration comes from environment variables: DATABASE_URL, REDIS_URL and STAYLER_* (see
docs/configuration.md). Without DATABASE_URL / REDIS_URL an embedded PostgreSQL / Redis is started under
STAYLER_STATE_DIR (default ./.state) for the command's duration.
"""

def _cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from core.services import database
    from schema.migrate import migrate_configured

    with database(settings) as url:
        applied = migrate_configured(settings, url)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def _cmd_db_status(args: argparse.Namespace, settings: Settings) -> int:
    from core.services import database
    from stayler.report import print_db_status

    with database(settings) as url:
        print_db_status(url)
    return 0


_ERASE_HELP = (
    "Delete every row of the owner (images, conversions and their jobs, results, usage history, metrics, "
    "albums, API keys with their console grants and sessions, webhook endpoints and deliveries, idempotency "
    "keys, operator actions on its conversions) in one transaction, then every stored object; conversions "
    "of others made with its garments go too. Safe while workers hold its jobs; idempotent. One audit row "
    "(erasures) keeps the counts, never the id. Without --yes: print the counts and exit 1.")


def register(sub: Subparsers[argparse.ArgumentParser]) -> None:
    """The shell's own commands up to ``dispatcher``: the database, accounts, images, conversions, the fleet."""
    add(sub, "migrate", "apply the SQL migrations in schema/migrations (safe to repeat)", _cmd_migrate,
        "Apply pending SQL migrations under an advisory lock; safe to run twice or from several "
        "processes at once. The same files apply with plain `psql -f`, in name order.")
    db_sub = group(sub, "db", "database inspection", "Inspect the database.")
    add(db_sub, "status", "applied and pending migrations, row counts per table", _cmd_db_status)

    users_sub = group(sub, "users", "minimal user accounts", "Manage minimal user rows.")
    p = add(users_sub, "add", "create a user and print its id", lazy("stayler.commands", "cmd_users_add"))
    p.add_argument("--email", help="unique e-mail address (optional)")
    p.add_argument("--name", help="display name (optional)")
    p = add(users_sub, "erase", "erase a user: every row and every stored object (GDPR erasure)",
            lazy("stayler.erasure", "cmd_users_erase"), _ERASE_HELP)
    p.add_argument("--user-id", type=parse_uuid, required=True, help="the user's id")
    p.add_argument("--yes", action="store_true", help="erase; without it, print what would go and exit 1")
    vendors_sub = group(sub, "vendors", "minimal vendor accounts", "Manage minimal vendor rows.")
    p = add(vendors_sub, "add", "create a vendor and print its id", lazy("stayler.commands", "cmd_vendors_add"))
    p.add_argument("--name", required=True, help="the vendor's name")
    p = add(vendors_sub, "erase", "erase a vendor: every row and every stored object (GDPR erasure)",
            lazy("stayler.erasure", "cmd_vendors_erase"), _ERASE_HELP)
    p.add_argument("--vendor-id", type=parse_uuid, required=True, help="the vendor's id")
    p.add_argument("--yes", action="store_true", help="erase; without it, print what would go and exit 1")
    storage_sub = group(sub, "storage", "stored objects", "Inspect the storage backend.")
    p = add(storage_sub, "audit", "list objects without a row and rows without an object; --fix deletes the former",
            lazy("stayler.erasure", "cmd_storage_audit"),
            "List the store (folder or S3) and compare it with the images rows: objects no row claims "
            "(older than STAYLER_ORPHAN_GRACE_S) and rows whose file or thumbnail is missing. --fix deletes "
            "the unclaimed objects; missing objects are only reported. Exit 0 when nothing is wrong.")
    p.add_argument("--fix", action="store_true", help="delete the objects no row claims")

    images_sub = group(sub, "images", "register images", "Register person and garment images.")
    p = add(images_sub, "add", "validate, store and register an image; prints its id",
            lazy("stayler.commands", "cmd_images_add"),
            "Validate an image with Pillow (JPEG, PNG or WebP, decided from the content; size and pixel "
            "limits from STAYLER_MAX_IMAGE_BYTES / STAYLER_MAX_IMAGE_PIXELS), store it and its thumbnail "
            "under a system-generated key, and write its images row and an 'upload' usage row.")
    p.add_argument("file", type=Path, help="the image file")
    owner_args(p, required=True)
    p.add_argument("--type", choices=["user", "cloth"], required=True, help="a person photo (user) or a garment")
    p.add_argument("--album-id", type=parse_uuid, help="album to put the image in")
    p.add_argument("--public", action="store_true", help="make the image public (garments anyone may use)")
    p.add_argument("--tag", action="append", help="a tag (repeatable)")
    p.add_argument("--metadata", type=parse_json_object, help="a JSON object stored with the image")
    p.add_argument("--json", action="store_true", help="print the whole record as JSON")

    p = add(sub, "submit", "create conversions: one from image ids, or many from a folder or a CSV",
            lazy("stayler.commands", "cmd_submit"),
            "Create conversions through create_conversion(). Either one from --person/--garment image "
            "ids, or a batch: --folder DIR (every image in DIR is a person photo, all with --garment, "
            "a file or an image id) or --csv FILE (columns person, garment and optional style, priority, "
            "idempotency_key; files or image ids). Batches show a progress bar; refused rows are listed.")
    owner_args(p, required=True)
    p.add_argument("--person", help="the person image's id")
    p.add_argument("--garment", help="the garment image's id (or, with --folder, a garment file)")
    p.add_argument("--folder", type=Path, help="a folder of person photos to convert with --garment")
    p.add_argument("--csv", type=Path, help="a CSV file of conversions to create")
    p.add_argument("--type", choices=["free", "paid"], default="free", help="conversion type (default: free)")
    p.add_argument("--style", help="style name")
    p.add_argument("--priority", type=int, default=0, help="higher runs first (default: 0)")
    p.add_argument("--max-retries", type=int,
                   help="retries for transient errors (default: STAYLER_DEFAULT_MAX_RETRIES)")
    p.add_argument("--idempotency-key", help="the same key from the same owner returns the same conversion")
    p.add_argument("--metadata", type=parse_json_object, help="a JSON object stored with the conversion")

    p = add(sub, "status", "show conversions with their attempts, last error and result",
            lazy("stayler.commands", "cmd_status"))
    p.add_argument("ids", nargs="+", type=parse_uuid, help="conversion ids")
    p.add_argument("--wait", type=float, metavar="SECONDS", default=0.0,
                   help="first wait up to SECONDS for the conversions to end (exit 3 if some have not)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add(sub, "cancel", "cancel a conversion (queued: at once; running: before its result is written)",
            lazy("stayler.commands", "cmd_cancel"))
    p.add_argument("id", type=parse_uuid, help="the conversion's id")
    owner_args(p)
    p.add_argument("--operator", metavar="NAME",
                   help="cancel anyone's conversion as operator NAME (audited; needs --reason), instead of an owner")
    p.add_argument("--reason", help="why an operator cancels (written to operator_actions)")

    p = add(sub, "stats", "conversion and image statistics (get_conversion_stats, get_image_stats)",
            lazy("stayler.commands", "cmd_stats"))
    owner_args(p)
    p.add_argument("--from", dest="date_from", type=parse_when, help="start of the range (ISO date or time)")
    p.add_argument("--to", dest="date_to", type=parse_when, help="end of the range (ISO date or time)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add(sub, "worker", "run worker processes (dramatiq worker.app with the project's defaults)",
            lazy("stayler.commands", "cmd_worker"),
            "Run a worker fleet on this host: `dramatiq worker.app` with STAYLER_WORKER_PROCESSES processes "
            "of STAYLER_WORKER_THREADS threads. Each process claims jobs, runs the model and records "
            "results; one process in the whole fleet, the holder of the leader lease (a row in "
            "leader_lease), also dispatches and rescues. SIGTERM: in-flight jobs finish within "
            "STAYLER_SHUTDOWN_GRACE_S or go back to the queue.")
    p.add_argument("--processes", type=int, help="worker processes (default: STAYLER_WORKER_PROCESSES)")
    p.add_argument("--threads", type=int, help="threads per process (default: STAYLER_WORKER_THREADS)")
    add(sub, "dispatcher", "run the dispatcher/rescuer on its own (workers also run one on standby)",
        lazy("stayler.commands", "cmd_dispatcher"))


def register_demo(sub: Subparsers[argparse.ArgumentParser]) -> None:
    """``stayler demo``: the shell's last command before the tooling."""
    p = add(sub, "demo", "the main job: services, migrations, workers, sample conversions, summary",
            lazy("stayler.demo", "run_demo"),
            "Start PostgreSQL and Redis (embedded unless DATABASE_URL/REDIS_URL are set), migrate, start "
            "worker processes, register sample person and garment images made by the project, submit "
            "conversions with a progress bar, and print a summary with the result images' paths.")
    p.add_argument("--conversions", type=int, default=6, help="how many conversions to run (default: 6)")
    p.add_argument("--processes", type=int, default=2, help="worker processes (default: 2)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the conversions")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``stayler`` command: the shell's commands and every package's."""
    import api.cli
    import console.cli
    from stayler import web

    parser = argparse.ArgumentParser(prog="stayler", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register(sub)
    web.register(sub)  # the web process: the API with the console mounted in it
    api.cli.register(sub)
    console.cli.register(sub)
    register_demo(sub)
    for tooling in _tooling():
        tooling(sub)
    return parser


def _tooling() -> list[Callable[[Subparsers[argparse.ArgumentParser]], None]]:
    """The tooling packages' ``register`` (the model's ``tryon``, ``bench``), those installed."""
    found: list[Callable[[Subparsers[argparse.ArgumentParser]], None]] = []
    try:
        from modelkit.cli import register as register_model_commands
    except ImportError:  # pragma: no cover - modelkit package absent
        pass
    else:
        found.append(register_model_commands)
    try:
        from bench.cli import register as register_bench_commands
    except ImportError:  # pragma: no cover - bench package absent (not installed)
        pass
    else:
        found.append(register_bench_commands)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stayler`` command line; returns the process exit code."""
    settings = get_settings()
    logs.configure(settings.log_level, settings.log_format)
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message = error_line(exc)
        if message is None:
            raise
        print(f"stayler: error: {message}", file=sys.stderr)
        return 2


def error_line(exc: BaseException) -> str | None:
    """The one line a user sees for an error the CLI expects, naming the fix; None for a real bug."""
    import psycopg

    from core.services import ServiceUnavailableError
    from producer.errors import ProducerError

    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for link in chain:
        if isinstance(link, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedFunction
                      | psycopg.errors.UndefinedColumn):
            detail = str(link).strip().splitlines()[0]
            return f"the database is not migrated ({detail}): run `stayler migrate` first"
    if isinstance(exc, ProducerError | ServiceUnavailableError):
        return str(exc)
    for link in chain:
        if isinstance(link, psycopg.OperationalError):
            detail = str(link).strip().splitlines()[0] if str(link).strip() else type(link).__name__
            return f"cannot reach the database ({detail}): check DATABASE_URL"
    return None


if __name__ == "__main__":
    sys.exit(main())
