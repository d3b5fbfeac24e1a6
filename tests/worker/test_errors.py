"""worker.errors: every exception maps to a stable, documented error type (no database, no Redis)."""

from __future__ import annotations

import psycopg
import pytest

from storage import StorageError
from worker.errors import ERROR_TYPES, classify


@pytest.mark.parametrize(("exc", "code", "transient"), [
    (FileNotFoundError(2, "No such file", "images/x.jpg"), "input_missing", False),
    (psycopg.OperationalError("connection refused"), "database", True),
    (OSError(28, "No space left on device"), "storage", True),
    (StorageError("could not write"), "storage", True),
    (ValueError("boom"), "internal", True),
])
def test_errors_map_to_stable_types(exc: BaseException, code: str, transient: bool) -> None:
    failure = classify(exc)
    assert (failure.error_type, failure.transient) == (code, transient)
    assert failure.error_type in ERROR_TYPES
    assert failure.message


def test_library_errors_keep_their_own_type() -> None:
    from imaging.errors import ImageDecodeError
    from models.contract import ModelContractError

    assert classify(ImageDecodeError("truncated")).error_type == "invalid_image"
    assert classify(ModelContractError("bad")).transient is False
    assert len(classify(ValueError("x" * 5000)).message) <= 1100
