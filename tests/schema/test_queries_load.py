"""schema.queries: the named queries load once, refuse duplicates and bind named parameters only
(no database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from schema.queries import Q, load


def test_named_queries_load_once_and_refuse_duplicates(tmp_path: Path) -> None:
    assert "FOR UPDATE OF j SKIP LOCKED" in Q.job_claim_batch
    with pytest.raises(AttributeError, match="no query named"):
        _ = Q.nope
    dup = tmp_path / "q.sql"
    dup.write_text("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
    with pytest.raises(ValueError, match="twice"):
        load(dup)
    for name in Q.names():
        assert "%(" in getattr(Q, name) or "%s" not in getattr(Q, name)  # named, bound parameters only
