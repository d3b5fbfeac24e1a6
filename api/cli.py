"""The API's commands: ``stayler apikeys create|list|revoke`` and ``stayler webhooks`` (in :mod:`api.commands`).

``stayler api`` serves the web process, the API with the console mounted in it: the shell composes
it (:mod:`stayler.web`).
"""

from __future__ import annotations

import argparse

from core.cli import Subparsers, add, group, lazy, owner_args, parse_key_id


def register(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    """Add the ``apikeys`` group (create, list, revoke) and ``webhooks``."""
    apikeys = group(subparsers, "apikeys", "API keys of the HTTP API", "Create, list, revoke API keys.")
    p = add(apikeys, "create", "create a key and print it (once: only its hash is stored)",
            lazy("api.commands", "cmd_apikeys_create"))
    owner_args(p, required=True)
    p.add_argument("--scope", choices=["read", "producer", "operator"], default="producer",
                   help="read: GET only; producer: + images, conversions, cancel; operator: + webhooks")
    p.add_argument("--name", help="a label for lists")
    p.add_argument("--max-priority", type=int, default=None,
                   help="highest priority the key may ask for (default: STAYLER_API_KEY_MAX_PRIORITY, 10)")
    p.add_argument("--json", action="store_true", help="print id, key and scope as JSON")
    p.add_argument("--with-id", action="store_true",
                   help="print the key's id, a space and the key on one line (for `read KEY_ID KEY`)")
    p = add(apikeys, "list", "list keys (never their secrets)", lazy("api.commands", "cmd_apikeys_list"))
    owner_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add(apikeys, "revoke", "revoke a key at once", lazy("api.commands", "cmd_apikeys_revoke"))
    p.add_argument("id", type=parse_key_id, help="the key's id (from create or list)")
    add(subparsers, "webhooks", "run the webhook sender (delivers the outbox, retries, disables failing endpoints)",
        lazy("api.commands", "cmd_webhooks"))
