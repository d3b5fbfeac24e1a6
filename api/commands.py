"""Handlers of ``stayler api``, ``stayler apikeys …`` and ``stayler webhooks``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING

import psycopg

from api.keys import create_key, list_keys, revoke_key
from core.services import database
from core.settings import Settings
from schema.connections import connect
from schema.migrate import migrate_configured

if TYPE_CHECKING:
    from collections.abc import Callable

    import uvicorn
    from fastapi import FastAPI

    AppFactory = Callable[[Settings, str], FastAPI]


def cmd_api(args: argparse.Namespace, settings: Settings, app_factory: AppFactory | None = None) -> int:
    """stayler api: migrate, then serve the HTTP API with uvicorn (the app from ``app_factory``: the shell's)."""
    import uvicorn

    from api.app import create_app

    logging.getLogger("uvicorn.error").addFilter(_drop_color_message)
    with database(settings) as url:
        migrate_configured(settings, url)
        app = (app_factory or create_app)(settings, url)
        # Our access-log middleware writes one structured line per request; uvicorn's would be a second.
        # Forwarded headers are honoured by api.forwarded from STAYLER_API_TRUSTED_PROXIES only.
        config = uvicorn.Config(app, host=args.host or settings.api_host, port=args.port if args.port is not None
                                else settings.api_port, log_config=None, access_log=False, proxy_headers=False,
                                timeout_graceful_shutdown=10)
        _announcing_server(config).run()
    return 0


def _announcing_server(config: uvicorn.Config) -> uvicorn.Server:
    """uvicorn's server that, once listening, prints where the reference and the console are."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            for server in self.servers:
                for sock in server.sockets:
                    base = base_url(sock.getsockname())
                    print(f"stayler api: reference {base}/docs", flush=True)
                    print(f"stayler api: console   {base}/console", flush=True)

    return Server(config)


def base_url(sockname: tuple[object, ...] | str) -> str:
    """``http://host:port`` of a listening socket's name (IPv6 in brackets)."""
    if isinstance(sockname, str):
        return f"http://unix:{sockname}"
    host, port = str(sockname[0]), sockname[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _drop_color_message(record: logging.LogRecord) -> bool:
    """uvicorn adds a terminal-coloured copy of its message as an extra field; the log lines need one."""
    record.__dict__.pop("color_message", None)
    return True


def _connect(url: str, settings: Settings) -> psycopg.Connection:
    return connect(url, settings, "cli")


def cmd_apikeys_create(args: argparse.Namespace, settings: Settings) -> int:
    """stayler apikeys create: print a new key (once; only its hash is stored)."""
    with database(settings) as url, _connect(url, settings) as conn:
        try:
            key_id, key = create_key(conn, scope=args.scope, user_id=args.user_id, vendor_id=args.vendor_id,
                                     name=args.name, max_priority=_max_priority(args, settings))
        except psycopg.errors.ForeignKeyViolation:
            owner = f"user {args.user_id}" if args.user_id else f"vendor {args.vendor_id}"
            print(f"stayler: error: there is no {owner}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps({"id": str(key_id), "key": key, "scope": args.scope}))
    elif getattr(args, "with_id", False):
        print(f"{key_id} {key}")
    else:
        print(key)
        print(f"key id {key_id}, scope {args.scope}: store the key now, it is not shown again", file=sys.stderr)
    return 0


def _max_priority(args: argparse.Namespace, settings: Settings) -> int:
    value = getattr(args, "max_priority", None)
    return settings.api_key_max_priority if value is None else int(value)


def cmd_apikeys_list(args: argparse.Namespace, settings: Settings) -> int:
    """stayler apikeys list: every key (or one owner's), without secrets."""
    with database(settings) as url, _connect(url, settings) as conn:
        rows = list_keys(conn, user_id=args.user_id, vendor_id=args.vendor_id)
    if args.json:
        print(json.dumps(rows, default=str, indent=2))
        return 0
    lines = [("id", "key starts", "scope", "owner", "state", "name")]
    for row in rows:
        owner = f"user:{row['user_id']}" if row["user_id"] else f"vendor:{row['vendor_id']}"
        state = f"revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else "live"
        lines.append((str(row["id"]), f"{row['key_prefix']}…", row["scope"], owner, state, row["name"] or ""))
    if not rows:
        print("no API keys", file=sys.stderr)
        return 0
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return 0


def cmd_apikeys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """stayler apikeys revoke: the key stops working at once."""
    with database(settings) as url, _connect(url, settings) as conn:
        found = revoke_key(conn, args.id)
    if not found:
        print(f"stayler: error: no API key {args.id}", file=sys.stderr)
        return 2
    print(f"revoked {args.id}")
    return 0


def cmd_webhooks(args: argparse.Namespace, settings: Settings) -> int:
    """stayler webhooks: run the webhook sender until SIGTERM/SIGINT."""
    from api.webhooks.sender import Sender

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with database(settings) as url:
        migrate_configured(settings, url)
        sender = Sender(settings, url)
        print(f"stayler webhooks: delivering webhooks from {_where(url)}; SIGTERM or Ctrl-C stops", flush=True)
        try:
            sender.run(stop)
        finally:
            sender.close()
    return 0


def _where(url: str) -> str:
    """The database of ``url`` as host/name, without its credentials."""
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)
    return f"{info.get('host') or 'local socket'}/{info.get('dbname') or ''}"
