"""``stayler apikeys console KEY_ID --role operator|viewer|none``: who may log in to the console."""

from __future__ import annotations

import argparse
import sys

from console.access import GrantError, grant, revoke_grant
from core.services import database
from core.settings import Settings
from schema.connections import connect


def cmd_apikeys_console(args: argparse.Namespace, settings: Settings) -> int:
    """Give a key console access as an operator or a viewer, or take it away (``none``)."""
    with database(settings) as url, connect(url, settings, "cli") as conn:
        if args.role == "none":
            found = revoke_grant(conn, args.id)
            print(f"console access of {args.id} removed" if found else f"{args.id} had no console access")
            return 0
        try:
            grant(conn, args.id, args.role)
        except GrantError as exc:
            print(f"stayler: error: {exc}", file=sys.stderr)
            return 2
    print(f"{args.id} may log in to the console as {args.role}")
    return 0
