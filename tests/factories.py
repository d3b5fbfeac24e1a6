"""Rows for tests, written with plain SQL so tests do not depend on the producer."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg


def make_user(conn: psycopg.Connection) -> uuid.UUID:
    """Insert a user; returns its id."""
    row = conn.execute("INSERT INTO users (email) VALUES (%s) RETURNING id", (f"{uuid.uuid4().hex}@test",)).fetchone()
    assert row is not None
    return row[0]


def make_vendor(conn: psycopg.Connection) -> uuid.UUID:
    """Insert a vendor; returns its id."""
    row = conn.execute("INSERT INTO vendors (name) VALUES (%s) RETURNING id", (f"vendor-{uuid.uuid4().hex[:6]}",)
                       ).fetchone()
    assert row is not None
    return row[0]


def make_image(conn: psycopg.Connection, owner_id: uuid.UUID, *, owner_type: str = "user", type_: str = "user",
               is_public: bool = False, file_path: str | None = None, file_size: int = 1000) -> uuid.UUID:
    """Insert an image row (no file); returns its id."""
    image_id = uuid.uuid4()
    path = file_path or f"images/{image_id}.jpg"
    conn.execute(
        """INSERT INTO images (id, owner_id, owner_type, file_path, file_name, original_url, file_size, mime_type,
                               width, height, type, is_public)
           VALUES (%s, %s, %s, %s, %s, %s, %s, 'image/jpeg', 10, 10, %s, %s)""",
        (image_id, owner_id, owner_type, path, path.rsplit("/", 1)[-1], f"file:///{path}", file_size, type_, is_public),
    )
    return image_id


def make_conversion(conn: psycopg.Connection, *, user_id: uuid.UUID | None = None, priority: int = 0,
                    max_retries: int = 3, person_key: str | None = None, cloth_key: str | None = None,
                    **kwargs: Any) -> uuid.UUID:
    """A user, two images and a conversion with its queued job, through create_conversion()."""
    user_id = user_id or make_user(conn)
    person = make_image(conn, user_id, type_="user", file_path=person_key)
    cloth = make_image(conn, user_id, type_="cloth", file_path=cloth_key)
    row = conn.execute(
        "SELECT create_conversion(user_id := %s, user_image_id := %s, cloth_image_id := %s, priority := %s, "
        "max_retries := %s)", (user_id, person, cloth, priority, max_retries)).fetchone()
    assert row is not None
    return row[0]


def job_of(conn: psycopg.Connection, conversion_id: uuid.UUID) -> dict[str, Any]:
    """The conversion's job row as a dict."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute("SELECT * FROM conversion_jobs WHERE conversion_id = %s", (conversion_id,)).fetchone()
    assert row is not None
    return row


def conversion(conn: psycopg.Connection, conversion_id: uuid.UUID) -> dict[str, Any]:
    """The conversion row as a dict."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute("SELECT * FROM conversions WHERE id = %s", (conversion_id,)).fetchone()
    assert row is not None
    return row
