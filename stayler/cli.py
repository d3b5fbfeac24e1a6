"""The ``stayler`` command: one entry point with a subcommand per task, each with its own --help."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from core import logs
from core.settings import Settings, get_settings

Handler = Callable[[argparse.Namespace, Settings], int]

DESCRIPTION = """\
AI Stayler conversion workers: a PostgreSQL-backed job queue whose Dramatiq worker processes run
ONNX virtual try-on (person photo + garment photo -> the person wearing the garment).

Configuration comes from environment variables: DATABASE_URL, REDIS_URL and STAYLER_* (see
docs/configuration.md). Without DATABASE_URL / REDIS_URL an embedded PostgreSQL / Redis is started under
STAYLER_STATE_DIR (default ./.state) for the command's duration.
"""


def _lazy(module: str, name: str) -> Handler:
    """A handler imported on first use, so `stayler --help` stays fast and light."""
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        import importlib

        fn: Handler = getattr(importlib.import_module(module), name)
        return fn(args, settings)
    return handler


def _cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from schema.migrate import migrate_configured
    from stayler.services import database

    with database(settings) as url:
        applied = migrate_configured(settings, url)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def _cmd_db_status(args: argparse.Namespace, settings: Settings) -> int:
    from stayler.report import print_db_status
    from stayler.services import database

    with database(settings) as url:
        print_db_status(url)
    return 0


def _uuid(value: str) -> object:
    from stayler.commands import parse_uuid

    return parse_uuid(value)


def _key_id(value: str) -> object:
    """argparse type: an API key's id. A key given instead is refused without being printed back."""
    from stayler.commands import parse_uuid

    try:
        return parse_uuid(value)
    except argparse.ArgumentTypeError:
        hint = "find the key's id with `stayler apikeys list` (the id is printed by `apikeys create` too)"
        if value.startswith("sk_"):
            raise argparse.ArgumentTypeError(f"that is a key, not a key's id: {hint}") from None
        raise argparse.ArgumentTypeError(f"not a key id (a UUID): {hint}") from None


def _json_object(value: str) -> object:
    from stayler.commands import parse_json_object

    return parse_json_object(value)


def _when(value: str) -> object:
    from stayler.commands import parse_when

    return parse_when(value)


def _owner_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument("--user-id", type=_uuid, help="the owning user's id")
    group.add_argument("--vendor-id", type=_uuid, help="the owning vendor's id")


