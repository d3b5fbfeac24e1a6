"""Webhook signing secrets encrypted at rest with keys from the environment (``STAYLER_SECRET_KEYS``).

The setting is a comma-separated list of Fernet keys (AES-128-CBC + HMAC-SHA256, from
``cryptography``): the first encrypts, every one decrypts, so a key is rotated by putting a new key
first and dropping the old one once the sender has re-encrypted every secret (docs/operations.md).
A stored secret is ``enc1:<key id>:<Fernet token>``, the key id being the first 8 hex digits of the
key's SHA-256, so the rows still under an old key can be found with SQL. A stored value without the
prefix is a plaintext secret from before encryption (or from a deployment without keys); it still
signs, and the sender encrypts it under the first key when keys are set.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PREFIX = b"enc1:"


class SecretKeyError(ValueError):
    """A stored secret cannot be decrypted with the configured keys, or a key is malformed."""


def key_id(key: str) -> bytes:
    """The stored tag of a key: 8 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:8].encode()


def parse_keys(value: str) -> list[str]:
    """The keys of a ``STAYLER_SECRET_KEYS`` value; raises :class:`SecretKeyError` for a malformed one."""
    keys = [k.strip() for k in value.split(",") if k.strip()]
    for key in keys:
        try:
            if len(base64.urlsafe_b64decode(key.encode())) != 32:
                raise ValueError
        except ValueError:
            raise SecretKeyError("each STAYLER_SECRET_KEYS entry must be a Fernet key (url-safe base64 of "
                                 "32 bytes; make one with `python -c \"from cryptography.fernet import Fernet; "
                                 "print(Fernet.generate_key().decode())\"`)") from None
    return keys


class SecretBox:
    """Seals and opens stored signing secrets with the configured keys (none: stored as they are)."""

    def __init__(self, keys: list[str]) -> None:
        """A box over ``keys`` (first encrypts, all decrypt); an empty list keeps secrets in plaintext."""
        self.keys = keys
        self.fernet = MultiFernet([Fernet(k.encode()) for k in keys]) if keys else None
        self.primary = PREFIX + key_id(keys[0]) + b":" if keys else b""

    @classmethod
    def from_setting(cls, value: str) -> SecretBox:
        """A box for a ``STAYLER_SECRET_KEYS`` value."""
        return cls(parse_keys(value))

    def seal(self, secret: bytes) -> bytes:
        """The value to store for ``secret``: encrypted under the first key, or as is without keys."""
        if self.fernet is None:
            return secret
        return self.primary + self.fernet.encrypt(secret)

    def open(self, stored: bytes) -> bytes:
        """The signing key of a stored value (plaintext values pass through)."""
        if not stored.startswith(PREFIX):
            return stored
        if self.fernet is None:
            raise SecretKeyError("the secret is encrypted but STAYLER_SECRET_KEYS is not set")
        token = stored.split(b":", 2)[2]
        try:
            return self.fernet.decrypt(token)
        except InvalidToken:
            raise SecretKeyError("the secret is encrypted with a key not in STAYLER_SECRET_KEYS") from None

    def needs_rewrap(self, stored: bytes) -> bool:
        """Whether a stored value is plaintext or under another key than the first (with keys set)."""
        return self.fernet is not None and not stored.startswith(self.primary)
