"""The ``stayler`` command: one entry point with a subcommand per task."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from stayler import logs
from stayler.settings import Settings, get_settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from schema.migrate import apply_migrations
    from stayler.services import database

    with database(settings) as url:
        applied = apply_migrations(url)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def _cmd_db_status(args: argparse.Namespace, settings: Settings) -> int:
    from stayler.report import print_db_status
    from stayler.services import database

    with database(settings) as url:
        print_db_status(url)
    return 0


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from stayler.demo import run_demo

    return run_demo(settings, args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``stayler`` command and all its subcommands."""
    parser = argparse.ArgumentParser(
        prog="stayler",
        description=(
            "AI Stayler conversion workers: a PostgreSQL-backed job queue that runs ONNX virtual try-on "
            "in Dramatiq worker processes. Configuration comes from environment variables "
            "(DATABASE_URL, REDIS_URL, STAYLER_*; see the README). Without DATABASE_URL/REDIS_URL an "
            "embedded PostgreSQL/Redis is started under STAYLER_STATE_DIR (default ./.state)."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("migrate", help="apply the SQL migrations in schema/migrations (safe to repeat)",
                       description="Apply pending SQL migrations under an advisory lock; safe to run twice "
                       "or from several processes at once.")
    p.set_defaults(handler=_cmd_migrate)

    db = sub.add_parser("db", help="database inspection", description="Inspect the database.")
    db_sub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    p = db_sub.add_parser("status", help="applied and pending migrations, row counts per table",
                          description="Print applied and pending migrations and the row count of every table.")
    p.set_defaults(handler=_cmd_db_status)

    p = sub.add_parser("demo", help="the main job: database, migrations, workers, sample conversions",
                       description="Start the services (embedded unless URLs are set), migrate and print "
                       "the schema status.")
    p.set_defaults(handler=_cmd_demo)
    return parser


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


if __name__ == "__main__":
    sys.exit(main())
