"""The console's command: ``stayler apikeys console KEY_ID --role …`` (handler in :mod:`console.commands`)."""

from __future__ import annotations

import argparse

from core.cli import Subparsers, add, group, lazy, parse_key_id


def register(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    """Add ``console`` to the ``apikeys`` group: who may log in to the operations console."""
    apikeys = group(subparsers, "apikeys", "API keys of the HTTP API", "Create, list, revoke API keys.")
    p = add(apikeys, "console", "let a key log in to the operations console (/console), or not",
            lazy("console.commands", "cmd_apikeys_console"))
    p.add_argument("id", type=parse_key_id, help="the key's id (from create or list)")
    p.add_argument("--role", choices=["operator", "viewer", "none"], required=True,
                   help="operator: sees everything and acts (needs an operator-scope key); viewer: read-only")
