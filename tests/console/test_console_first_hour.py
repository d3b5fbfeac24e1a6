"""The detail page for an operator's first hour (issue 23): never-retried failures are marked and their
retry must be confirmed, an existing retry is shown instead of Retry, and the attempts appear once."""

from __future__ import annotations

import re
import uuid

import psycopg

from tests.api.conftest import ApiEnv
from tests.console.conftest import login


def failed_with(api: ApiEnv, error_type: str) -> str:
    """A conversion failed for good with ``error_type`` (as the worker's SQL would record it)."""
    owner = api.owner()
    cid = owner.conversion(style_name="casual")["id"]
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        conn.execute("SELECT update_conversion_status(conversion_id := %s, status := 'failed', "
                     "error_message := 'it went wrong', error_type := %s)", (uuid.UUID(cid), error_type))
    return cid


def test_a_never_retried_failure_is_marked_and_its_retry_needs_a_confirmation(api: ApiEnv) -> None:
    operator = login(api, "operator")
    page = operator.client.get(f"/console/conversions/{failed_with(api, 'no_person')}").text
    assert 'id="permanent"' in page and "never retried" in page
    confirm = re.search(r'<input type="checkbox" name="confirm_permanent"[^>]*>', page)
    assert confirm and "required" in confirm.group(0) and 'id="retry"' in page
    listed = operator.client.get("/console/conversions?status=failed").text
    assert "never retried" in listed


def test_a_retried_failure_shows_its_retry_instead_of_the_button(api: ApiEnv) -> None:
    operator = login(api, "operator")
    cid = failed_with(api, "inference")
    page = operator.client.get(f"/console/conversions/{cid}").text
    assert 'id="retry"' in page and 'name="confirm_permanent"' not in page and 'id="permanent"' not in page
    response = operator.client.post("/console/actions/retry", data={
        "csrf_token": operator.csrf(f"/console/conversions/{cid}"), "ids": cid, "reason": "model fixed",
        "return_to": f"/console/conversions/{cid}"})
    assert response.status_code == 303
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        [(new_id,)] = conn.execute("SELECT id::text FROM conversions WHERE retry_of = %s",
                                   (cid,)).fetchall()
    page = operator.client.get(f"/console/conversions/{cid}").text
    assert 'id="retry"' not in page and 'id="retried"' in page
    assert f'href="/console/conversions/{new_id}"' in page


def test_the_attempts_are_shown_once(api: ApiEnv) -> None:
    viewer = login(api, "viewer")
    page = viewer.client.get(f"/console/conversions/{failed_with(api, 'storage')}").text
    tables = re.findall(r'<table[^>]* id="([^"]+)"', page)
    assert tables == ["attempts", "usage", "actions"], tables  # the job rows and their history were two tables


def test_the_overview_shows_what_the_operator_on_call_looks_at_first(api: ApiEnv) -> None:
    owner = api.owner()
    done = [owner.conversion()["id"] for _ in range(3)]
    for cid in done:
        api.complete(cid)
    failed_with(api, "no_person")
    cancelled = owner.conversion()["id"]
    assert owner.client().post(f"/v1/conversions/{cancelled}/cancel").status_code == 200
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        # One attempt retried after an error and one rescued after its worker was lost.
        for error_type in ("storage", "worker_lost"):
            job = conn.execute("SELECT j.id FROM conversion_jobs j JOIN conversions c ON c.id = j.conversion_id "
                               "WHERE c.id = %s", (uuid.UUID(owner.conversion()["id"]),)).fetchone()
            assert job is not None
            conn.execute("INSERT INTO conversion_job_attempts (job_id, attempt, worker_id, started_at, outcome, "
                         "error_type) VALUES (%s, 1, 'w', now(), 'requeued', %s)", (job[0], error_type))
        endpoint = conn.execute("INSERT INTO webhook_endpoints (user_id, url, events, secret, disabled_at, enabled) "
                                "VALUES (%s, 'https://hooks.invalid/x', ARRAY['conversion.completed'], 'x', now(), "
                                "false) RETURNING id", (owner.id,)).fetchone()
        assert endpoint is not None
    viewer = login(api, "viewer")
    page = viewer.client.get("/console/fragments/overview").text

    def shown(element_id: str) -> str:
        match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', page)
        assert match, element_id
        return match.group(1).strip()

    assert shown("latency-p50").endswith(" ms") and shown("latency-p95").endswith(" ms")
    assert shown("failure-ratio") == "25.0 %"  # 1 failed of 4 ended (the cancellation is not a failure)
    assert (shown("cancelled-hour"), shown("retried-hour"), shown("rescued-hour")) == ("1", "1", "1")
    assert shown("endpoints-disabled") == "1" and shown("webhooks-pending") == "0"
    trend = re.findall(r'<td class="num">(\d+)</td><td class="num">(\d+)</td>', page.split('id="queue-trend"')[1])
    assert sum(int(s) for s, _ in trend) == 7 and sum(int(e) for _, e in trend) == 5
