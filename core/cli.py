"""What every package's command registration shares: the handler type, lazy handlers, argument types.

Each package that adds ``stayler`` subcommands has a ``cli.py`` exposing ``register(subparsers)``; the
shell (:mod:`stayler.cli`) only composes them. A handler takes the parsed arguments and the settings
and returns the exit code; it is named by module and function (:func:`lazy`), so building the parser
(``stayler --help``) imports no handler module.
"""

from __future__ import annotations

import argparse
import importlib
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.settings import Settings

Handler = Callable[[argparse.Namespace, "Settings"], int]
Subparsers = argparse._SubParsersAction  # the set of subcommands a group (or the top level) holds


def lazy(module: str, name: str) -> Handler:
    """A handler imported on first use, so `stayler --help` stays fast and light."""
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        fn: Handler = getattr(importlib.import_module(module), name)
        return fn(args, settings)
    return handler


def add(parent: Subparsers[argparse.ArgumentParser], name: str, help_: str, handler: Handler,
        description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand ``name`` of ``parent`` that runs ``handler``."""
    p = parent.add_parser(name, help=help_, description=description or help_)
    p.set_defaults(handler=handler)
    return p


def group(parent: Subparsers[argparse.ArgumentParser], name: str, help_: str, description: str
          ) -> Subparsers[argparse.ArgumentParser]:
    """The subcommands of the command group ``name`` (``stayler NAME SUBCOMMAND``), created on first use.

    Two packages may add to one group (``apikeys``: the API's keys, the console's grants).
    """
    existing = parent.choices.get(name)
    if existing is not None:
        for action in existing._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action
    parser = parent.add_parser(name, help=help_, description=description)
    return parser.add_subparsers(dest=f"{name}_command", metavar=f"{name.upper()}_COMMAND", required=True)


def parse_uuid(value: str) -> uuid.UUID:
    """argparse type: a UUID."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {value!r}") from None


def parse_key_id(value: str) -> uuid.UUID:
    """argparse type: an API key's id. A key given instead is refused without being printed back."""
    try:
        return parse_uuid(value)
    except argparse.ArgumentTypeError:
        hint = "find the key's id with `stayler apikeys list` (the id is printed by `apikeys create` too)"
        if value.startswith("sk_"):
            raise argparse.ArgumentTypeError(f"that is a key, not a key's id: {hint}") from None
        raise argparse.ArgumentTypeError(f"not a key id (a UUID): {hint}") from None


def parse_json_object(value: str) -> dict[str, Any]:
    """argparse type: a JSON object."""
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError("metadata must be a JSON object")
    return data


def parse_when(value: str) -> datetime:
    """argparse type: an ISO date or timestamp."""
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {value!r}") from None


def owner_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    """``--user-id`` / ``--vendor-id``: the owner, one or the other."""
    group_ = p.add_mutually_exclusive_group(required=required)
    group_.add_argument("--user-id", type=parse_uuid, help="the owning user's id")
    group_.add_argument("--vendor-id", type=parse_uuid, help="the owning vendor's id")
