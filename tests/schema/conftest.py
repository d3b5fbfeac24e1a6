"""Helpers for the schema tests: row factories and an SQLSTATE assertion.

Database fixtures (``pg_admin_url``, ``db_url``, ``db``) come from ``tests/conftest.py``.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from schema.errors import BY_SQLSTATE, translate

_seq = itertools.count()


class Factory:
    """Inserts minimal valid rows; every method returns the new row's id."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def _one(self, query: str, params: dict[str, Any]) -> Any:
        row = self.conn.execute(query, params).fetchone()
        assert row is not None
        return row[0]

    def user(self) -> uuid.UUID:
        n = next(_seq)
        return self._one(
            "INSERT INTO users (email, display_name) VALUES (%(e)s, %(d)s) RETURNING id",
            {"e": f"user{n}@example.test", "d": f"User {n}"},
        )

    def vendor(self) -> uuid.UUID:
        return self._one("INSERT INTO vendors (name) VALUES (%(n)s) RETURNING id", {"n": f"Vendor {next(_seq)}"})

    def album(self, owner_id: uuid.UUID, owner_type: str = "user", name: str | None = None) -> uuid.UUID:
        return self._one(
            "INSERT INTO albums (owner_id, owner_type, name) VALUES (%(o)s, %(t)s, %(n)s) RETURNING id",
            {"o": owner_id, "t": owner_type, "n": name or f"album {next(_seq)}"},
        )

    def image(
        self,
        owner_id: uuid.UUID,
        owner_type: str = "user",
        type: str = "user",
        *,
        is_public: bool = False,
        album_id: uuid.UUID | None = None,
        file_size: int = 1000,
    ) -> uuid.UUID:
        n = next(_seq)
        return self._one(
            """INSERT INTO images (owner_id, owner_type, album_id, file_path, file_name, original_url,
                                   file_size, mime_type, type, is_public)
               VALUES (%(o)s, %(ot)s, %(a)s, %(p)s, %(f)s, %(u)s, %(s)s, 'image/jpeg', %(t)s, %(pub)s)
               RETURNING id""",
            {
                "o": owner_id, "ot": owner_type, "a": album_id, "p": f"/uploads/{n}.jpg",
                "f": f"{n}.jpg", "u": f"https://cdn.example.test/{n}.jpg", "s": file_size,
                "t": type, "pub": is_public,
            },
        )

    def user_conversion(self, **kwargs: Any) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID, uuid.UUID]:
        """A user, their image, a public cloth image and a conversion: (user, user_img, cloth_img, conv)."""
        user = self.user()
        vendor = self.vendor()
        user_img = self.image(user, "user", "user", file_size=1000)
        cloth_img = self.image(vendor, "vendor", "cloth", is_public=True, file_size=500)
        conv = self._one(
            "SELECT create_conversion(user_id := %(u)s, user_image_id := %(ui)s, cloth_image_id := %(ci)s)",
            {"u": user, "ui": user_img, "ci": cloth_img, **kwargs},
        )
        return user, user_img, cloth_img, conv

    def result_image(self, owner_id: uuid.UUID, owner_type: str = "user", file_size: int = 2000) -> uuid.UUID:
        return self.image(owner_id, owner_type, "result", file_size=file_size)


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
