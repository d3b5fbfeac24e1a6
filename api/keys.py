"""API keys: made once, stored as a SHA-256 hash, carrying an owner and a scope."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from schema.queries import Q

KEY_PREFIX = "sk_stayler_"
#: Scopes in increasing power: each includes the ones before it.
SCOPES = ("read", "producer", "operator")


@dataclass(frozen=True)
class Principal:
    """Who a request is: the key's id, its owner and its scope (never the key itself)."""

    key_id: uuid.UUID
    scope: str
    user_id: uuid.UUID | None
    vendor_id: uuid.UUID | None

    @property
    def owner_id(self) -> uuid.UUID:
        """The owning user's or vendor's id."""
        owner = self.user_id or self.vendor_id
        assert owner is not None
        return owner

    @property
    def owner_type(self) -> str:
        """``user`` or ``vendor``."""
        return "user" if self.user_id is not None else "vendor"

    @property
    def owner_label(self) -> str:
        """``user:<id>`` / ``vendor:<id>``, for logs."""
        return f"{self.owner_type}:{self.owner_id}"

    def allows(self, scope: str) -> bool:
        """Whether this key's scope includes ``scope``."""
        return SCOPES.index(self.scope) >= SCOPES.index(scope)

    def owner_params(self) -> dict[str, Any]:
        """``user_id`` / ``vendor_id`` query parameters (one of them NULL)."""
        return {"user_id": self.user_id, "vendor_id": self.vendor_id}


def hash_key(key: str) -> bytes:
    """The stored form of a key."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def new_key() -> str:
    """A fresh random key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_key(conn: psycopg.Connection, *, scope: str, user_id: uuid.UUID | None = None,
               vendor_id: uuid.UUID | None = None, name: str | None = None,
               max_priority: int | None = None) -> tuple[uuid.UUID, str]:
    """Create a key for exactly one owner; returns its id and the key (shown once, never stored).

    ``max_priority`` is the highest priority the key may ask for (None: the column's default, 10).
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}")
    if (user_id is None) == (vendor_id is None):
        raise ValueError("a key belongs to exactly one user or one vendor")
    key = new_key()
    row = conn.execute(Q.api_key_create, {"key_hash": hash_key(key), "key_prefix": key[:len(KEY_PREFIX) + 6],
                                          "name": name, "scope": scope, "user_id": user_id,
                                          "vendor_id": vendor_id}).fetchone()
    assert row is not None
    if max_priority is not None:
        conn.execute(Q.api_key_set_max_priority, {"id": row[0], "max_priority": max_priority})
    return row[0], key


def list_keys(conn: psycopg.Connection, *, user_id: uuid.UUID | None = None,
              vendor_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    """Every key (of one owner when given), without secrets."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(Q.api_key_list, {"user_id": user_id, "vendor_id": vendor_id}).fetchall()


def revoke_key(conn: psycopg.Connection, key_id: uuid.UUID) -> bool:
    """Revoke a key at once; False when there is no such key."""
    return conn.execute(Q.api_key_revoke, {"id": key_id}).fetchone() is not None


def authenticate(conn: psycopg.Connection, key: str) -> Principal | None:
    """The principal of a live key, or None (unknown, malformed or revoked)."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    row = conn.execute(Q.api_key_authenticate, {"key_hash": hash_key(key)}).fetchone()
    if row is None:
        return None
    return Principal(row[0], row[1], row[2], row[3])