_ERASE_HELP = (
    "Delete every row of the owner (images, conversions and their jobs, results, usage history, metrics, "
    "albums, API keys with their console grants and sessions, webhook endpoints and deliveries, idempotency "
    "keys, operator actions on its conversions) in one transaction, then every stored object; conversions "
    "of others made with its garments go too. Safe while workers hold its jobs; idempotent. One audit row "
    "(erasures) keeps the counts, never the id. Without --yes: print the counts and exit 1.")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``stayler`` command and all its subcommands."""
    parser = argparse.ArgumentParser(prog="stayler", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_: str, handler: Handler, description: str | None = None,
            parent: argparse._SubParsersAction[argparse.ArgumentParser] = sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_, description=description or help_)
        p.set_defaults(handler=handler)
        return p

    add("migrate", "apply the SQL migrations in schema/migrations (safe to repeat)", _cmd_migrate,
        "Apply pending SQL migrations under an advisory lock; safe to run twice or from several "
        "processes at once. The same files apply with plain `psql -f`, in name order.")
    db = sub.add_parser("db", help="database inspection", description="Inspect the database.")
    db_sub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    add("status", "applied and pending migrations, row counts per table", _cmd_db_status, parent=db_sub)

    users = sub.add_parser("users", help="minimal user accounts", description="Manage minimal user rows.")
    users_sub = users.add_subparsers(dest="users_command", metavar="USERS_COMMAND", required=True)
    p = add("add", "create a user and print its id", _lazy("stayler.commands", "cmd_users_add"), parent=users_sub)
    p.add_argument("--email", help="unique e-mail address (optional)")
    p.add_argument("--name", help="display name (optional)")
    p = add("erase", "erase a user: every row and every stored object (GDPR erasure)",
            _lazy("stayler.erasure", "cmd_users_erase"), _ERASE_HELP, parent=users_sub)
    p.add_argument("--user-id", type=_uuid, required=True, help="the user's id")
    p.add_argument("--yes", action="store_true", help="erase; without it, print what would go and exit 1")
    vendors = sub.add_parser("vendors", help="minimal vendor accounts", description="Manage minimal vendor rows.")
    vendors_sub = vendors.add_subparsers(dest="vendors_command", metavar="VENDORS_COMMAND", required=True)
    p = add("add", "create a vendor and print its id", _lazy("stayler.commands", "cmd_vendors_add"),
            parent=vendors_sub)
    p.add_argument("--name", required=True, help="the vendor's name")
    p = add("erase", "erase a vendor: every row and every stored object (GDPR erasure)",
            _lazy("stayler.erasure", "cmd_vendors_erase"), _ERASE_HELP, parent=vendors_sub)
    p.add_argument("--vendor-id", type=_uuid, required=True, help="the vendor's id")
    p.add_argument("--yes", action="store_true", help="erase; without it, print what would go and exit 1")
    storage_cmd = sub.add_parser("storage", help="stored objects", description="Inspect the storage backend.")
    storage_sub = storage_cmd.add_subparsers(dest="storage_command", metavar="STORAGE_COMMAND", required=True)
    p = add("audit", "list objects without a row and rows without an object; --fix deletes the former",
            _lazy("stayler.erasure", "cmd_storage_audit"),
            "List the store (folder or S3) and compare it with the images rows: objects no row claims "
            "(older than STAYLER_ORPHAN_GRACE_S) and rows whose file or thumbnail is missing. --fix deletes "
            "the unclaimed objects; missing objects are only reported. Exit 0 when nothing is wrong.",
            parent=storage_sub)
    p.add_argument("--fix", action="store_true", help="delete the objects no row claims")

    images = sub.add_parser("images", help="register images", description="Register person and garment images.")
    images_sub = images.add_subparsers(dest="images_command", metavar="IMAGES_COMMAND", required=True)
    p = add("add", "validate, store and register an image; prints its id", _lazy("stayler.commands", "cmd_images_add"),
            "Validate an image with Pillow (JPEG, PNG or WebP, decided from the content; size and pixel "
            "limits from STAYLER_MAX_IMAGE_BYTES / STAYLER_MAX_IMAGE_PIXELS), store it and its thumbnail "
            "under a system-generated key, and write its images row and an 'upload' usage row.",
            parent=images_sub)
    p.add_argument("file", type=Path, help="the image file")
    _owner_args(p, required=True)
    p.add_argument("--type", choices=["user", "cloth"], required=True, help="a person photo (user) or a garment")
    p.add_argument("--album-id", type=_uuid, help="album to put the image in")
    p.add_argument("--public", action="store_true", help="make the image public (garments anyone may use)")
    p.add_argument("--tag", action="append", help="a tag (repeatable)")
    p.add_argument("--metadata", type=_json_object, help="a JSON object stored with the image")
    p.add_argument("--json", action="store_true", help="print the whole record as JSON")

    p = add("submit", "create conversions: one from image ids, or many from a folder or a CSV",
            _lazy("stayler.commands", "cmd_submit"),
            "Create conversions through create_conversion(). Either one from --person/--garment image "
            "ids, or a batch: --folder DIR (every image in DIR is a person photo, all with --garment, "
            "a file or an image id) or --csv FILE (columns person, garment and optional style, priority, "
            "idempotency_key; files or image ids). Batches show a progress bar; refused rows are listed.")
    _owner_args(p, required=True)
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
    p.add_argument("--metadata", type=_json_object, help="a JSON object stored with the conversion")

    p = add("status", "show conversions with their attempts, last error and result",
            _lazy("stayler.commands", "cmd_status"))
    p.add_argument("ids", nargs="+", type=_uuid, help="conversion ids")
    p.add_argument("--wait", type=float, metavar="SECONDS", default=0.0,
                   help="first wait up to SECONDS for the conversions to end (exit 3 if some have not)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("cancel", "cancel a conversion (queued: at once; running: before its result is written)",
            _lazy("stayler.commands", "cmd_cancel"))
    p.add_argument("id", type=_uuid, help="the conversion's id")
    _owner_args(p)
    p.add_argument("--operator", metavar="NAME",
                   help="cancel anyone's conversion as operator NAME (audited; needs --reason), instead of an owner")
    p.add_argument("--reason", help="why an operator cancels (written to operator_actions)")

    p = add("stats", "conversion and image statistics (get_conversion_stats, get_image_stats)",
            _lazy("stayler.commands", "cmd_stats"))
    _owner_args(p)
    p.add_argument("--from", dest="date_from", type=_when, help="start of the range (ISO date or time)")
    p.add_argument("--to", dest="date_to", type=_when, help="end of the range (ISO date or time)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("worker", "run worker processes (dramatiq worker.app with the project's defaults)",
            _lazy("stayler.commands", "cmd_worker"),
            "Run a worker fleet on this host: `dramatiq worker.app` with STAYLER_WORKER_PROCESSES processes "
            "of STAYLER_WORKER_THREADS threads. Each process claims jobs, runs the model and records "
            "results; one process in the whole fleet, the holder of the leader lease (a row in "
            "leader_lease), also dispatches and rescues. SIGTERM: in-flight jobs finish within "
            "STAYLER_SHUTDOWN_GRACE_S or go back to the queue.")
    p.add_argument("--processes", type=int, help="worker processes (default: STAYLER_WORKER_PROCESSES)")
    p.add_argument("--threads", type=int, help="threads per process (default: STAYLER_WORKER_THREADS)")
    add("dispatcher", "run the dispatcher/rescuer on its own (workers also run one on standby)",
        _lazy("stayler.commands", "cmd_dispatcher"))

    p = add("api", "serve the HTTP API (FastAPI on uvicorn)", _lazy("api.commands", "cmd_api"),
            "Serve the HTTP API: images, conversions (with ?wait=), results, webhooks, stats; "
            "/openapi.json and /docs describe it. Stateless: run as many as needed behind a load balancer.")
    p.add_argument("--host", help="address to bind (default: STAYLER_API_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind (default: STAYLER_API_PORT, 8080)")
    apikeys = sub.add_parser("apikeys", help="API keys of the HTTP API", description="Create, list, revoke API keys.")
    apikeys_sub = apikeys.add_subparsers(dest="apikeys_command", metavar="APIKEYS_COMMAND", required=True)
    p = add("create", "create a key and print it (once: only its hash is stored)",
            _lazy("api.commands", "cmd_apikeys_create"), parent=apikeys_sub)
    _owner_args(p, required=True)
    p.add_argument("--scope", choices=["read", "producer", "operator"], default="producer",
                   help="read: GET only; producer: + images, conversions, cancel; operator: + webhooks")
    p.add_argument("--name", help="a label for lists")
    p.add_argument("--max-priority", type=int, default=None,
                   help="highest priority the key may ask for (default: STAYLER_API_KEY_MAX_PRIORITY, 10)")
    p.add_argument("--json", action="store_true", help="print id, key and scope as JSON")
    p.add_argument("--with-id", action="store_true",
                   help="print the key's id, a space and the key on one line (for `read KEY_ID KEY`)")
    p = add("list", "list keys (never their secrets)", _lazy("api.commands", "cmd_apikeys_list"), parent=apikeys_sub)
    _owner_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("revoke", "revoke a key at once", _lazy("api.commands", "cmd_apikeys_revoke"), parent=apikeys_sub)
    p.add_argument("id", type=_key_id, help="the key's id (from create or list)")
    p = add("console", "let a key log in to the operations console (/console), or not",
            _lazy("console.commands", "cmd_apikeys_console"), parent=apikeys_sub)
    p.add_argument("id", type=_key_id, help="the key's id (from create or list)")
    p.add_argument("--role", choices=["operator", "viewer", "none"], required=True,
                   help="operator: sees everything and acts (needs an operator-scope key); viewer: read-only")
    add("webhooks", "run the webhook sender (delivers the outbox, retries, disables failing endpoints)",
        _lazy("api.commands", "cmd_webhooks"))

    p = add("demo", "the main job: services, migrations, workers, sample conversions, summary",
            _lazy("stayler.demo", "run_demo"),
            "Start PostgreSQL and Redis (embedded unless DATABASE_URL/REDIS_URL are set), migrate, start "
            "worker processes, register sample person and garment images made by the project, submit "
            "conversions with a progress bar, and print a summary with the result images' paths.")
    p.add_argument("--conversions", type=int, default=6, help="how many conversions to run (default: 6)")
    p.add_argument("--processes", type=int, default=2, help="worker processes (default: 2)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the conversions")

    try:
        from modelkit.cli import register as register_model_commands
    except ImportError:  # pragma: no cover - modelkit package absent
        pass
    else:
        register_model_commands(sub)
    try:
        from bench.cli import register as register_bench_commands
    except ImportError:  # pragma: no cover - bench package absent (not installed)
        pass
    else:
        register_bench_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stayler`` command line; returns the process exit code."""
    settings = get_settings()
    logs.configure(settings.log_level, settings.log_format)
    args = build_parser().parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:  # subcommands registered by modelkit.cli take only their arguments
        return int(args.func(args))
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

    from producer.errors import ProducerError
    from stayler.services import ServiceUnavailableError

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
