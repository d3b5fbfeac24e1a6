"""Where image bytes live: a backend interface, the local folder backend, and key rules."""

from storage.base import Storage, StorageError, StoredObject
from storage.keys import (
    InvalidKeyError,
    attempt_keys,
    input_key,
    result_key,
    result_prefix,
    thumbnail_key,
    validate_key,
)
from storage.local import LocalStorage

__all__ = [
    "InvalidKeyError",
    "LocalStorage",
    "Storage",
    "StorageError",
    "StoredObject",
    "attempt_keys",
    "input_key",
    "result_key",
    "result_prefix",
    "thumbnail_key",
    "validate_key",
]
