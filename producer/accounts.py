"""Minimal users and vendors (the seed references them; upstream services own the real accounts)."""

from __future__ import annotations

import uuid

import psycopg

from producer.errors import ProducerError, database_errors
from schema.queries import Q


def create_user(conn: psycopg.Connection, email: str | None = None, display_name: str | None = None) -> uuid.UUID:
    """Insert a user; returns its id. An e-mail address already taken is refused (``email_taken``)."""
    try:
        with database_errors("creating the user"):
            row = conn.execute(Q.user_create, {"email": email, "display_name": display_name}).fetchone()
    except ProducerError as exc:
        if isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
            raise ProducerError("email_taken", f"a user with the e-mail address {email} already exists "
                                               "(e-mail addresses are unique; leave --email out or use another)"
                                ) from exc.__cause__
        raise
    assert row is not None
    return uuid.UUID(str(row[0]))


def create_vendor(conn: psycopg.Connection, name: str) -> uuid.UUID:
    """Insert a vendor; returns its id."""
    with database_errors("creating the vendor"):
        row = conn.execute(Q.vendor_create, {"name": name}).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))
