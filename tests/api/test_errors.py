"""Problem details: every SQLSTATE maps by its code, unknown routes and methods are problems, and no
traceback, host path or key ever reaches a client or the access log."""

from __future__ import annotations

import logging
import time

import psycopg
import pytest

from api.problems import BY_SQLSTATE, KINDS, Problem, from_database
from tests.api.conftest import problem_type


def _refusal(db_url: str, sqlstate: str, message: str) -> psycopg.Error:
    with psycopg.connect(db_url, autocommit=True) as conn:
        try:
            quoted = message.replace("'", "''")
            conn.execute(f"DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '{sqlstate}', MESSAGE = '{quoted}'; END $$")
        except psycopg.Error as exc:
            return exc
    raise AssertionError("no error")


EXPECTED = {
    "SA001": (400, "owner_required"), "SA002": (400, "owner_required"), "SA003": (422, "owner_not_found"),
    "SA004": (422, "argument_required"), "SA005": (422, "invalid_argument"), "SA010": (404, "image_not_found"),
    "SA011": (422, "image_wrong_type"), "SA012": (404, "image_not_found"), "SA020": (404, "conversion_not_found"),
    "SA021": (409, "invalid_status_transition"), "SA023": (422, "idempotency_key_mismatch"),
    "SA024": (404, "conversion_not_found"), "SA025": (409, "attempt_not_held"), "SA026": (422, "invalid_storage_key"),
}


@pytest.mark.parametrize("sqlstate", sorted(EXPECTED))
def test_each_sqlstate_maps_to_one_problem(db_url, sqlstate) -> None:
    problem = from_database(_refusal(db_url, sqlstate, f"{BY_SQLSTATE[sqlstate]}: rule words"))
    assert (problem.kind.status, problem.kind.name) == EXPECTED[sqlstate]
    body = problem.body()
    assert body["type"] == f"urn:stayler:problem:{EXPECTED[sqlstate][1]}"


def test_a_refusal_added_later_maps_by_its_message_or_to_refused(db_url) -> None:
    assert from_database(_refusal(db_url, "SA099", "invalid_argument: new rule")).kind.name == "invalid_argument"
    assert from_database(_refusal(db_url, "SA098", "brand_new_rule: words")).kind.status == 422
    assert from_database(_refusal(db_url, "23505", "duplicate")).kind.name == "internal"


def test_not_found_details_do_not_vary() -> None:
    assert Problem("image_not_found", "user image X is not yours").detail == Problem("image_not_found").detail
    assert all(kind.status >= 400 for kind in KINDS.values())


def test_unknown_routes_and_methods_are_problems(api) -> None:
    with api.anonymous() as client:
        missing = client.get("/v2/nothing")
        assert missing.status_code == 404 and problem_type(missing) == "not_found"
        wrong = client.delete("/healthz")
        assert wrong.status_code == 405 and problem_type(wrong) == "method_not_allowed"
    too_big = api.owner().client().post("/v1/conversions", content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                                         headers={"content-type": "application/json"})
    assert too_big.status_code == 413 and problem_type(too_big) == "payload_too_large"


def test_an_unexpected_error_is_a_bare_500(api, monkeypatch) -> None:
    owner = api.owner()
    conversion = owner.conversion()
    api.complete(conversion["id"])

    def broken(key: str) -> bytes:
        raise RuntimeError(f"disk exploded at {api.storage.root}/secret/path")

    monkeypatch.setattr(api.server.app.state.ctx.storage, "get", broken)
    response = owner.client("read").get(f"/v1/conversions/{conversion['id']}/result")
    assert response.status_code == 500 and problem_type(response) == "internal"
    assert "exploded" not in response.text and str(api.storage.root) not in response.text
    assert "Traceback" not in response.text


def test_one_access_log_line_per_request_with_the_owner_not_the_key(api, caplog) -> None:
    owner = api.owner()
    with caplog.at_level(logging.INFO, logger="stayler.api.access"):
        owner.client("read").get("/v1/conversions")
        deadline = time.monotonic() + 5  # the line is written just after the response is sent
        while not [r for r in caplog.records if r.name == "stayler.api.access"] and time.monotonic() < deadline:
            time.sleep(0.01)
    [record] = [r for r in caplog.records if r.name == "stayler.api.access"]
    assert record.route == "/v1/conversions" and record.status == 200 and record.latency_ms >= 0
    assert record.owner == f"user:{owner.id}"
    assert owner.keys["read"] not in caplog.text
    metrics = owner.client("read").get("/metrics").text
    assert 'stayler_api_requests_total{method="GET",route="/v1/conversions",status="200"} 1.0' in metrics
    assert 'stayler_api_request_duration_seconds_bucket{le="0.005",method="GET",route="/v1/conversions"}' in metrics
