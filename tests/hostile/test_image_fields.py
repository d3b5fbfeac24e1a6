"""Every field of an image a customer gives is bounded, through the API and through plain SQL alike:
tags (count and length), file name, URLs, MIME type and metadata (migration 0490)."""

from __future__ import annotations

import json
import threading
from typing import Any

import psycopg
import pytest

from modelkit.samples import make_garment, to_bytes
from tests.api.conftest import ApiEnv, problem_type
from tests.hostile.test_api_json import nested
from tests.support.wait import wait_for

REGISTER = ("SELECT register_image(owner_id := %(owner)s, owner_type := 'user', type := 'user', "
            "mime_type := %(mime)s, file_size := 10, file_name := %(name)s, original_url := %(url)s, "
            "tags := %(tags)s, metadata := %(metadata)s::jsonb)")


def _register(conn: psycopg.Connection, owner: Any, **overrides: Any) -> None:
    params = {"owner": owner, "mime": "image/png", "name": None, "url": None, "tags": [], "metadata": "{}"}
    params.update(overrides)
    conn.execute(REGISTER, params)


@pytest.mark.parametrize(("field", "value", "code"), [
    ("tags", [f"t{i}" for i in range(33)], "SA005"),
    ("tags", ["x" * 65], "SA005"),
    ("tags", [""], "SA005"),
    ("name", "n" * 256, "SA005"),
    ("url", "https://example.com/" + "u" * 2100, "SA005"),
    ("mime", "image/" + "p" * 120, "SA005"),
    ("metadata", json.dumps(nested(40)), "SA030"),
    ("metadata", json.dumps({"b": "x" * 20_000}), "SA031"),
])
def test_plain_sql_register_image_refuses_an_unbounded_field_and_writes_nothing(
        api: ApiEnv, field: str, value: Any, code: str) -> None:
    owner = api.owner()
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as info:
            _register(conn, owner.id, **{field: value})
        assert info.value.sqlstate == code
        row = conn.execute("SELECT count(*) FROM images WHERE owner_id = %s", (owner.id,)).fetchone()
        assert row is not None and row[0] == 0


def test_plain_sql_register_image_accepts_fields_at_their_bounds(api: ApiEnv) -> None:
    owner = api.owner()
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        _register(conn, owner.id, tags=["x" * 64] * 32, name="n" * 255, url="u" * 2048,
                  metadata=json.dumps(nested(32)))
        row = conn.execute("SELECT cardinality(tags) FROM images WHERE owner_id = %s", (owner.id,)).fetchone()
    assert row is not None and row[0] == 32


def test_the_api_refuses_too_many_or_too_long_tags_before_storing_anything(api: ApiEnv) -> None:
    owner = api.owner()
    before = sorted(p for p in api.storage.root.rglob("*") if p.is_file())
    for tags in ([f"t{i}" for i in range(40)], ["y" * 100]):
        response = owner.upload(b"\x89PNG not even decoded", tags=tags)
        assert response.status_code == 422, response.text
        assert problem_type(response) == "invalid_argument"
    assert sorted(p for p in api.storage.root.rglob("*") if p.is_file()) == before
    good = owner.upload(to_bytes(make_garment(seed=3)), "cloth", tags=["a", "b"])
    assert good.status_code == 201, good.text


@pytest.mark.parametrize("call", ["conversion", "image"])
def test_a_producer_racing_the_erasure_of_its_owner_is_told_owner_not_found(api: ApiEnv, call: str) -> None:
    """The erasure holds the owner's row; the racing call waits for it, then finds no owner (SA003),
    never a foreign-key violation (an HTTP 500) and never an image row left for an erased owner."""
    owner = api.owner()
    user_image, cloth_image = owner.image("user"), owner.image("cloth")
    outcome: dict[str, Any] = {}

    def produce() -> None:
        with psycopg.connect(api.db_url, autocommit=True) as conn:
            try:
                if call == "conversion":
                    conn.execute("SELECT create_conversion(user_id := %s, user_image_id := %s, "
                                 "cloth_image_id := %s)", (owner.id, user_image, cloth_image))
                else:
                    _register(conn, owner.id)
                outcome["sqlstate"] = None
            except psycopg.Error as exc:
                outcome["sqlstate"] = exc.sqlstate

    with psycopg.connect(api.db_url) as eraser:
        eraser.execute("SELECT erase_owner('user', %s)", (owner.id,))
        racer = threading.Thread(target=produce)
        racer.start()
        with psycopg.connect(api.db_url, autocommit=True) as watch:  # the racer waits on the owner's row
            wait_for(lambda: _waiting_on_a_lock(watch), 30, "the racing call to wait on the owner's row")
        eraser.commit()
    racer.join(timeout=30)
    assert outcome == {"sqlstate": "SA003"}
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM images WHERE owner_id = %s", (owner.id,)).fetchone()
    assert row is not None and row[0] == 0


def _waiting_on_a_lock(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'").fetchone()
    return row is not None and row[0] > 0
