"""Rows 11 and 12 of issue 19: the retry link is a column only the operator's retry writes (a customer's
metadata ``retry_of`` means nothing), every operator action is audited with its real outcome, and a bulk
retry whose filter cannot be read is an error on the page, never "no filter", and asks once more."""

from __future__ import annotations

import uuid

import psycopg

from tests.api.conftest import ApiEnv
from tests.console.conftest import login


def _failed(api: ApiEnv, owner: object | None = None, count: int = 1, **body: object) -> list[str]:
    owner = owner or api.owner()
    ids = [owner.conversion(**body)["id"] for _ in range(count)]  # type: ignore[attr-defined]
    for cid in ids:
        api.fail(cid)
    return ids


def _outcomes(api: ApiEnv) -> list[tuple[str, str | None, str | None]]:
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        rows = conn.execute("SELECT action, conversion_id::text, outcome FROM operator_actions ORDER BY id").fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def test_a_customers_metadata_retry_of_cannot_stop_or_steal_an_operator_retry(api: ApiEnv) -> None:
    victim = _failed(api)[0]
    attacker = api.owner()
    decoy = attacker.conversion(metadata={"retry_of": victim})["id"]  # claims to be the victim's retry
    operator = login(api, "operator")
    response = operator.client.post("/console/actions/retry", data={
        "ids": victim, "reason": "model fixed", "csrf_token": operator.csrf()})
    assert response.status_code == 303 and "retried+1" in response.headers["location"]
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        retries = conn.execute("SELECT id, user_id FROM conversions WHERE retry_of = %s",
                               (uuid.UUID(victim),)).fetchall()
        owner_of_victim = conn.execute("SELECT user_id FROM conversions WHERE id = %s",
                                       (uuid.UUID(victim),)).fetchone()
        decoy_link = conn.execute("SELECT retry_of FROM conversions WHERE id = %s", (uuid.UUID(decoy),)).fetchone()
    assert owner_of_victim is not None
    assert len(retries) == 1 and str(retries[0][0]) != decoy and retries[0][1] == owner_of_victim[0]
    assert decoy_link == (None,)
    assert _outcomes(api) == [("retry", victim, "retried")]


def test_every_operator_action_is_audited_with_what_it_did(api: ApiEnv) -> None:
    failed = _failed(api)[0]
    ghost = str(uuid.uuid4())
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        for sql, args in (("SELECT operator_retry_conversion(%s, 'ops', 'r')", (failed,)),
                          ("SELECT operator_retry_conversion(%s, 'ops', 'r')", (failed,)),
                          ("SELECT operator_retry_conversion(%s, 'ops', 'r')", (ghost,)),
                          ("SELECT operator_cancel_conversion(%s, 'ops', 'r')", (failed,)),
                          ("SELECT operator_cancel_conversion(%s, 'ops', 'r')", (ghost,)),
                          ("SELECT operator_set_dispatch_paused(true, 'ops', 'r')", ()),
                          ("SELECT operator_set_dispatch_paused(true, 'ops', 'r')", ()),
                          ("SELECT operator_set_dispatch_paused(false, 'ops', 'r')", ())):
            conn.execute(sql, args)
    assert _outcomes(api) == [
        ("retry", failed, "retried"), ("retry", failed, "already_retried"), ("retry", ghost, "not_found"),
        ("cancel", failed, "no_change"), ("cancel", ghost, "not_found"),
        ("pause_dispatch", None, "paused"), ("pause_dispatch", None, "no_change"), ("resume_dispatch", None, "resumed"),
    ]


def test_a_bulk_retry_with_an_unreadable_filter_touches_nothing(api: ApiEnv) -> None:
    mine = _failed(api, count=2)
    others = _failed(api, count=2)
    operator = login(api, "operator")
    for bad in ({"owner": "not-an-owner-id"}, {"since": "yesterday-ish"}):
        for confirm in ({}, {"confirm": "4"}):
            response = operator.client.post("/console/actions/retry-matching", data={
                **bad, **confirm, "reason": "outage over", "csrf_token": operator.csrf()})
            assert response.status_code == 400 and "Nothing was retried" in response.text
    assert _outcomes(api) == []
    assert set(mine).isdisjoint(others)
