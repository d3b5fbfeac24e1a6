"""Rows for tests, written with plain SQL so tests do not depend on the producer.

One set of factories for every test: module functions (``make_user(conn)``, ``make_conversion(conn)``,
…) and :class:`Factory`, the same rows bound to one connection (the schema tests' ``make`` fixture).
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import psycopg

_seq = itertools.count()


def _one(conn: psycopg.Connection[Any], query: str, params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def make_user(conn: psycopg.Connection[Any], *, display_name: str | None = None) -> uuid.UUID:
    """Insert a user; returns its id."""
    return _one(conn, "INSERT INTO users (email, display_name) VALUES (%s, %s) RETURNING id",
                (f"{uuid.uuid4().hex}@test", display_name))


def make_vendor(conn: psycopg.Connection[Any], name: str | None = None) -> uuid.UUID:
    """Insert a vendor; returns its id."""
    return _one(conn, "INSERT INTO vendors (name) VALUES (%s) RETURNING id",
                (name or f"vendor-{uuid.uuid4().hex[:6]}",))


def make_album(conn: psycopg.Connection[Any], owner_id: uuid.UUID, owner_type: str = "user",
               name: str | None = None) -> uuid.UUID:
    """Insert an album; returns its id."""
    return _one(conn, "INSERT INTO albums (owner_id, owner_type, name) VALUES (%s, %s, %s) RETURNING id",
                (owner_id, owner_type, name or f"album {next(_seq)}"))


def make_image(conn: psycopg.Connection[Any], owner_id: uuid.UUID, *, owner_type: str = "user", type_: str = "user",
               is_public: bool = False, file_path: str | None = None, file_size: int = 1000,
               album_id: uuid.UUID | None = None, original_url: str | None = None,
               size: tuple[int, int] | None = (10, 10)) -> uuid.UUID:
    """Insert an image row (no file); returns its id."""
    image_id = uuid.uuid4()
    path = file_path or f"images/{image_id}.jpg"
    width, height = size or (None, None)
    conn.execute(
        """INSERT INTO images (id, owner_id, owner_type, album_id, file_path, file_name, original_url, file_size,
                               mime_type, width, height, type, is_public)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'image/jpeg', %s, %s, %s, %s)""",
        (image_id, owner_id, owner_type, album_id, path, path.rsplit("/", 1)[-1], original_url or f"file:///{path}",
         file_size, width, height, type_, is_public),
    )
    return image_id


def make_conversion(conn: psycopg.Connection[Any], *, user_id: uuid.UUID | None = None, priority: int = 0,
                    max_retries: int = 3, person_key: str | None = None, cloth_key: str | None = None,
                    **kwargs: Any) -> uuid.UUID:
    """A user, two images and a conversion with its queued job, through create_conversion()."""
    user_id = user_id or make_user(conn)
    person = make_image(conn, user_id, type_="user", file_path=person_key)
    cloth = make_image(conn, user_id, type_="cloth", file_path=cloth_key)
    return _one(conn, "SELECT create_conversion(user_id := %s, user_image_id := %s, cloth_image_id := %s, "
                "priority := %s, max_retries := %s)", (user_id, person, cloth, priority, max_retries))


def job_of(conn: psycopg.Connection[Any], conversion_id: uuid.UUID) -> dict[str, Any]:
    """The conversion's job row as a dict."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute("SELECT * FROM conversion_jobs WHERE conversion_id = %s", (conversion_id,)).fetchone()
    assert row is not None
    return row


def conversion(conn: psycopg.Connection[Any], conversion_id: uuid.UUID) -> dict[str, Any]:
    """The conversion row as a dict."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute("SELECT * FROM conversions WHERE id = %s", (conversion_id,)).fetchone()
    assert row is not None
    return row


class Factory:
    """The factories bound to one connection; every method returns the new row's id."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        """Bind to ``conn``."""
        self.conn = conn

    def user(self) -> uuid.UUID:
        """A user with a display name."""
        return make_user(self.conn, display_name=f"User {next(_seq)}")

    def vendor(self) -> uuid.UUID:
        """A vendor."""
        return make_vendor(self.conn, f"Vendor {next(_seq)}")

    def album(self, owner_id: uuid.UUID, owner_type: str = "user", name: str | None = None) -> uuid.UUID:
        """An album of ``owner_id``."""
        return make_album(self.conn, owner_id, owner_type, name)

    def image(self, owner_id: uuid.UUID, owner_type: str = "user", type: str = "user", *,
              is_public: bool = False, album_id: uuid.UUID | None = None, file_size: int = 1000) -> uuid.UUID:
        """An image row as the seed writes them (an upload path and a CDN address, no pixel size)."""
        n = next(_seq)
        return make_image(self.conn, owner_id, owner_type=owner_type, type_=type, is_public=is_public,
                          album_id=album_id, file_size=file_size, file_path=f"/uploads/{n}.jpg",
                          original_url=f"https://cdn.example.test/{n}.jpg", size=None)

    def user_conversion(self, **kwargs: Any) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID, uuid.UUID]:
        """A user, their image, a public cloth image and a conversion: (user, user_img, cloth_img, conv)."""
        user = self.user()
        vendor = self.vendor()
        user_img = self.image(user, "user", "user", file_size=1000)
        cloth_img = self.image(vendor, "vendor", "cloth", is_public=True, file_size=500)
        conv = _one(self.conn,
                    "SELECT create_conversion(user_id := %(u)s, user_image_id := %(ui)s, cloth_image_id := %(ci)s)",
                    {"u": user, "ui": user_img, "ci": cloth_img, **kwargs})
        return user, user_img, cloth_img, conv

    def result_image(self, owner_id: uuid.UUID, owner_type: str = "user", file_size: int = 2000) -> uuid.UUID:
        """A result image row."""
        return self.image(owner_id, owner_type, "result", file_size=file_size)
