"""RFC 9457 problem details: one stable ``type`` per error, and the SQLSTATE → problem mapping.

Nothing a client receives comes from a traceback or names a host path: details are either written
here or the SQL functions' own refusal messages (which name ids and rules, never files).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from starlette.exceptions import HTTPException

from producer.errors import ProducerError

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:stayler:problem:"


@dataclass(frozen=True)
class ProblemKind:
    """A kind of error: its HTTP status, stable name (the ``type``'s last part) and title."""

    status: int
    name: str
    title: str


def _k(status: int, name: str, title: str) -> ProblemKind:
    return ProblemKind(status, name, title)


#: Every problem type the API answers with, by name (docs/api.md lists the same).
KINDS: dict[str, ProblemKind] = {k.name: k for k in (
    _k(400, "bad_request", "The request is malformed"),
    _k(400, "owner_required", "The key has no owner"),
    _k(401, "unauthorized", "A valid API key is required"),
    _k(403, "forbidden", "The key's scope does not allow this"),
    _k(404, "not_found", "No such resource"),
    _k(404, "image_not_found", "Image not found"),
    _k(404, "conversion_not_found", "Conversion not found"),
    _k(404, "webhook_not_found", "Webhook endpoint not found"),
    _k(409, "webhook_limit_reached", "The owner has as many webhook endpoints as allowed"),
    _k(404, "result_not_available", "The conversion has no result"),
    _k(405, "method_not_allowed", "Method not allowed"),
    _k(409, "invalid_status_transition", "The conversion cannot make this move"),
    _k(409, "attempt_not_held", "The attempt no longer holds the job"),
    _k(409, "idempotency_key_in_use", "A request with this Idempotency-Key is still in progress"),
    _k(408, "request_timeout", "The request body was not sent in time"),
    _k(413, "payload_too_large", "The request body is too large"),
    _k(413, "image_too_large", "The image is too large"),
    _k(415, "unsupported_format", "The image format is not supported"),
    _k(422, "validation_error", "The request is not valid"),
    _k(422, "invalid_image", "The image cannot be decoded"),
    _k(422, "owner_not_found", "The key's owner no longer exists"),
    _k(422, "argument_required", "A required argument is missing"),
    _k(422, "invalid_argument", "An argument is not valid"),
    _k(422, "image_wrong_type", "The image has the wrong type for its role"),
    _k(422, "idempotency_key_mismatch", "The Idempotency-Key was used with a different payload"),
    _k(422, "invalid_storage_key", "Invalid storage key"),
    _k(422, "webhook_url_refused", "The webhook URL is not allowed"),
    _k(422, "refused", "The request was refused by a rule of the schema"),
    _k(422, "priority_not_allowed", "The key may not ask for this priority"),
    _k(429, "rate_limited", "Too many requests for this key; retry after Retry-After seconds"),
    _k(429, "quota_exceeded", "The owner's daily conversion quota is used up"),
    _k(422, "invalid_json", "The body is not JSON that can be stored"),
    _k(422, "metadata_too_large", "The metadata is too large"),
    _k(422, "metadata_too_deep", "The metadata nests too deeply"),
    _k(429, "too_many_waiters", "Too many requests are waiting"),
    _k(500, "internal", "Internal error"),
    _k(503, "database_unavailable", "The database is unavailable"),
    _k(503, "storage_unavailable", "The storage backend is unavailable"),
    _k(503, "server_busy", "The server holds as many request bodies as it may; try again"),
)}

#: SQLSTATE of the schema's refusals → problem name. SA012 and SA024 read as "not found" so that a
#: caller cannot learn that another owner's image or conversion exists.
BY_SQLSTATE: dict[str, str] = {
    "SA001": "owner_required",
    "SA002": "owner_required",
    "SA003": "owner_not_found",
    "SA004": "argument_required",
    "SA005": "invalid_argument",
    "SA010": "image_not_found",
    "SA011": "image_wrong_type",
    "SA012": "image_not_found",
    "SA020": "conversion_not_found",
    "SA021": "invalid_status_transition",
    "SA023": "idempotency_key_mismatch",
    "SA024": "conversion_not_found",
    "SA025": "attempt_not_held",
    "SA026": "invalid_storage_key",
    "SA030": "metadata_too_deep",
    "SA031": "metadata_too_large",
}

#: Details that must not vary with what exists (they would reveal another owner's rows).
_FIXED_DETAIL = {
    "image_not_found": "the image does not exist or is not yours to use",
    "conversion_not_found": "the conversion does not exist",
}


class Problem(HTTPException):
    """An error answered as ``application/problem+json``.

    It is a Starlette ``HTTPException`` so that it also passes through FastAPI's body parsing (the
    body-size limit raises it from inside a read) and reaches the problem handler unchanged.
    """

    def __init__(self, name: str, detail: str | None = None, *, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        """A problem of kind ``name`` (a key of :data:`KINDS`) with an optional human ``detail``."""
        kind = KINDS.get(name) or KINDS["internal"]
        super().__init__(kind.status, _FIXED_DETAIL.get(kind.name, detail or kind.title), headers or {})
        self.kind = kind
        self.extra = extra or {}

    def body(self, instance: str | None = None) -> dict[str, Any]:
        """The problem document."""
        doc: dict[str, Any] = {"type": TYPE_PREFIX + self.kind.name, "title": self.kind.title,
                               "status": self.kind.status, "detail": self.detail}
        if instance:
            doc["instance"] = instance
        doc.update(self.extra)
        return doc


def _sql_detail(exc: psycopg.Error) -> str | None:
    """The refusal's message without its ``name:`` prefix (a rule's words, safe to show)."""
    message = (exc.diag.message_primary or "").strip()
    if ":" in message:
        message = message.split(":", 1)[1].strip()
    return message or None


def from_database(exc: psycopg.Error) -> Problem:
    """The problem for a database error: a schema refusal by its SQLSTATE, else 503 or 500."""
    code = exc.sqlstate or ""
    if code in BY_SQLSTATE:
        return Problem(BY_SQLSTATE[code], _sql_detail(exc))
    if code.startswith("SA"):
        # A refusal added after this table was written: its message names it (`name: …`).
        prefix = (exc.diag.message_primary or "").split(":", 1)[0].strip()
        name = prefix if prefix in KINDS else "refused"
        return Problem(name, _sql_detail(exc))
    if isinstance(exc, psycopg.OperationalError):
        return Problem("database_unavailable")
    return Problem("internal")


def from_producer(exc: ProducerError) -> Problem:
    """The problem for a producer refusal: by the SQLSTATE behind it when there is one, else by code."""
    cause = exc.__cause__
    if isinstance(cause, psycopg.Error) and (cause.sqlstate or "").startswith("SA"):
        return from_database(cause)
    if exc.code == "not_owner":
        return Problem("conversion_not_found")
    if exc.code == "database_unavailable":
        return Problem("database_unavailable")
    if exc.code in KINDS and KINDS[exc.code].status < 500:
        return Problem(exc.code, str(exc))
    return Problem("internal")
