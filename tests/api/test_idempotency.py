"""Idempotency-Key: same key and payload → same conversion; different payload → 422; in progress → 409."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg

from api.idempotency import lock_key
from tests.api.conftest import problem_type, scalar


def _body(owner) -> dict:
    return {"user_image_id": owner.image("user"), "cloth_image_id": owner.image("cloth"), "style_name": "casual"}


def test_same_key_same_payload_returns_the_same_conversion(api) -> None:
    owner = api.owner()
    body = _body(owner)
    first = owner.client().post("/v1/conversions", json=body, headers={"Idempotency-Key": "order-1"})
    again = owner.client().post("/v1/conversions", json=body, headers={"Idempotency-Key": "order-1"})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert "idempotent-replayed" not in first.headers and again.headers["idempotent-replayed"] == "true"
    other = owner.client().post("/v1/conversions", json=body, headers={"Idempotency-Key": "order-2"})
    assert other.json()["id"] != first.json()["id"]
    # Keys are per owner: another owner's identical key is another conversion.
    stranger = api.owner()
    mine = stranger.client().post("/v1/conversions", json=_body(stranger), headers={"Idempotency-Key": "order-1"})
    assert mine.status_code == 202 and mine.json()["id"] != first.json()["id"]
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        assert scalar(conn, "SELECT count(*) FROM conversions") == 3


def test_same_key_different_payload_is_422(api) -> None:
    owner = api.owner()
    body = _body(owner)
    assert owner.client().post("/v1/conversions", json=body, headers={"Idempotency-Key": "k"}).status_code == 202
    for change in ({"style_name": "formal"}, {"priority": 3}, {"metadata": {"x": 1}},
                   {"cloth_image_id": owner.image("cloth", seed=7)}):
        response = owner.client().post("/v1/conversions", json={**body, **change}, headers={"Idempotency-Key": "k"})
        assert response.status_code == 422, change
        assert problem_type(response) == "idempotency_key_mismatch"


def test_a_key_still_in_progress_is_409(api) -> None:
    owner = api.owner()
    body = _body(owner)
    with psycopg.connect(api.db_url) as conn:  # holds the key's lock as a running first request would
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(owner.id, "busy"),))
        response = owner.client().post("/v1/conversions", json=body, headers={"Idempotency-Key": "busy"})
        assert response.status_code == 409 and problem_type(response) == "idempotency_key_in_use"
        assert response.headers["retry-after"] == "1"
    after = owner.client().post("/v1/conversions", json=body, headers={"Idempotency-Key": "busy"})
    assert after.status_code == 202


def test_concurrent_requests_with_one_key_make_one_conversion(api) -> None:
    owner = api.owner()
    body = _body(owner)

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=api.base_url, timeout=30,
                          headers={"Authorization": f"Bearer {owner.keys['producer']}"}) as client:
            return client.post("/v1/conversions", json=body, headers={"Idempotency-Key": "race"})

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(post, range(32)))
    codes = {r.status_code for r in responses}
    assert codes <= {202, 409}, codes
    ids = {r.json()["id"] for r in responses if r.status_code == 202}
    assert len(ids) == 1
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        assert scalar(conn, "SELECT count(*) FROM conversions WHERE idempotency_key = 'race'") == 1


def test_bad_keys_are_400(api) -> None:
    owner = api.owner()
    response = owner.client().post("/v1/conversions", json=_body(owner), headers={"Idempotency-Key": "x" * 300})
    assert response.status_code == 400 and problem_type(response) == "bad_request"
