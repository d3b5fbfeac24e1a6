"""The console over plain HTTP: login and sessions, headers, CSRF, the read-only role, and each action's
effect on the database (the browser tests drive the same pages through Chromium)."""

from __future__ import annotations

import uuid

import httpx
import psycopg
import pytest

from api.keys import revoke_key
from console import data
from console.access import GrantError, grant
from tests.api.conftest import ApiEnv, scalar
from tests.console.conftest import console_key, login


def _failed(api: ApiEnv, count: int = 1) -> list[str]:
    owner = api.owner()
    person, garment = owner.image("user"), owner.image("cloth")
    ids = [owner.conversion(user_image_id=person, cloth_image_id=garment, style_name="casual")["id"]
           for _ in range(count)]
    for cid in ids:
        api.fail(cid)
    return ids


def _status(api: ApiEnv, cid: str) -> str:
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        return str(scalar(conn, "SELECT status FROM conversions WHERE id = %s", (uuid.UUID(cid),)))


def _audit(api: ApiEnv) -> list[tuple[str, str | None, str | None]]:
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        rows = conn.execute("SELECT action, conversion_id::text, new_conversion_id::text FROM operator_actions "
                            "ORDER BY id").fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def test_login_sets_a_strict_http_only_session_cookie(api: ApiEnv) -> None:
    _, key = console_key(api.db_url, "viewer")
    with httpx.Client(base_url=api.base_url) as client:
        response = client.post("/console/login", data={"key": key})
        assert response.status_code == 303 and response.headers["location"] == "/console/"
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
        assert key not in response.headers["set-cookie"]  # the cookie is a session token, never the key
        page = client.get("/console/")
        assert page.status_code == 200 and "Live workers" in page.text


def test_unknown_ungranted_and_revoked_keys_get_no_session(api: ApiEnv) -> None:
    owner = api.owner()
    with httpx.Client(base_url=api.base_url) as client:
        assert client.post("/console/login", data={"key": "sk_stayler_nope"}).status_code == 401
        assert client.post("/console/login", data={"key": owner.keys["operator"]}).status_code == 401  # no grant
        assert client.get("/console/").status_code == 303  # to the login page
    session = login(api, "operator")
    assert session.client.get("/console/").status_code == 200
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        revoke_key(conn, session.key_id)
    assert session.client.get("/console/").status_code == 303  # a revoked key ends its sessions at once


def test_an_operator_grant_needs_an_operator_key(api: ApiEnv) -> None:
    owner = api.owner()
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        read_key_id = conn.execute("SELECT id FROM api_keys WHERE user_id = %s AND scope = 'read'",
                                   (owner.id,)).fetchone()
        assert read_key_id is not None
        with pytest.raises(GrantError):
            grant(conn, read_key_id[0], "operator")
        grant(conn, read_key_id[0], "viewer")


def test_pages_carry_a_strict_content_security_policy(api: ApiEnv) -> None:
    session = login(api, "viewer")
    for path in ("/console/", "/console/conversions", "/console/fragments/overview", "/console/login"):
        response = session.client.get(path)
        assert response.status_code == 200, path
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert "<script>" not in response.text and " style=" not in response.text  # nothing inline
    assert session.client.get("/console/static/console.js").status_code == 200


def test_no_action_is_reachable_by_get(api: ApiEnv) -> None:
    session = login(api, "operator")
    for path in ("/console/actions/cancel", "/console/actions/retry", "/console/actions/retry-matching",
                 "/console/actions/dispatch", "/console/logout"):
        assert session.client.get(path).status_code == 405, path


def test_a_form_without_its_csrf_token_changes_nothing(api: ApiEnv) -> None:
    cid = api.owner().conversion()["id"]
    session = login(api, "operator")
    for token in (None, "forged"):
        form = {"ids": cid, "reason": "ticket 1", **({"csrf_token": token} if token else {})}
        assert session.client.post("/console/actions/cancel", data=form).status_code == 403
    other_origin = session.client.post("/console/actions/cancel", headers={"Origin": "http://evil.example"},
                                       data={"ids": cid, "reason": "x", "csrf_token": session.csrf()})
    assert other_origin.status_code == 403
    assert _status(api, cid) == "pending" and _audit(api) == []


def test_the_read_only_role_changes_nothing(api: ApiEnv) -> None:
    pending = api.owner().conversion()["id"]
    failed = _failed(api)[0]
    viewer = login(api, "viewer")
    page = viewer.client.get(f"/console/conversions/{pending}")
    assert page.status_code == 200 and 'id="cancel"' not in page.text  # no action forms are shown
    csrf = viewer.csrf()
    for path, form in (("/console/actions/cancel", {"ids": pending}), ("/console/actions/retry", {"ids": failed}),
                       ("/console/actions/retry-matching", {}), ("/console/actions/dispatch", {"paused": "true"})):
        response = viewer.client.post(path, data={**form, "reason": "try", "csrf_token": csrf})
        assert response.status_code == 403 and "read-only" in response.text.lower(), path
    assert _status(api, pending) == "pending" and _status(api, failed) == "failed"
    assert _audit(api) == []
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        assert scalar(conn, "SELECT count(*) FROM conversions") == 2
        assert scalar(conn, "SELECT dispatch_paused FROM fleet_controls") is False


