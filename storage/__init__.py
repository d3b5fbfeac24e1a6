"""Where image bytes live: a backend interface, the folder and S3 backends, the factory, and key rules."""

from storage.base import Storage, StorageError, StoredObject
from storage.factory import from_settings, from_url
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
    "from_settings",
    "from_url",
    "input_key",
    "result_key",
    "result_prefix",
    "thumbnail_key",
    "validate_key",
]
