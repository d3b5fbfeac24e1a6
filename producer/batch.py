"""Batch submit: many conversions from a folder of person photos or from a CSV file."""

from __future__ import annotations

import csv
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from producer.conversions import submit
from producer.errors import ProducerError
from producer.images import ImageLimits, register_image
from storage import Storage

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

    Relative file paths are taken relative to the CSV's folder.
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
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
                rows.append(BatchRow(_relative(path, rec["person"]), _relative(path, rec["garment"]),
                                     rec.get("style") or None, priority, rec.get("idempotency_key") or None))
    except OSError as exc:
        raise ProducerError("invalid_argument", f"cannot read {path}: {exc.strerror}") from exc
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
                 on_row: Callable[[BatchOutcome], None] | None = None) -> list[BatchOutcome]:
    """Register each row's images (a garment file used by many rows is registered once) and submit it.

    A refused row is reported and the batch goes on.
    """
    registered: dict[tuple[str, str], uuid.UUID] = {}

    def image_id(ref: str, kind: str) -> uuid.UUID:
        as_id = _as_uuid(ref)
        if as_id is not None:
            return as_id
        if (ref, kind) not in registered:
            path = Path(ref)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ProducerError("invalid_argument", f"cannot read {path}: {exc.strerror}") from exc
            record = register_image(conn, storage, data, owner_id=owner.id, owner_type=owner.type,
                                    image_type=kind, limits=limits, file_name=path.name)
            registered[(ref, kind)] = record.id
        return registered[(ref, kind)]

    outcomes = []
    for row in rows:
        try:
            cid = submit(conn, user_id=owner.user_id, vendor_id=owner.vendor_id,
                         user_image_id=image_id(row.person, "user"), cloth_image_id=image_id(row.garment, "cloth"),
                         style_name=row.style, priority=row.priority, max_retries=max_retries,
                         idempotency_key=row.idempotency_key)
            outcome = BatchOutcome(row, cid, None)
        except ProducerError as exc:
            outcome = BatchOutcome(row, None, str(exc))
        outcomes.append(outcome)
        if on_row is not None:
            on_row(outcome)
    return outcomes
