"""``DELETE /v1/images/{id}`` and ``DELETE /v1/conversions/{id}`` through the real server."""

from __future__ import annotations

import psycopg

from tests.api.conftest import ApiEnv, problem_type


def stored(env: ApiEnv) -> set[str]:
    return {k for k, _ in env.storage.list_objects()}


def test_deleting_a_conversion_answers_204_and_removes_its_result_files(api: ApiEnv) -> None:
    alice, bob = api.owner(), api.owner()
    conv = alice.conversion()
    api.complete(conv["id"])
    theirs = bob.conversion()
    before = stored(api)
    assert problem_type(bob.client().delete(f"/v1/conversions/{conv['id']}")) == "conversion_not_found"
    assert alice.client("read").delete(f"/v1/conversions/{conv['id']}").status_code == 403
    response = alice.client().delete(f"/v1/conversions/{conv['id']}")
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert problem_type(alice.client().get(f"/v1/conversions/{conv['id']}")) == "conversion_not_found"
    gone = before - stored(api)
    assert sorted(k.rsplit("/", 1)[1] for k in gone) == ["a1.jpg", "a1.thumb.jpg"]
    assert all(conv["id"] in k for k in gone)
    assert problem_type(alice.client().delete(f"/v1/conversions/{conv['id']}")) == "conversion_not_found"
    assert bob.client().get(f"/v1/conversions/{theirs['id']}").status_code == 200


def test_deleting_an_image_answers_204_and_takes_its_conversions_with_it(api: ApiEnv) -> None:
    alice, bob = api.owner(), api.owner()
    photo, garment = alice.image("user"), alice.image("cloth")
    conv = alice.conversion(user_image_id=photo, cloth_image_id=garment)
    running = alice.conversion(user_image_id=photo, cloth_image_id=garment)
    api.complete(conv["id"])
    assert problem_type(bob.client().delete(f"/v1/images/{photo}")) == "image_not_found"
    assert problem_type(alice.client().delete("/v1/images/00000000-0000-4000-8000-000000000000")) == "image_not_found"
    response = alice.client().delete(f"/v1/images/{photo}")
    assert response.status_code == 204, response.text
    for cid in (conv["id"], running["id"]):
        assert problem_type(alice.client().get(f"/v1/conversions/{cid}")) == "conversion_not_found"
    left = stored(api)
    assert not any(photo in k or conv["id"] in k for k in left)
    assert any(garment in k for k in left)
    with psycopg.connect(api.db_url) as conn:
        assert conn.execute("SELECT count(*) FROM storage_key_cleanup").fetchone() == (0,)
    assert problem_type(alice.client().delete(f"/v1/images/{photo}")) == "image_not_found"
