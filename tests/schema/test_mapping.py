"""The SQLAlchemy mapping and the migrated database agree: tables, columns, types, nullability,
defaults, primary keys and foreign keys (with ON DELETE)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.dialects import postgresql

from schema.mapping import ALL_MODELS, Base
from schema.migrate import BOOKKEEPING_TABLES, PRODUCT_TABLES

DIALECT = postgresql.dialect()


def _type(t: Any) -> str:
    return str(t.compile(dialect=DIALECT)).upper()


@pytest.fixture
def inspector(db_url: str) -> Any:
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        yield inspect(engine)
    finally:
        engine.dispose()


def test_every_table_is_mapped(inspector: Any) -> None:
    in_db = set(inspector.get_table_names()) - set(BOOKKEEPING_TABLES)
    # The queue's and the API's bookkeeping tables (leader_lease, webhook_*, …) are not product tables.
    assert set(Base.metadata.tables) == set(PRODUCT_TABLES) <= in_db
    assert {m.__tablename__ for m in ALL_MODELS} == set(PRODUCT_TABLES)


@pytest.mark.parametrize("table", PRODUCT_TABLES)
def test_columns_agree(inspector: Any, table: str) -> None:
    mapped = Base.metadata.tables[table]
    reflected = {c["name"]: c for c in inspector.get_columns(table)}
    assert list(reflected) == [c.name for c in mapped.columns], "column names and order"
    for col in mapped.columns:
        db_col = reflected[col.name]
        assert _type(col.type) == _type(db_col["type"]), col.name
        assert col.nullable == db_col["nullable"], col.name
        assert (col.server_default is not None) == (db_col["default"] is not None), col.name
    pk = inspector.get_pk_constraint(table)["constrained_columns"]
    assert pk == [c.name for c in mapped.primary_key.columns]


@pytest.mark.parametrize("table", PRODUCT_TABLES)
def test_foreign_keys_agree(inspector: Any, table: str) -> None:
    mapped = Base.metadata.tables[table]
    in_map = {
        (tuple(fk.column_keys), fk.referred_table.name, tuple(e.column.name for e in fk.elements),
         (fk.ondelete or "NO ACTION").upper())
        for fk in mapped.foreign_key_constraints
    }
    in_db = {
        (tuple(fk["constrained_columns"]), fk["referred_table"], tuple(fk["referred_columns"]),
         (fk["options"].get("ondelete") or "NO ACTION").upper())
        for fk in inspector.get_foreign_keys(table)
    }
    assert in_map == in_db
