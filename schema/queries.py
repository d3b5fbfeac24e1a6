"""The named SQL statements of ``queries.sql``, loaded once.

Callers write ``conn.execute(Q.job_claim_batch, {...})``: the SQL lives in one file and parameters
are always bound. A misspelt name raises ``AttributeError`` when its line runs;
``tests/schema/test_query_layer.py`` scans every ``Q.<name>`` in the repository, so the suite catches
it before then.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import LiteralString

QUERIES_FILE = Path(__file__).with_name("queries.sql")
_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load(path: Path = QUERIES_FILE) -> dict[str, str]:
    """Parse ``-- name: x`` blocks into ``{name: sql}``."""
    text = path.read_text(encoding="utf-8")
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice in {path}")
        queries[name] = body.strip()
    return queries


class _Queries:
    """Attribute access to the named queries (``Q.job_claim_batch``)."""

    def __init__(self, queries: dict[str, str]) -> None:
        self._queries = queries

    def __getattr__(self, name: str) -> LiteralString:
        try:
            return self._queries[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in {QUERIES_FILE.name}") from None

    def names(self) -> list[str]:
        """Every query name, in file order."""
        return list(self._queries)


Q = _Queries(load())
