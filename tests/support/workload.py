"""A user with a garment and sample person photos, registered through the producer, and the limits
every driver registers images with."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from modelkit.samples import make_garment, make_person, to_bytes
from producer import register_image, submit
from producer.accounts import create_user
from producer.images import ImageLimits
from schema.statuses import TERMINAL
from storage import LocalStorage

LIMITS = ImageLimits(max_bytes=20_000_000, max_pixels=40_000_000, thumbnail_size=64)


class Workload:
    """A user with a garment, and a way to submit conversions of sample person photos."""

    def __init__(self, conn: psycopg.Connection, storage_dir: Path) -> None:
        """Register a user and one garment."""
        self.conn = conn
        self.storage = LocalStorage(storage_dir)
        self.user = create_user(conn)
        self.garment = register_image(conn, self.storage, to_bytes(make_garment(seed=3)), owner_id=self.user,
                                      owner_type="user", image_type="cloth", limits=LIMITS).id
        self._person: uuid.UUID | None = None

    def person(self) -> uuid.UUID:
        """One registered person photo (shared by conversions; they only read it)."""
        if self._person is None:
            img = make_person(192, 256, seed=5).image
            self._person = register_image(self.conn, self.storage, to_bytes(img), owner_id=self.user,
                                          owner_type="user", image_type="user", limits=LIMITS).id
        return self._person

    def submit(self, count: int = 1, *, style: str | None = None, max_retries: int = 3,
               priority: int = 0) -> list[uuid.UUID]:
        """Create ``count`` conversions."""
        return [submit(self.conn, user_id=self.user, user_image_id=self.person(), cloth_image_id=self.garment,
                       style_name=style, max_retries=max_retries, priority=priority) for _ in range(count)]

    def statuses(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Conversion id → status."""
        rows = self.conn.execute("SELECT id, status FROM conversions WHERE id = ANY(%s)", (ids,)).fetchall()
        return {r[0]: r[1] for r in rows}

    def all_terminal(self, ids: list[uuid.UUID]) -> bool:
        """Whether every conversion reached a terminal status."""
        st = self.statuses(ids)
        return len(st) == len(ids) and all(s in TERMINAL for s in st.values())

    def job(self, conversion_id: uuid.UUID) -> dict[str, Any]:
        """The conversion's job row."""
        with self.conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            row = cur.execute("SELECT * FROM conversion_jobs WHERE conversion_id = %s", (conversion_id,)).fetchone()
        assert row is not None
        return row


@contextlib.contextmanager
def connect(db_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn
