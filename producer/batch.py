"""Batch submit: many conversions from a folder of person photos or from a CSV file.

A batch survives a database connection that breaks under it (a PgBouncer or PostgreSQL restart, a
failover): it reconnects, and a row whose outcome was ambiguous (the connection broke while its
conversion was being created) is read back by its idempotency key, so each row reports its true
outcome. Every CSV row has an idempotency key (its column, or one derived from the file's content
and the row's line), so running the same file again never creates a conversion twice: rows already
created are reported with their conversion's id, without registering their images again.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from producer.conversions import submit
from producer.errors import ProducerError, database_errors
from producer.images import ImageLimits, register_image
from schema.queries import Q
from storage import Storage

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


@dataclass(frozen=True)
class BatchRow:
    """One conversion to create: person and garment as a file path or an existing image id."""

    person: str
    garment: str
    style: str | None = None
    priority: int = 0
    idempotency_key: str | None = None


@dataclass(frozen=True)
class BatchOutcome:
    """What became of one row: the conversion id, or the error that refused it."""

    row: BatchRow
    conversion_id: uuid.UUID | None
    error: str | None


@dataclass(frozen=True)
class Owner:
    """Who the conversions belong to."""

    user_id: uuid.UUID | None = None
    vendor_id: uuid.UUID | None = None

    @property
    def id(self) -> uuid.UUID:
        """The owner's id."""
        owner = self.user_id or self.vendor_id
        if owner is None:
            raise ProducerError("owner_required", "give exactly one of a user id or a vendor id")
        return owner

    @property
    def type(self) -> str:
        """'user' or 'vendor'."""
        return "user" if self.user_id else "vendor"


def rows_from_folder(folder: Path, garment: str, style: str | None = None, priority: int = 0) -> list[BatchRow]:
    """One row per image file in ``folder`` (sorted by name), each with the same garment."""
    if not folder.is_dir():
        raise ProducerError("invalid_argument", f"not a folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ProducerError("invalid_argument", f"no .jpg, .png or .webp files in {folder}")
    return [BatchRow(str(p), garment, style, priority) for p in files]


def rows_from_csv(path: Path) -> list[BatchRow]:
    """Rows of a CSV with a header: person, garment, and optional style, priority, idempotency_key.

    Relative file paths are taken relative to the CSV's folder. A row without an idempotency key
    gets ``csv-<hash of the file's bytes>-<line>``: the same file submitted again maps each row to
    the conversion it created the first time (an edited file is a new file: give keys in the
    column to keep them across edits).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProducerError("invalid_argument", f"cannot read {path}: {exc.strerror}") from exc
    digest = hashlib.sha256(data).hexdigest()[:24]
    try:
        with io.StringIO(data.decode("utf-8"), newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"person", "garment"} - set(reader.fieldnames or [])
            if missing:
                raise ProducerError("invalid_argument", f"{path}: missing column(s) {', '.join(sorted(missing))}")
            rows = []
            for line, rec in enumerate(reader, start=2):
                try:
                    priority = int(rec.get("priority") or 0)
                except ValueError:
                    raise ProducerError("invalid_argument", f"{path}:{line}: priority must be a whole number"
                                        ) from None
                key = (rec.get("idempotency_key") or "").strip() or f"csv-{digest}-{line}"
                rows.append(BatchRow(_relative(path, rec["person"]), _relative(path, rec["garment"]),
                                     rec.get("style") or None, priority, key))
    except UnicodeDecodeError as exc:
        raise ProducerError("invalid_argument", f"{path}: not UTF-8 text ({exc.reason})") from exc
    return rows


def _relative(csv_path: Path, value: str) -> str:
    value = (value or "").strip()
    if not value or _as_uuid(value) is not None:
        return value
    p = Path(value)
    return str(p if p.is_absolute() else csv_path.parent / p)


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def submit_batch(conn: psycopg.Connection, storage: Storage, rows: Iterable[BatchRow], owner: Owner, *,
                 limits: ImageLimits, max_retries: int,
                 on_row: Callable[[BatchOutcome], None] | None = None,
                 reconnect: Callable[[], psycopg.Connection] | None = None,
                 reconnect_for_s: float = 30.0) -> list[BatchOutcome]:
    """Register each row's images (a garment file used by many rows is registered once) and submit it.

    A refused row is reported and the batch goes on. A row with an idempotency key that its owner
    already used is reported with that conversion, and its images are not registered again. When
    the connection breaks and ``reconnect`` is given, a new connection is opened (for up to
    ``reconnect_for_s``) and the row is settled on it: read back by its key (the break may have
    come after the commit), and submitted again only when it was not created. The connections
    opened here are closed before returning; ``conn`` stays the caller's.
    """
    batch = _Batch(conn, storage, owner, limits, max_retries, reconnect, reconnect_for_s)
    outcomes = []
    try:
        for row in rows:
            outcome = batch.run(row)
            outcomes.append(outcome)
            if on_row is not None:
                on_row(outcome)
    finally:
        batch.close()
    return outcomes


class _Batch:
    """One batch's connection (replaced when it breaks) and the images it registered."""

    def __init__(self, conn: psycopg.Connection, storage: Storage, owner: Owner, limits: ImageLimits,
                 max_retries: int, reconnect: Callable[[], psycopg.Connection] | None, reconnect_for_s: float
                 ) -> None:
        self.conn = conn
        self.own: list[psycopg.Connection] = []
        self.storage = storage
        self.owner = owner
        self.limits = limits
        self.max_retries = max_retries
        self.reconnect = reconnect
        self.reconnect_for_s = reconnect_for_s
        self.registered: dict[tuple[str, str], uuid.UUID] = {}

    def run(self, row: BatchRow) -> BatchOutcome:
        """Settle one row: existing, created, or refused (with the true reason)."""
        for attempt in range(3):
            try:
                existing = self._existing(row)
                if existing is not None:
                    return BatchOutcome(row, existing, None)
                cid = submit(self.conn, user_id=self.owner.user_id, vendor_id=self.owner.vendor_id,
                             user_image_id=self._image_id(row.person, "user"),
                             cloth_image_id=self._image_id(row.garment, "cloth"), style_name=row.style,
                             priority=row.priority, max_retries=self.max_retries,
                             idempotency_key=row.idempotency_key)
                return BatchOutcome(row, cid, None)
            except ProducerError as exc:
                broken = exc.code == "database_unavailable" or self.conn.broken or self.conn.closed
                if not broken or self.reconnect is None or attempt == 2:
                    return BatchOutcome(row, None, str(exc))
                if row.idempotency_key is None:
                    # Without a key the outcome cannot be read back: submitting again could duplicate.
                    return BatchOutcome(row, None, f"{exc} (the connection broke; whether the conversion was "
                                                   "created is unknown: give rows an idempotency key)")
                try:
                    self._reconnect()
                except ProducerError as again:
                    return BatchOutcome(row, None, str(again))
        raise AssertionError("unreachable")

    def _existing(self, row: BatchRow) -> uuid.UUID | None:
        if row.idempotency_key is None:
            return None
        with database_errors("reading the conversion of an idempotency key"):
            found = self.conn.execute(Q.conversion_get_id_by_idempotency_key, {
                "owner_id": self.owner.id, "idempotency_key": row.idempotency_key}).fetchone()
        return uuid.UUID(str(found[0])) if found else None

    def _image_id(self, ref: str, kind: str) -> uuid.UUID:
        as_id = _as_uuid(ref)
        if as_id is not None:
            return as_id
        if (ref, kind) not in self.registered:
            path = Path(ref)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ProducerError("invalid_argument", f"cannot read {path}: {exc.strerror}") from exc
            record = register_image(self.conn, self.storage, data, owner_id=self.owner.id,
                                    owner_type=self.owner.type, image_type=kind, limits=self.limits,
                                    file_name=path.name)
            self.registered[(ref, kind)] = record.id
        return self.registered[(ref, kind)]

    def _reconnect(self) -> None:
        assert self.reconnect is not None
        deadline = time.monotonic() + self.reconnect_for_s
        delay = 0.1
        while True:
            try:
                conn = self.reconnect()
            except psycopg.Error as exc:
                if time.monotonic() + delay > deadline:
                    raise ProducerError("database_unavailable",
                                        f"the database connection broke and could not be opened again: "
                                        f"{str(exc).strip().splitlines()[0]}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            log.warning("the database connection broke; continuing the batch on a new one")
            self.conn = conn
            self.own.append(conn)
            return

    def close(self) -> None:
        for conn in self.own:
            with contextlib.suppress(Exception):
                conn.close()
