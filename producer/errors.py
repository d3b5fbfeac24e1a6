"""Errors a producer shows to its caller: always a readable message, never a traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg

from schema.errors import SchemaRuleError, translate


class ProducerError(Exception):
    """A request was refused or could not be carried out; ``code`` is stable, the message readable."""

    def __init__(self, code: str, message: str) -> None:
        """Create an error with a stable ``code`` and a message for a person."""
        super().__init__(message)
        self.code = code


@contextlib.contextmanager
def database_errors(action: str) -> Iterator[None]:
    """Turn database failures into ``ProducerError``s with a clear message."""
    try:
        yield
    except psycopg.OperationalError as exc:
        raise ProducerError("database_unavailable",
                            f"{action}: the database is unavailable ({str(exc).strip().splitlines()[0]})") from exc
    except psycopg.Error as exc:
        rule = translate(exc)
        if isinstance(rule, SchemaRuleError):
            raise ProducerError(rule.name or "refused", f"{action}: {rule}") from exc
        raise ProducerError("database_error", f"{action}: {str(exc).strip().splitlines()[0]}") from exc
