"""The console shows which shared services the workers find down (read-only; from the registry)."""

from __future__ import annotations

import psycopg

from schema.queries import Q
from tests.api.conftest import ApiEnv
from tests.console.conftest import login


def test_the_worker_list_says_which_shared_service_a_worker_finds_down(api: ApiEnv) -> None:
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        for worker_id in ("w-up", "w-down"):
            conn.execute(Q.worker_register, {"id": worker_id, "hostname": worker_id, "pid": 1, "concurrency": 1,
                                             "model_name": "m", "model_version": "v"})
        conn.execute(Q.workers_renew, {"id": "w-down", "services_down": "storage"})
    session = login(api, "viewer")
    page = session.client.get("/console/").text
    assert 'id="outages"' in page and "sees storage down" in page
    assert page.count("sees storage down") == 1  # the worker that finds it up says nothing
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        conn.execute(Q.workers_renew, {"id": "w-down", "services_down": None})
    page = session.client.get("/console/").text
    assert 'id="outages"' not in page and "sees" not in page
