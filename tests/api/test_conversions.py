"""Conversions over HTTP: create, read, list, cancel, results, stats, and the errors of each."""

from __future__ import annotations

import uuid

from storage import LocalStorage
from tests.api.conftest import problem_type


def test_create_and_read_a_conversion(api) -> None:
    owner = api.owner()
    person, garment = owner.image("user"), owner.image("cloth")
    response = owner.client().post("/v1/conversions", json={
        "user_image_id": person, "cloth_image_id": garment, "style_name": "casual", "priority": 5,
        "conversion_type": "paid", "metadata": {"order": 42}})
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["location"] == f"/v1/conversions/{body['id']}"
    assert body["status"] == "pending" and body["priority"] == 5 and body["metadata"] == {"order": 42}
    assert body["attempts"] == 0 and body["result"] is None and body["conversion_type"] == "paid"
    read = owner.client("read").get(response.headers["location"])
    assert read.status_code == 200 and read.json()["id"] == body["id"]


def test_completed_conversion_has_fetchable_result_and_thumbnail(api) -> None:
    owner = api.owner()
    conversion = owner.conversion()
    pending = owner.client("read").get(f"/v1/conversions/{conversion['id']}/result")
    assert pending.status_code == 404 and problem_type(pending) == "result_not_available"
    api.complete(conversion["id"])
    body = owner.client("read").get(f"/v1/conversions/{conversion['id']}").json()
    assert body["status"] == "completed" and body["attempts"] == 1
    result = body["result"]
    assert result["url"] == f"{api.base_url}/v1/conversions/{conversion['id']}/result"
    image = owner.client("read").get(result["url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content[:3] == b"\xff\xd8\xff"
    thumb = owner.client("read").get(result["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"
    # The storage keys and host paths never reach the client.
    assert str(api.storage.root) not in image.text + str(body)


def test_validation_errors_are_problems(api) -> None:
    owner = api.owner()
    cases = [
        {"user_image_id": "not-a-uuid", "cloth_image_id": str(uuid.uuid4())},
        {"user_image_id": str(uuid.uuid4())},
        {"user_image_id": str(uuid.uuid4()), "cloth_image_id": str(uuid.uuid4()), "priority": 10**6},
        {"user_image_id": str(uuid.uuid4()), "cloth_image_id": str(uuid.uuid4()), "unknown": 1},
        {"user_image_id": str(uuid.uuid4()), "cloth_image_id": str(uuid.uuid4()), "conversion_type": "gold"},
    ]
    for body in cases:
        response = owner.client().post("/v1/conversions", json=body)
        assert response.status_code == 422, (body, response.text)
        assert problem_type(response) == "validation_error"
        assert response.json()["errors"] and "input" not in response.json()["errors"][0]
    broken = owner.client().post("/v1/conversions", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422 and problem_type(broken) == "invalid_json"  # not JSON at all (issue 19, row 13)


def test_schema_refusals_map_to_problem_types(api) -> None:
    owner = api.owner()
    person, garment = owner.image("user"), owner.image("cloth")
    unknown = owner.client().post("/v1/conversions", json={"user_image_id": str(uuid.uuid4()),
                                                           "cloth_image_id": garment})
    assert unknown.status_code == 404 and problem_type(unknown) == "image_not_found"
    swapped = owner.client().post("/v1/conversions", json={"user_image_id": garment, "cloth_image_id": person})
    assert swapped.status_code == 422 and problem_type(swapped) == "image_wrong_type"
    missing = owner.client("read").get(f"/v1/conversions/{uuid.uuid4()}")
    assert missing.status_code == 404 and problem_type(missing) == "conversion_not_found"
    bad_id = owner.client("read").get("/v1/conversions/not-a-uuid")
    assert bad_id.status_code == 422 and problem_type(bad_id) == "validation_error"


def test_cancel_then_cancel_again_and_cancel_a_completed_one(api) -> None:
    owner = api.owner()
    conversion = owner.conversion()
    first = owner.client().post(f"/v1/conversions/{conversion['id']}/cancel")
    assert first.status_code == 200 and first.json()["status"] == "cancelled"
    again = owner.client().post(f"/v1/conversions/{conversion['id']}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    done = owner.conversion()
    api.complete(done["id"])
    late = owner.client().post(f"/v1/conversions/{done['id']}/cancel")
    assert late.status_code == 409 and problem_type(late) == "invalid_status_transition"
    failed = owner.conversion()
    api.fail(failed["id"])
    body = owner.client("read").get(f"/v1/conversions/{failed['id']}").json()
    assert body["status"] == "failed" and body["error_type"] == "invalid_image" and body["error_message"]


def test_list_is_keyset_paginated_and_filtered(api) -> None:
    owner = api.owner()
    person, garment = owner.image("user"), owner.image("cloth")
    ids = [owner.conversion(user_image_id=person, cloth_image_id=garment)["id"] for _ in range(5)]
    owner.client().post(f"/v1/conversions/{ids[0]}/cancel")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = owner.client("read").get("/v1/conversions", params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    cancelled = owner.client("read").get("/v1/conversions", params={"status": "cancelled"}).json()
    assert [c["id"] for c in cancelled["items"]] == [ids[0]] and cancelled["next_cursor"] is None
    bad = owner.client("read").get("/v1/conversions", params={"cursor": "!!"})
    assert bad.status_code == 400 and problem_type(bad) == "bad_request"
    other = api.owner()
    assert other.client("read").get("/v1/conversions").json()["items"] == []


def test_stats_for_the_caller(api) -> None:
    owner = api.owner()
    conversion = owner.conversion()
    api.complete(conversion["id"])
    owner.client().post(f"/v1/conversions/{owner.conversion()['id']}/cancel")
    stats = owner.client("read").get("/v1/stats").json()
    assert stats["conversions"]["total_count"] == 2
    assert stats["conversions"]["completed_count"] == 1 and stats["conversions"]["cancelled_count"] == 1
    assert stats["images"]["user_images"] == 2 and stats["images"]["cloth_images"] == 2
    assert api.owner().client("read").get("/v1/stats").json()["conversions"]["total_count"] == 0


def test_vendor_keys_work_like_user_keys(api) -> None:
    vendor = api.owner("vendor")
    conversion = vendor.conversion()
    assert vendor.client("read").get(f"/v1/conversions/{conversion['id']}").json()["status"] == "pending"
    assert vendor.client("read").get("/v1/conversions").json()["items"][0]["id"] == conversion["id"]


class PresigningStorage(LocalStorage):
    """A folder that hands out presigned URLs, as the S3 backend does."""

    def presigned_url(self, key: str, ttl_s: int) -> str | None:
        return f"https://bucket.example/{key}?X-Amz-Expires={ttl_s}"


def test_presigned_urls_when_the_backend_makes_them(make_api, tmp_path) -> None:
    api = make_api(storage=PresigningStorage(tmp_path / "s3"), result_url_ttl_s=120)
    owner = api.owner()
    conversion = owner.conversion()
    api.complete(conversion["id"])
    result = owner.client("read").get(f"/v1/conversions/{conversion['id']}").json()["result"]
    assert result["url"].startswith("https://bucket.example/results/") and result["url"].endswith("Expires=120")
    assert result["thumbnail_url"].endswith(".thumb.jpg?X-Amz-Expires=120") and result["expires_at"]
    for which in ("result", "thumbnail"):
        redirect = owner.client("read").get(f"/v1/conversions/{conversion['id']}/{which}")
        assert redirect.status_code == 307 and redirect.headers["location"].startswith("https://bucket.example/")
