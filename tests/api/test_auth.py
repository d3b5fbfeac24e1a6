"""Keys: 401 without a live key, 403 for a too-small scope, 404 for another owner's things."""

from __future__ import annotations

import psycopg

from api.keys import list_keys, revoke_key
from tests.api.conftest import problem_type


def test_missing_malformed_unknown_and_revoked_keys_are_401(api) -> None:
    owner = api.owner()
    for headers in ({}, {"Authorization": "Basic Zm9vOmJhcg=="}, {"Authorization": "Bearer"},
                    {"Authorization": "Bearer sk_stayler_not-a-real-key"}, {"Authorization": "Bearer x" * 300}):
        with api.anonymous(**headers) as client:
            response = client.get("/v1/conversions")
        assert response.status_code == 401, headers
        assert problem_type(response) == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert owner.client("read").get("/v1/conversions").status_code == 200
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        key_id = next(k["id"] for k in list_keys(conn, user_id=owner.id) if k["scope"] == "read")
        assert revoke_key(conn, key_id)
        assert all(owner.keys["read"] not in str(k) for k in list_keys(conn))  # only hashes are stored
    revoked = owner.client("read").get("/v1/conversions")
    assert revoked.status_code == 401 and problem_type(revoked) == "unauthorized"


def test_scopes_are_403_when_too_small(api) -> None:
    owner = api.owner()
    person = owner.image("user")
    read = owner.client("read")
    for method, path, kwargs in (
        ("POST", "/v1/conversions", {"json": {"user_image_id": person, "cloth_image_id": person}}),
        ("POST", "/v1/images", {"files": {"file": ("a.jpg", b"x")}, "data": {"type": "user"}}),
        ("POST", f"/v1/conversions/{person}/cancel", {}),
        ("POST", "/v1/webhooks", {"json": {"url": "http://127.0.0.1:1/hook"}}),
    ):
        response = read.request(method, path, **kwargs)
        assert response.status_code == 403, (path, response.text)
        assert problem_type(response) == "forbidden"
    hook = owner.client("producer").post("/v1/webhooks", json={"url": "http://127.0.0.1:1/hook"})
    assert hook.status_code == 403
    assert owner.client("operator").post("/v1/webhooks", json={"url": "http://127.0.0.1:1/hook"}).status_code == 201


def test_another_owners_conversions_and_images_read_as_missing(api) -> None:
    alice, bob = api.owner(), api.owner()
    conversion = alice.conversion()
    api.complete(conversion["id"])
    cid = conversion["id"]
    for path in (f"/v1/conversions/{cid}", f"/v1/conversions/{cid}/result", f"/v1/conversions/{cid}/thumbnail",
                 f"/v1/conversions/{cid}?wait=1"):
        response = bob.client("read").get(path)
        assert response.status_code == 404, path
        assert problem_type(response) == "conversion_not_found"
    cancel = bob.client().post(f"/v1/conversions/{cid}/cancel")
    assert cancel.status_code == 404 and problem_type(cancel) == "conversion_not_found"
    assert alice.client("read").get(f"/v1/conversions/{cid}").json()["status"] == "completed"

    # Alice's private images are not Bob's to use, whatever their type: always image_not_found, same detail.
    alice_person, alice_garment = alice.image("user"), alice.image("cloth")
    bob_person, bob_garment = bob.image("user"), bob.image("cloth")
    missing = "00000000-0000-4000-8000-000000000000"
    answers = []
    for body in ({"user_image_id": alice_person, "cloth_image_id": bob_garment},
                 {"user_image_id": bob_person, "cloth_image_id": alice_garment},
                 {"user_image_id": alice_garment, "cloth_image_id": bob_garment},
                 {"user_image_id": bob_person, "cloth_image_id": missing}):
        response = bob.client().post("/v1/conversions", json=body)
        assert response.status_code == 404, (body, response.text)
        assert problem_type(response) == "image_not_found"
        answers.append(response.json()["detail"])
    assert len(set(answers)) == 1


def test_public_garments_may_be_used_by_anyone(api) -> None:
    vendor, user = api.owner("vendor"), api.owner()
    from modelkit.samples import make_garment, to_bytes

    response = vendor.upload(to_bytes(make_garment(seed=4)), "cloth", is_public="true")
    assert response.status_code == 201 and response.json()["is_public"] is True
    conversion = user.conversion(cloth_image_id=response.json()["id"])
    assert conversion["status"] == "pending"
