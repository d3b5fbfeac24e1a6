"""Rows 4, 5 and 13 of issue 19: metadata bounded in size and depth (API and SQL), JSON that PostgreSQL
cannot store refused as ``invalid_json``, and every unexpected error logged once with the request id
the problem body carries."""

from __future__ import annotations

import json
import logging
from typing import Any

import psycopg
import pytest

from tests.api.conftest import ApiEnv, problem_type


def nested(depth: int) -> dict[str, Any]:
    """``{"a": {"a": … {}}}`` with ``depth`` levels."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _body(owner: Any, metadata: Any) -> dict[str, Any]:
    return {"user_image_id": owner.image("user"), "cloth_image_id": owner.image("cloth"), "metadata": metadata}


def test_deep_metadata_is_refused_up_front_and_the_owners_list_keeps_working(api: ApiEnv) -> None:
    owner = api.owner()
    response = owner.client().post("/v1/conversions", json=_body(owner, nested(256)))
    assert response.status_code == 422 and problem_type(response) == "metadata_too_deep", response.text
    with psycopg.connect(api.db_url) as conn:
        assert conn.execute("SELECT count(*) FROM conversions").fetchone() == (0,)
    ok = owner.client().post("/v1/conversions", json=_body(owner, nested(api.settings.api_max_metadata_depth)))
    assert ok.status_code == 202, ok.text
    listed = owner.client().get("/v1/conversions")
    assert listed.status_code == 200 and len(listed.json()["items"]) == 1


def test_large_metadata_is_refused_with_its_own_code(api: ApiEnv) -> None:
    owner = api.owner()
    big = {"blob": "x" * (api.settings.api_max_metadata_bytes + 1)}
    response = owner.client().post("/v1/conversions", json=_body(owner, big))
    assert response.status_code == 422 and problem_type(response) == "metadata_too_large", response.text
    upload = owner.upload(b"not read", "user", metadata=big)
    assert upload.status_code == 422 and problem_type(upload) == "metadata_too_large", upload.text


@pytest.mark.parametrize("raw", ['{"a": NaN}', '{"a": 1e400}', '{"a": "x\\u0000y"}', '{"a": -Infinity}',
                                 '{"a": [' * 5000 + ']' * 5000 + '}', '{"a": "\\ud800"}'])
def test_json_postgresql_cannot_store_is_invalid_json(api: ApiEnv, raw: str) -> None:
    owner = api.owner()
    ids = _body(owner, {})
    text = (f'{{"user_image_id": "{ids["user_image_id"]}", "cloth_image_id": "{ids["cloth_image_id"]}", '
            f'"metadata": {raw}}}')
    response = owner.client().post("/v1/conversions", content=text.encode(),
                                   headers={"content-type": "application/json"})
    assert response.status_code == 422 and problem_type(response) == "invalid_json", response.text
    assert response.json()["request_id"] == response.headers["x-request-id"]


def test_a_null_character_in_a_plain_string_field_is_invalid_json(api: ApiEnv) -> None:
    owner = api.owner()
    body = _body(owner, {})
    body["style_name"] = "a\x00b"
    response = owner.client().post("/v1/conversions", content=json.dumps(body).encode(),
                                   headers={"content-type": "application/json"})
    assert response.status_code == 422 and problem_type(response) == "invalid_json", response.text


def test_an_unexpected_database_error_is_logged_once_with_the_request_id_of_its_problem(
        api: ApiEnv, caplog: pytest.LogCaptureFixture) -> None:
    owner = api.owner()
    with psycopg.connect(api.db_url, autocommit=True) as conn:  # a fault no refusal maps: a broken column
        conn.execute("ALTER TABLE conversions ADD CONSTRAINT h19_fault CHECK (style_name <> 'boom')")
    body = _body(owner, {})
    body["style_name"] = "boom"
    with caplog.at_level(logging.ERROR, logger="stayler.api"):
        response = owner.client().post("/v1/conversions", json=body)
    assert response.status_code == 500 and problem_type(response) == "internal", response.text
    request_id = response.json()["request_id"]
    assert request_id and response.headers["x-request-id"] == request_id
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == request_id]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert "h19_fault" not in response.text


def test_the_sql_function_refuses_deep_or_large_metadata_with_a_named_sqlstate(api: ApiEnv) -> None:
    owner = api.owner()
    body = _body(owner, {})
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        for metadata, code in ((nested(40), "SA030"), ({"b": "x" * 20_000}, "SA031")):
            with pytest.raises(psycopg.Error) as info:
                conn.execute("SELECT create_conversion(user_id := %s, user_image_id := %s, cloth_image_id := %s, "
                             "metadata := %s::jsonb)", (owner.id, body["user_image_id"], body["cloth_image_id"],
                                                       json.dumps(metadata)))
            assert info.value.sqlstate == code


def test_a_stored_row_too_deep_to_serialize_does_not_break_the_owners_list(api: ApiEnv) -> None:
    owner = api.owner()
    created = owner.conversion()
    with psycopg.connect(api.db_url, autocommit=True) as conn:  # as a row stored before the limit existed
        conn.execute("UPDATE conversions SET metadata = %s::jsonb WHERE id = %s", (json.dumps(nested(300)),
                                                                                   created["id"]))
    listed = owner.client().get("/v1/conversions")
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"][0]["id"] == created["id"]  # the list passes the stored JSON text through
    single = owner.client().get(f"/v1/conversions/{created['id']}")
    assert single.status_code == 200 and single.json()["metadata"] == {}  # too deep to serialize: answered {}
