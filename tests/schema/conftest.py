"""Helpers for the schema tests: the row factory fixture and an SQLSTATE assertion.

Database fixtures (``pg_admin_url``, ``db_url``, ``db``) come from ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from schema.errors import BY_SQLSTATE, translate
from tests.support.factories import Factory

__all__ = ["Factory", "make", "refused"]


@pytest.fixture
def make(db: psycopg.Connection[Any]) -> Factory:
    """Row factory bound to the test's fresh database."""
    return Factory(db)


@contextmanager
def refused(sqlstate: str, prefix: str | None = None) -> Iterator[None]:
    """Assert the block raises a database error with ``sqlstate`` (and message ``prefix``).

    For the schema's own SA codes it also checks that ``schema.errors.translate`` maps the error
    to the class registered for that code.
    """
    with pytest.raises(psycopg.Error) as info:
        yield
    err = info.value
    assert err.sqlstate == sqlstate, f"expected {sqlstate}, got {err.sqlstate}: {err}"
    if prefix is not None:
        assert (err.diag.message_primary or "").startswith(prefix), err.diag.message_primary
    if sqlstate in BY_SQLSTATE:
        translated = translate(err)
        assert type(translated) is BY_SQLSTATE[sqlstate]
        assert translated.__cause__ is err
