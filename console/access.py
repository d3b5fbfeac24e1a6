"""Who may use the console: grants on API keys, logins and server-side sessions.

A key logs in only when it has a grant (``console_grants``): ``operator`` (sees everything and acts;
the key must have the ``operator`` scope) or ``viewer`` (sees everything, changes nothing). The
session cookie carries 256 random bits; the table keeps only their SHA-256, the key id and the
session's CSRF token, so revoking the key or the grant ends the session at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

import psycopg

from api.keys import authenticate
from schema.queries import Q

ROLES = ("viewer", "operator")


@dataclass(frozen=True)
class Session:
    """A logged-in console user: the key, its console role, its CSRF token and its audit label."""

    key_id: uuid.UUID
    role: str
    csrf_token: str
    operator: str

    @property
    def can_act(self) -> bool:
        """Whether this session may cancel, retry, pause and resume."""
        return self.role == "operator"

    def csrf_ok(self, token: str | None) -> bool:
        """Whether a form's CSRF token is this session's (compared in constant time)."""
        return bool(token) and hmac.compare_digest(self.csrf_token.encode(), str(token).encode())


class GrantError(ValueError):
    """A grant that cannot be given (unknown key, or an operator grant on a smaller key)."""


def grant(conn: psycopg.Connection, key_id: uuid.UUID, role: str) -> None:
    """Let the key ``key_id`` log in to the console as ``role`` (``viewer`` or ``operator``)."""
    if role not in ROLES:
        raise GrantError(f"role must be one of {ROLES}")
    row = conn.execute(Q.api_key_get_scope, {"key_id": key_id}).fetchone()
    if row is None:
        raise GrantError(f"there is no key {key_id}")
    if role == "operator" and row[0] != "operator":
        raise GrantError(f"an operator grant needs a key with scope 'operator'; this key has {row[0]!r}")
    conn.execute(Q.console_grant_upsert, {"key_id": key_id, "role": role})


def revoke_grant(conn: psycopg.Connection, key_id: uuid.UUID) -> bool:
    """Take the key's console access away (its sessions end with it); False when it had none."""
    return conn.execute(Q.console_grant_revoke, {"key_id": key_id}).fetchone() is not None


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _label(key_prefix: str, name: str | None) -> str:
    return f"console key {key_prefix}…" + (f" ({name})" if name else "")


def login(conn: psycopg.Connection, key: str, ttl_s: float) -> str | None:
    """A new session token for a live, granted key, or None."""
    principal = authenticate(conn, key.strip())
    if principal is None:
        return None
    if conn.execute(Q.console_grant_get_live, {"key_id": principal.key_id}).fetchone() is None:
        return None
    token = secrets.token_urlsafe(32)
    conn.execute(Q.console_session_prune)
    conn.execute(Q.console_session_create, {"token_hash": _hash(token), "key_id": principal.key_id,
                                            "csrf_token": secrets.token_urlsafe(32), "ttl_s": ttl_s})
    return token


def session(conn: psycopg.Connection, token: str) -> Session | None:
    """The live session of a cookie's token, or None (unknown, expired, key revoked, grant gone)."""
    if not token or len(token) > 200:
        return None
    row = conn.execute(Q.console_session_get, {"token_hash": _hash(token)}).fetchone()
    if row is None:
        return None
    key_id, csrf_token, role, key_prefix, name = row
    return Session(key_id, role, csrf_token, _label(key_prefix, name))


def logout(conn: psycopg.Connection, token: str) -> None:
    """End a session."""
    conn.execute(Q.console_session_delete, {"token_hash": _hash(token)})