def test_operator_cancels_one_or_many_and_each_is_audited(api: ApiEnv) -> None:
    owner = api.owner()
    ids = [owner.conversion()["id"] for _ in range(3)]
    operator = login(api, "operator")
    response = operator.client.post("/console/actions/cancel", data={
        "ids": ids[:2], "reason": "ticket 7", "csrf_token": operator.csrf(), "return_to": "/console/conversions"})
    assert response.status_code == 303 and "cancelled+2" in response.headers["location"]
    assert [_status(api, c) for c in ids] == ["cancelled", "cancelled", "pending"]
    assert sorted(_audit(api)) == sorted([("cancel", ids[0], None), ("cancel", ids[1], None)])
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        who = conn.execute("SELECT DISTINCT operator, reason FROM operator_actions").fetchall()
    assert len(who) == 1 and who[0][0].startswith("console key sk_stayler_") and who[0][1] == "ticket 7"


def test_retry_makes_a_new_linked_conversion_once(api: ApiEnv) -> None:
    failed = _failed(api)[0]
    operator = login(api, "operator")
    for _ in range(2):  # the second retry finds the first's conversion
        response = operator.client.post("/console/actions/retry", data={
            "ids": failed, "reason": "model fixed", "csrf_token": operator.csrf()})
        assert response.status_code == 303
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        rows = conn.execute("SELECT id, status, user_image_id, cloth_image_id, style_name FROM conversions "
                            "WHERE retry_of = %s", (uuid.UUID(failed),)).fetchall()
        original = conn.execute("SELECT user_image_id, cloth_image_id, style_name FROM conversions WHERE id = %s",
                                (uuid.UUID(failed),)).fetchone()
        job = conn.execute("SELECT status FROM conversion_jobs WHERE conversion_id = %s", (rows[0][0],)).fetchone()
    assert len(rows) == 1 and rows[0][1] == "pending" and tuple(rows[0][2:]) == tuple(original or ())
    assert job is not None and job[0] == "queued"
    assert _status(api, failed) == "failed"  # statuses only move forward: the failed one stays failed
    assert _audit(api) == [("retry", failed, str(rows[0][0]))] * 2  # each retry audited (retried, already_retried)
    detail = operator.client.get(f"/console/conversions/{failed}").text
    assert "retried as" in detail and str(rows[0][0])[:8] in detail


def test_retry_refuses_what_did_not_fail(api: ApiEnv) -> None:
    pending = api.owner().conversion()["id"]
    operator = login(api, "operator")
    response = operator.client.post("/console/actions/retry", data={
        "ids": pending, "reason": "x", "csrf_token": operator.csrf()})
    assert response.status_code == 303 and "refused+1" in response.headers["location"]
    assert _audit(api) == [("retry", pending, None)]  # audited with its outcome, not_failed


def test_bulk_retry_by_filter_retries_only_the_matching_failures(api: ApiEnv) -> None:
    failed = _failed(api, 3)
    other = _failed(api, 1)[0]
    with psycopg.connect(api.db_url, autocommit=True) as conn:  # the filter: one owner
        owner_id = scalar(conn, "SELECT user_id FROM conversions WHERE id = %s", (uuid.UUID(failed[0]),))
    operator = login(api, "operator")
    form = {"owner": str(owner_id), "reason": "storage outage over", "csrf_token": operator.csrf()}
    asked = operator.client.post("/console/actions/retry-matching", data=form)
    assert asked.status_code == 200 and "Retry 3" in asked.text and _audit(api) == []  # asks once more
    response = operator.client.post("/console/actions/retry-matching", data={**form, "confirm": "3"})
    assert response.status_code == 303 and "retried+3" in response.headers["location"]
    retried = {a[1] for a in _audit(api)}
    assert retried == set(failed) and other not in retried


def test_pause_and_resume_dispatch_are_audited(api: ApiEnv) -> None:
    operator = login(api, "operator")
    for paused in ("true", "false"):
        response = operator.client.post("/console/actions/dispatch", data={
            "paused": paused, "reason": "maintenance", "csrf_token": operator.csrf()})
        assert response.status_code == 303
        with psycopg.connect(api.db_url, autocommit=True) as conn:
            assert scalar(conn, "SELECT dispatch_paused FROM fleet_controls") is (paused == "true")
        assert ("PAUSED" in operator.client.get("/console/").text) is (paused == "true")
    assert [a[0] for a in _audit(api)] == ["pause_dispatch", "resume_dispatch"]


def test_the_list_pages_by_keyset_and_filters(api: ApiEnv) -> None:
    owner = api.owner()
    person, garment = owner.image("user"), owner.image("cloth")
    ids = [owner.conversion(user_image_id=person, cloth_image_id=garment)["id"] for _ in range(7)]
    api.fail(ids[0])
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        seen: list[str] = []
        cursor = None
        while True:
            rows, cursor = data.conversion_page(conn, data.Filters(), cursor, limit=3)
            seen.extend(str(r["id"]) for r in rows)
            if cursor is None:
                break
        assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
        rows, _ = data.conversion_page(conn, data.Filters(status="failed"), None)
        assert [str(r["id"]) for r in rows] == [ids[0]]
        rows, _ = data.conversion_page(conn, data.Filters(error_type="invalid_image"), None)
        assert [str(r["id"]) for r in rows] == [ids[0]]
        rows, _ = data.conversion_page(conn, data.Filters(owner=str(uuid.uuid4())), None)
        assert rows == []
    viewer = login(api, "viewer")
    page = viewer.client.get("/console/conversions", params={"status": "pending", "owner": str(owner.id)})
    assert page.status_code == 200 and page.text.count('class="st-pending"') == 6
    assert viewer.client.get("/console/conversions", params={"cursor": "garbage"}).status_code == 200
