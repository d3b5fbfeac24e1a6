"""schema.channels names exactly the channels the triggers notify on."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg

from schema import channels

CURRENT_SQL = Path(__file__).resolve().parents[2] / "schema" / "current.sql"
#: ``pg_notify('name', …)`` or ``NOTIFY name``, as PL/pgSQL bodies write them.
NOTIFIED = re.compile(r"pg_notify\(\s*'([a-z_][a-z0-9_]*)'|\bNOTIFY\s+\"?([a-z_][a-z0-9_]*)", re.IGNORECASE)


def notified_in(text: str) -> set[str]:
    return {a or b for a, b in NOTIFIED.findall(text)}


def test_the_parser_reads_both_spellings() -> None:
    assert notified_in("PERFORM pg_notify('a_b', NEW.id::text); NOTIFY c;") == {"a_b", "c"}


def test_the_channels_are_those_of_the_schema_dump() -> None:
    assert notified_in(CURRENT_SQL.read_text()) == set(channels.ALL)


def test_the_channels_are_those_of_the_migrated_functions(db: psycopg.Connection) -> None:
    bodies = [row[0] for row in db.execute(
        "SELECT prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')")]
    assert notified_in("\n".join(bodies)) == set(channels.ALL)
    assert len(set(channels.ALL)) == len(channels.ALL)
