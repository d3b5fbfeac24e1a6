"""The query layer checks itself: named queries used in the code exist, enums match the CHECK
constraints, error types match the documented list, and ``schema/current.sql`` matches the migrations."""

from __future__ import annotations

import ast
import re
from enum import StrEnum
from pathlib import Path
from typing import Any

import psycopg
import pytest

from schema.current import CURRENT_FILE, defining_migrations, render
from schema.queries import Q
from schema.statuses import TERMINAL, ConversionStatus, ImageType, JobStatus, OwnerType, UsageAction
from worker.errors import ERROR_TYPES

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".venv", ".state", ".git", "node_modules", "build", "dist", "bench-results"}
PLURAL_ENTITIES = {"jobs", "conversions", "images", "workers", "users", "vendors", "webhooks", "keys"}


def _python_files() -> list[Path]:
    return [p for p in ROOT.rglob("*.py") if not SKIP_DIRS & set(p.relative_to(ROOT).parts)]


class _QueryNames(ast.NodeVisitor):
    """``Q.<name>`` attribute reads, except inside ``with pytest.raises(...)`` (deliberate misses)."""

    def __init__(self) -> None:
        self.used: list[tuple[str, int]] = []
        self._raises = 0

    def visit_With(self, node: ast.With) -> None:
        raises = any(isinstance(i.context_expr, ast.Call) and ast.unparse(i.context_expr.func) == "pytest.raises"
                     for i in node.items)
        self._raises += raises
        self.generic_visit(node)
        self._raises -= raises

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and node.value.id == "Q" and not self._raises:
            self.used.append((node.attr, node.lineno))
        self.generic_visit(node)


def test_every_named_query_used_in_the_code_exists() -> None:
    """The loader fails only when a line runs; this fails for every ``Q.<typo>`` in the repository."""
    known = set(Q.names()) | {"names"}
    missing = []
    scanned = 0
    for path in _python_files():
        visitor = _QueryNames()
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        scanned += bool(visitor.used)
        missing += [f"{path.relative_to(ROOT)}:{line}: Q.{name}" for name, line in visitor.used if name not in known]
    assert scanned > 5  # the scan reaches the callers
    assert missing == []


def test_query_names_follow_one_scheme() -> None:
    """entity_verb[_qualifier], lower case, the entity singular."""
    bad = [n for n in Q.names() if not re.fullmatch(r"[a-z]+(_[a-z]+)+", n) or n.split("_")[0] in PLURAL_ENTITIES]
    assert bad == []


def _check_values(db: psycopg.Connection[Any], table: str, column: str) -> set[str]:
    rows = db.execute(
        """SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c
            WHERE c.contype = 'c' AND c.conrelid = %s::regclass
              AND c.conkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s)]
              AND pg_get_constraintdef(c.oid) LIKE '%%ANY (ARRAY[%%'""", (table, table, column)).fetchall()
    assert len(rows) == 1, rows
    return set(re.findall(r"'([^']+)'::text", rows[0][0]))


@pytest.mark.parametrize(("table", "column", "enum"), [
    ("conversions", "status", ConversionStatus),
    ("conversion_jobs", "status", JobStatus),
    ("images", "type", ImageType),
    ("images", "owner_type", OwnerType),
    ("albums", "owner_type", OwnerType),
    ("image_usage_history", "action", UsageAction),
])
def test_enums_match_the_check_constraints(db: psycopg.Connection[Any], table: str, column: str,
                                           enum: type[StrEnum]) -> None:
    assert _check_values(db, table, column) == {m.value for m in enum}


def test_terminal_is_the_terminal_statuses_of_both_machines() -> None:
    assert {s.value for s in ConversionStatus} > TERMINAL and {s.value for s in JobStatus} > TERMINAL
    assert {"completed", "failed", "cancelled"} == TERMINAL


def test_every_error_type_the_sql_writes_is_documented() -> None:
    """error_type literals in the migrations belong to worker.errors.ERROR_TYPES (the documented list)."""
    written = set()
    for path in sorted((ROOT / "schema" / "migrations").glob("*.sql")):
        text = re.sub(r"--[^\n]*", "", path.read_text(encoding="utf-8"))
        written |= set(re.findall(r"error_type\s*:?=\s*'([a-z_]+)'", text))
    assert written  # the scan finds the literals
    assert written <= set(ERROR_TYPES), written - set(ERROR_TYPES)


def test_current_sql_matches_the_migrations(db: psycopg.Connection[Any]) -> None:
    """schema/current.sql is regenerated with `python -m schema.current "$DATABASE_URL"`."""
    assert CURRENT_FILE.exists(), "run python -m schema.current"
    assert CURRENT_FILE.read_text(encoding="utf-8") == render(db), \
        "schema/current.sql is stale: run python -m schema.current \"$DATABASE_URL\""


def test_every_function_has_a_defining_migration(db: psycopg.Connection[Any]) -> None:
    names = {r[0] for r in db.execute(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace").fetchall()}
    assert names - set(defining_migrations()) == set()
    assert defining_migrations()["update_conversion_status"] == "0120_roles.sql"  # ALTER … SECURITY DEFINER
