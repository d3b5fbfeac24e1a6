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
from schema.queries import ENTITIES, QUERIES_DIR, Q, entity_of, load_file
from schema.statuses import TERMINAL, ConversionStatus, ImageType, JobStatus, OwnerType, UsageAction
from worker.errors import ERROR_TYPES

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".venv", ".state", ".git", "node_modules", "build", "dist", "bench-results"}


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


def _functions(db: psycopg.Connection[Any]) -> set[str]:
    return {r[0] for r in db.execute("SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace")}


def _tables(db: psycopg.Connection[Any]) -> set[str]:
    return {r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def _normalized(sql: str) -> str:
    """A statement without comments, parameter names or layout: two names for it compare equal."""
    return " ".join(re.sub(r"%\(\w+\)s", "%s", re.sub(r"--[^\n]*", "", sql)).split())


def test_the_entities_are_tables_of_the_migrated_schema(db: psycopg.Connection[Any]) -> None:
    tables = _tables(db)
    assert {t for ts in ENTITIES.values() for t in ts} <= tables


def test_each_query_is_named_after_its_function_or_its_entity(db: psycopg.Connection[Any]) -> None:
    """A query calling a schema function has that function's name; any other is entity_verb[_qualifier]
    with an entity of ``schema.queries.ENTITIES`` whose table the statement reads or writes."""
    functions = _functions(db)
    bad = []
    for name in Q.names():
        sql = re.sub(r"--[^\n]*", "", getattr(Q, name))
        called = {f for f in functions if re.search(rf"\b{f}\s*\(", sql)}
        if name in functions:
            if name not in called:
                bad.append(f"{name}: named after a function it does not call")
            continue
        entity = entity_of(name)
        if entity is None or not re.fullmatch(rf"{entity}(_[a-z]+)+", name):
            bad.append(f"{name}: no entity of ENTITIES, or not entity_verb[_qualifier]")
        elif ENTITIES[entity] and not any(re.search(rf"\b{t}\b", sql) for t in ENTITIES[entity]):
            bad.append(f"{name}: touches none of {ENTITIES[entity]}")
        elif called - {"fair_owner_in", "image_object_keys"}:
            bad.append(f"{name}: calls {sorted(called)} but is not named after it")
    assert bad == []


def test_no_two_names_hold_the_same_statement() -> None:
    by_statement: dict[str, list[str]] = {}
    for name in Q.names():
        by_statement.setdefault(_normalized(getattr(Q, name)), []).append(name)
    assert [names for names in by_statement.values() if len(names) > 1] == []


def test_each_file_holds_its_entity() -> None:
    """``queries/<stem>.sql`` holds the queries of entity <stem> (or of an entity it starts or
    whose tables it covers: ``job_attempt`` in job.sql, ``user`` in owner.sql), and any function's."""
    bad = []
    for path in sorted(QUERIES_DIR.glob("*.sql")):
        names = list(load_file(path))
        assert names, path.name
        stem_tables = set(ENTITIES.get(path.stem, ()))
        for name in names:
            entity = entity_of(name)
            if entity is None or entity.startswith(path.stem) or stem_tables >= set(ENTITIES[entity]) > set():
                continue
            bad.append(f"{path.name}: {name}")
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
