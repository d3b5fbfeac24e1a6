"""Hostile customer, issue 19 rows 5 and 15: a delivery whose message cannot be built fails alone and the
rest of its batch is sent; deleting an endpoint while its webhook is being sent loses no other outcome
and re-sends nothing that was delivered."""

from __future__ import annotations

import json
import socket
import uuid

import psycopg
import pytest

from tests.hostile.webhook_peers import deliveries, receiver, run_sender_once


def _deep(levels: int) -> str:
    return "{\"a\": " * levels + "1" + "}" * levels


def test_a_delivery_that_cannot_be_built_fails_alone(api, monkeypatch) -> None:
    import api.webhooks.sender as sender_module

    with receiver() as mallory_hooks, receiver() as bob_hooks:
        mallory, bob = api.owner(), api.owner()
        mallory_endpoint = mallory.client("operator").post("/v1/webhooks", json={"url": mallory_hooks.url()}).json()
        bob_endpoint = bob.client("operator").post("/v1/webhooks", json={"url": bob_hooks.url()}).json()
        poisoned = mallory.conversion()
        # Metadata nested 256 levels deep, as abfa2b2 accepted it (the API and SQL now refuse it up front;
        # rows from before stay). Written straight into the row, triggers off, as an old row would be.
        with psycopg.connect(api.db_url, autocommit=True) as conn:
            conn.execute("SET session_replication_role = replica")
            conn.execute("UPDATE conversions SET metadata = %s::jsonb WHERE id = %s",
                         (_deep(256), uuid.UUID(poisoned["id"])))
        # The view now answers such a row with empty metadata; any other fault of building one message
        # (here: the view raising for Mallory's conversion only) must still fail that delivery alone.
        real_view = sender_module.conversion_view

        def view(row, links):
            if str(row["id"]) == poisoned["id"]:
                raise RecursionError("maximum recursion depth exceeded")
            return real_view(row, links)

        monkeypatch.setattr(sender_module, "conversion_view", view)
        api.complete(poisoned["id"])
        fine = bob.conversion()
        api.complete(fine["id"])
        run_sender_once(api)
        outcomes = deliveries(api)
        status, attempts, log = outcomes[uuid.UUID(mallory_endpoint["id"])]
        assert status == "failed" and attempts == 1 and log[0][0] is None and "message not built" in log[0][1]
        assert mallory_hooks.requests == []
        assert outcomes[uuid.UUID(bob_endpoint["id"])][0] == "delivered"
        [request] = bob_hooks.requests
        assert json.loads(request.split(b"\r\n\r\n", 1)[1])["data"]["id"] == fine["id"]


@pytest.mark.slow  # the default suite keeps test_a_delivery_that_cannot_be_built_fails_alone
def test_deleting_an_endpoint_mid_send_loses_no_other_outcome(api) -> None:
    with receiver() as doomed, receiver() as bob_hooks:
        mallory, bob = api.owner(), api.owner()
        mallory.client("operator").post("/v1/webhooks", json={"url": doomed.url()})
        bob_endpoint = bob.client("operator").post("/v1/webhooks", json={"url": bob_hooks.url()}).json()
        api.complete(mallory.conversion()["id"])
        api.complete(bob.conversion()["id"])
        mallory_operator = mallory.client("operator")
        hooks = mallory_operator.get("/v1/webhooks").json()
        base = api.base_url

        def delete_then_answer(conn: socket.socket) -> None:
            import httpx

            # Mallory deletes her endpoint while its webhook is in flight, then answers 200.
            with httpx.Client(base_url=base, headers=dict(mallory_operator.headers)) as client:
                assert client.delete(f"/v1/webhooks/{hooks[0]['id']}").status_code == 204
            doomed.send(conn, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")

        doomed.answer = delete_then_answer
        run_sender_once(api)
        assert len(doomed.requests) == 1
        outcomes = deliveries(api)
        assert list(outcomes) == [uuid.UUID(bob_endpoint["id"])]  # mallory's went with her endpoint
        assert outcomes[uuid.UUID(bob_endpoint["id"])] == ("delivered", 1, [["200", None]])
        # Whatever the next pass finds due, Bob's delivered webhook is not sent again.
        with psycopg.connect(api.db_url, autocommit=True) as conn:
            conn.execute("UPDATE webhook_deliveries SET next_attempt_at = now() WHERE status = 'pending'")
        run_sender_once(api)
        assert len(bob_hooks.requests) == 1
