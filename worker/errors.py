"""The stable list of ``error_type`` codes, and how an exception maps to one.

| error_type          | retried | meaning                                                         |
|---------------------|---------|-----------------------------------------------------------------|
| invalid_image       | no      | an input image does not decode                                  |
| unsupported_format  | no      | an input is not JPEG, PNG or WebP                               |
| image_too_large     | no      | an input exceeds the byte or pixel limit                        |
| input_missing       | no      | an input image's file is gone from storage                      |
| model_contract      | no      | the configured model does not fit its manifest                  |
| no_person           | no      | the person stage found no person in the person photo            |
| no_torso            | no      | the person photo shows no torso to dress (a face close-up)      |
| multiple_people     | no      | several people in the person photo, none clearly the subject    |
| no_garment          | no      | nothing in the garment photo stands out as a garment            |
| conversion_ended    | no      | the job's conversion had already ended; the job never ran       |
| inference           | yes     | the model run failed at run time                                |
| storage             | yes     | reading or writing storage failed (disk full, unwritable, down) |
| database            | yes     | PostgreSQL was unreachable or a statement failed transiently    |
| worker_lost         | yes     | the worker stopped heartbeating (crash, kill, hang); by rescuer |
| internal            | yes     | an unexpected exception (a bug); retried, then failed           |
| cancelled           | no      | cancelled on request (metrics only)                             |

Exceptions of the ``imaging``, ``models`` and ``storage`` packages carry ``error_type`` and
``transient`` attributes; everything else is classified here.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from schema.errors import ERROR_TYPES  # the list lives with the schema's codes; re-exported here


@dataclass(frozen=True)
class Failure:
    """Why one job failed: a stable code, a message for a person, and whether to retry."""

    error_type: str
    message: str
    transient: bool


def classify(exc: BaseException, *, context: str = "") -> Failure:
    """Map an exception to a ``Failure`` with a stable ``error_type``."""
    prefix = f"{context}: " if context else ""
    code = getattr(exc, "error_type", None)
    if isinstance(code, str) and code in ERROR_TYPES:
        transient = bool(getattr(exc, "transient", ERROR_TYPES[code]))
        return Failure(code, prefix + _text(exc), transient)
    if isinstance(exc, FileNotFoundError):
        return Failure("input_missing", prefix + f"file not found in storage: {exc.filename or exc}", False)
    if isinstance(exc, psycopg.Error):
        return Failure("database", prefix + f"database error: {_text(exc)}", True)
    if isinstance(exc, OSError):
        return Failure("storage", prefix + f"storage error: {exc.strerror or exc}", True)
    return Failure("internal", prefix + f"unexpected {type(exc).__name__}: {_text(exc)}", True)


def _text(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 1000 else text[:997] + "..."
