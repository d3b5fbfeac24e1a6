"""The producer on S3 storage: objects in the bucket, stable ``s3://`` URLs in the rows, no orphans."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from modelkit.samples import make_person, to_bytes
from producer import register_image
from producer.accounts import create_user
from producer.errors import ProducerError
from producer.images import ImageLimits
from storage import from_url
from tests.infra.s3 import S3Server

LIMITS = ImageLimits(max_bytes=5_000_000, max_pixels=10_000_000, thumbnail_size=64)


def test_register_image_writes_the_bucket_and_stores_s3_urls(db: psycopg.Connection, s3_server: S3Server,
                                                            s3_bucket: str) -> None:
    storage = from_url(f"s3://{s3_bucket}/uploads")
    data = to_bytes(make_person(96, 128).image, "PNG")
    record = register_image(db, storage, data, owner_id=create_user(db), owner_type="user", image_type="user",
                            limits=LIMITS)
    row = db.execute("SELECT original_url, thumbnail_url FROM images WHERE id = %s", (record.id,)).fetchone()
    assert row == (f"s3://{s3_bucket}/uploads/{record.file_path}",
                   f"s3://{s3_bucket}/uploads/thumbs/{record.id.hex[:2]}/{record.id}.jpg")
    assert storage.get(record.file_path) == data
    assert sorted(s3_server.keys(s3_bucket)) == sorted([f"uploads/{record.file_path}",
                                                        f"uploads/thumbs/{record.id.hex[:2]}/{record.id}.jpg"])


def test_a_failed_row_insert_leaves_nothing_in_the_bucket(db: psycopg.Connection, s3_server: S3Server,
                                                         s3_bucket: str) -> None:
    storage = from_url(f"s3://{s3_bucket}/")
    with pytest.raises(ProducerError):  # an album that does not exist: the row insert fails
        register_image(db, storage, to_bytes(make_person(96, 128).image), owner_id=uuid.uuid4(), owner_type="user",
                       image_type="user", limits=LIMITS, album_id=uuid.uuid4())
    assert s3_server.keys(s3_bucket) == []
