"""Python exceptions for the refusals the schema's SQL functions and triggers raise.

Every refusal carries a custom SQLSTATE of class ``SA`` and a message starting with the refusal's
name (``image_not_found: user image … does not exist``).  :func:`translate` turns the psycopg
error into the matching :class:`SchemaRuleError` subclass::

    try:
        conn.execute("SELECT create_conversion(user_id := %s, …)", …)
    except psycopg.Error as exc:
        raise translate(exc) from exc
"""

from __future__ import annotations

import psycopg


class SchemaRuleError(Exception):
    """A rule of the schema refused the operation; ``code`` is the SQLSTATE."""

    code: str = ""
    name: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class OwnerRequired(SchemaRuleError):  # noqa: N818 (names agreed with the callers)
    """Neither ``user_id`` nor ``vendor_id`` was given (exactly one is required)."""

    code = "SA001"
    name = "owner_required"


class OwnerAmbiguous(OwnerRequired):
    """Both ``user_id`` and ``vendor_id`` were given (exactly one is required)."""

    code = "SA002"
    name = "owner_ambiguous"


class OwnerNotFound(SchemaRuleError):  # noqa: N818 (names agreed with the callers)
    """The user or vendor row does not exist."""

    code = "SA003"
    name = "owner_not_found"


class ArgumentRequired(SchemaRuleError):  # noqa: N818 (names agreed with the callers)
    """A required argument was NULL."""

    code = "SA004"
    name = "argument_required"


class InvalidArgument(SchemaRuleError):  # noqa: N818 (names agreed with the callers)
    """An argument outside its allowed list or range."""

    code = "SA005"
    name = "invalid_argument"


class ImageNotFound(SchemaRuleError):  # noqa: N818 (names agreed with the callers)
    """An image id that does not exist."""

    code = "SA010"
    name = "image_not_found"


class ImageWrongType(SchemaRuleError):  # noqa: N818 (names agreed with the callers)
    """An image of the wrong type (``user`` / ``cloth`` / ``result``) for its role."""

    code = "SA011"
    name = "image_wrong_type"


class ImageNotAccessible(SchemaRuleError):  # noqa: N818 (names agreed with the callers)
    """An image the caller neither owns nor may use (a cloth image may be public)."""

    code = "SA012"
    name = "image_not_accessible"


class ConversionNotFound(SchemaRuleError):  # noqa: N818 (names agreed with the callers)
    """A conversion id that does not exist."""

    code = "SA020"
    name = "conversion_not_found"


class InvalidStatusTransition(SchemaRuleError):  # noqa: N818 (names agreed with the callers)
    """A status move the state machine forbids (statuses move forward only)."""

    code = "SA021"
    name = "invalid_status_transition"


class ResultImageRequired(SchemaRuleError):  # noqa: N818 (names agreed with the callers)
    """Status ``completed`` without ``result_image_id``."""

    code = "SA022"
    name = "result_image_required"


class IdempotencyKeyMismatch(SchemaRuleError):  # noqa: N818 (names agreed with the callers)
    """An idempotency key already used by this owner for a request with another payload (HTTP 422)."""

    code = "SA023"
    name = "idempotency_key_mismatch"


class NotOwner(SchemaRuleError):  # noqa: N818 (names agreed with the callers)
    """The caller is not the owner of the conversion (cancel)."""

    code = "SA024"
    name = "not_owner"


class AttemptNotHeld(SchemaRuleError):  # noqa: N818 (names agreed with the callers)
    """A processing conversion completed or requeued without its current attempt."""

    code = "SA025"
    name = "attempt_not_held"


class InvalidStorageKey(SchemaRuleError):  # noqa: N818 (names agreed with the callers)
    """An image's storage key the system did not issue for that row, or one in another owner's space."""

    code = "SA026"
    name = "invalid_storage_key"


class MetadataTooDeep(SchemaRuleError):  # noqa: N818 (names agreed with the callers)
    """``metadata`` nests more than 32 levels (``create_conversion``)."""

    code = "SA030"
    name = "metadata_too_deep"


class MetadataTooLarge(SchemaRuleError):  # noqa: N818 (names agreed with the callers)
    """``metadata`` is more than 16 KiB as text (``create_conversion``)."""

    code = "SA031"
    name = "metadata_too_large"


#: Every refusal class by its SQLSTATE.
BY_SQLSTATE: dict[str, type[SchemaRuleError]] = {
    cls.code: cls
    for cls in (
        OwnerRequired,
        OwnerAmbiguous,
        OwnerNotFound,
        ArgumentRequired,
        InvalidArgument,
        ImageNotFound,
        ImageWrongType,
        ImageNotAccessible,
        ConversionNotFound,
        InvalidStatusTransition,
        ResultImageRequired,
        IdempotencyKeyMismatch,
        NotOwner,
        AttemptNotHeld,
        InvalidStorageKey,
        MetadataTooDeep,
        MetadataTooLarge,
    )
}


def translate(exc: psycopg.Error) -> Exception:
    """Return the :class:`SchemaRuleError` for ``exc``'s SQLSTATE, or ``exc`` itself.

    The returned exception has ``exc`` as ``__cause__``; raise it with ``raise translate(e) from e``.
    """
    cls = BY_SQLSTATE.get(exc.sqlstate or "")
    if cls is None:
        return exc
    diag = exc.diag
    err = cls(diag.message_primary or str(exc), hint=diag.message_hint)
    err.__cause__ = exc
    return err


#: Every ``error_type`` code and whether the worker retries it (the table in worker/errors.py).
#: One list for the worker, the API and the console; a code that is never retried fails the same
#: way again unless its input changes.
ERROR_TYPES: dict[str, bool] = {
    "invalid_image": False,
    "unsupported_format": False,
    "image_too_large": False,
    "input_missing": False,
    "model_contract": False,
    "no_person": False,
    "no_torso": False,
    "multiple_people": False,
    "no_garment": False,
    "conversion_ended": False,
    "inference": True,
    "storage": True,
    "database": True,
    "worker_lost": True,
    "internal": True,
    "cancelled": False,
}

#: The codes a conversion fails with at once, never retried by the worker.
NEVER_RETRIED: frozenset[str] = frozenset(code for code, retried in ERROR_TYPES.items()
                                          if not retried and code != "cancelled")
