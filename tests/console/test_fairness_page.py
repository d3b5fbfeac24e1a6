"""The console's fair-share page: the owners with the largest backlog first, and who the per-owner
cap holds back now."""

from __future__ import annotations

import re

import psycopg

from tests.api.conftest import ApiEnv
from tests.console.conftest import login
from tests.queue.ops import claim_jobs
from tests.support.factories import make_image, make_user, make_vendor


def test_the_page_lists_the_largest_backlogs_and_the_throttled(api: ApiEnv) -> None:
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        conn.execute("UPDATE fair_plans SET max_processing = 1 WHERE plan = 'vendor'")
        vendor, user = make_vendor(conn), make_user(conn)
        for owner, kind, count in ((vendor, "vendor", 5), (user, "user", 2)):
            person = make_image(conn, owner, owner_type=kind, type_="user")
            cloth = make_image(conn, owner, owner_type=kind, type_="cloth")
            who = {"user_id": owner} if kind == "user" else {"vendor_id": owner}
            for _ in range(count):
                conn.execute("SELECT create_conversion(user_id := %(user_id)s, vendor_id := %(vendor_id)s, "
                             "user_image_id := %(p)s, cloth_image_id := %(c)s)",
                             {"user_id": None, "vendor_id": None, **who, "p": person, "c": cloth})
        claim_jobs(conn, "w", 8)  # the vendor reaches its cap of 1; the user has no cap
    viewer = login(api, "viewer")
    page = viewer.client.get("/console/fairness")
    assert page.status_code == 200
    rows = re.findall(r"<tr( class=\"throttled\")?>\s*<td><a href=\"/console/conversions\?owner=([0-9a-f-]+)\"",
                      page.text)
    assert [(owner, bool(mark)) for mark, owner in rows] == [(str(vendor), True)]  # the user's 2 were claimed
    assert 'id="fair-plans"' in page.text and ">vendor<" in page.text
    assert api.anonymous().get("/console/fairness", follow_redirects=False).status_code in (302, 303, 307)
