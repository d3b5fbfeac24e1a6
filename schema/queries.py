"""The named SQL statements of ``schema/queries/*.sql``, loaded once.

One file per entity (``job.sql``, ``conversion.sql``, ``webhook.sql``, …). Callers write
``conn.execute(Q.job_claim_batch, {...})``: the SQL lives in those files and parameters are always
bound. A misspelt name raises ``AttributeError`` when its line runs; ``tests/schema/test_query_layer.py``
scans every ``Q.<name>`` in the repository, so the suite catches it before then.

Names (schema/README.md, "The query layer"): a query that calls one of the schema's functions has
that function's name (``jobs_complete``, ``create_conversion``); every other query is
``entity_verb[_qualifier]`` with an entity of :data:`ENTITIES`, whose tables the statement reads or
writes. The same test checks both against a migrated database.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import LiteralString

QUERIES_DIR = Path(__file__).with_name("queries")
_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)

#: Entity (the first words of a query's name) -> the tables it stands for. The longest entity a
#: name starts with is the query's entity; ``db`` is the server itself (no table).
ENTITIES: dict[str, tuple[str, ...]] = {
    "album": ("albums",),
    "api_key": ("api_keys",),
    "console_grant": ("console_grants",),
    "console_session": ("console_sessions",),
    "conversion": ("conversions",),
    "conversion_metric": ("conversion_metrics",),
    "db": (),
    "fair_owner": ("owner_lanes", "owner_load"),
    "fair_plan": ("fair_plans",),
    "fleet_control": ("fleet_controls",),
    "image": ("images",),
    "image_usage": ("image_usage_history",),
    "job": ("conversion_jobs",),
    "job_attempt": ("conversion_job_attempts",),
    "leader_lease": ("leader_lease",),
    "operator_action": ("operator_actions",),
    "owner": ("users", "vendors"),
    "storage_cleanup": ("storage_cleanup",),
    "storage_marker": ("storage_key_cleanup",),
    "user": ("users",),
    "vendor": ("vendors",),
    "webhook": ("webhook_endpoints", "webhook_deliveries", "webhook_attempts", "webhook_events"),
    "webhook_attempt": ("webhook_attempts",),
    "webhook_delivery": ("webhook_deliveries",),
    "webhook_endpoint": ("webhook_endpoints",),
    "worker": ("workers",),
}


def entity_of(name: str) -> str | None:
    """The longest entity of :data:`ENTITIES` that ``name`` starts with (``entity_…``), or None."""
    found = [e for e in ENTITIES if name.startswith(e + "_")]
    return max(found, key=len) if found else None


def load_file(path: Path) -> dict[str, str]:
    """Parse one file's ``-- name: x`` blocks into ``{name: sql}``."""
    parts = _NAME.split(path.read_text(encoding="utf-8"))
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice in {path}")
        queries[name] = body.strip()
    return queries


def load(folder: Path = QUERIES_DIR) -> dict[str, str]:
    """Every named query of every ``*.sql`` file in ``folder`` (files in name order), or of one file."""
    if folder.is_file():
        return load_file(folder)
    queries: dict[str, str] = {}
    for path in sorted(folder.glob("*.sql")):
        for name, sql in load_file(path).items():
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice (again in {path.name})")
            queries[name] = sql
    return queries


class _Queries:
    """Attribute access to the named queries (``Q.job_claim_batch``)."""

    def __init__(self, queries: dict[str, str]) -> None:
        self._queries = queries

    def __getattr__(self, name: str) -> LiteralString:
        try:
            return self._queries[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in {QUERIES_DIR.name}/*.sql") from None

    def names(self) -> list[str]:
        """Every query name, in file order."""
        return list(self._queries)


Q = _Queries(load())
