"""Hostile customer, issue 19 rows 7, 9 and 14: slow-to-resolve webhook names cannot take the API's
threads; the read-only role cannot read signing secrets, which are encrypted at rest with rotating
keys; an owner's endpoints are capped, the fan-out happens in the sender, and finished webhook rows
are pruned by the retention duty."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet
from psycopg import sql

from api.webhooks.signing import verify
from leader.config import RetentionSettings
from leader.duties.retention import RetentionDuty
from tests.api.conftest import problem_type
from tests.hostile.webhook_peers import FakeDns, deliveries, receiver, run_sender_once


def test_names_that_take_long_to_resolve_hold_no_request_thread(make_api, monkeypatch) -> None:
    dns = FakeDns(monkeypatch)
    api = make_api(webhook_allow_private=False, webhook_resolve_timeout_s=0.5)
    mallory, bob = api.owner(), api.owner()
    bob_conversion = bob.conversion()
    try:
        with ThreadPoolExecutor(40) as pool:
            creates = [pool.submit(mallory.client("operator").post, "/v1/webhooks",
                                   json={"url": f"https://h{i}.slow.test/hook"}) for i in range(40)]
            # While those names hang (the fake never answers until released), Bob's reads are served.
            with httpx.Client(base_url=api.base_url, timeout=10,
                              headers={"Authorization": f"Bearer {bob.keys['read']}"}) as reader:
                for _ in range(5):
                    assert reader.get(f"/v1/conversions/{bob_conversion['id']}").status_code == 200
            answers = [c.result(timeout=60) for c in creates]
            assert not dns.release.is_set()
        assert {a.status_code for a in answers} == {422}
        assert {problem_type(a) for a in answers} == {"webhook_url_refused"}
        assert "did not resolve within 0.5 s" in answers[0].json()["detail"]
    finally:
        dns.release.set()
    assert mallory.client("read").get("/v1/webhooks").json() == []


def _as_role(db_url: str, role: str) -> psycopg.Connection:
    conn = psycopg.connect(db_url, autocommit=True)
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    return conn


def test_the_read_only_role_cannot_read_signing_secrets(api) -> None:
    owner = api.owner()
    owner.client("operator").post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"})
    with _as_role(api.db_url, "stayler_operator_ro") as reader:
        assert reader.execute("SELECT count(*), min(url) FROM webhook_endpoints").fetchone() == (
            1, "http://127.0.0.1:9/hook")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("SELECT secret FROM webhook_endpoints")
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        readers = conn.execute(
            "SELECT r.rolname FROM pg_roles r WHERE r.rolname LIKE 'stayler%%' AND r.rolname <> 'stayler_admin' "
            "AND has_column_privilege(r.oid, 'webhook_endpoints', 'secret', 'SELECT')").fetchall()
    assert readers == []


@pytest.mark.slow  # two API servers; sealing and opening with any listed key stay in test_webhook_secretbox.py
def test_secrets_are_encrypted_at_rest_and_keys_rotate(make_api) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with receiver() as hooks:
        plain_api = make_api()  # a deployment from before the keys: stored as is
        alice = plain_api.owner()
        alice_secret = alice.client("operator").post("/v1/webhooks", json={"url": hooks.url()}).json()["secret"]
        keyed_api = make_api(secret_keys=old_key)
        bob = keyed_api.owner()
        bob_secret = bob.client("operator").post("/v1/webhooks", json={"url": hooks.url()}).json()["secret"]
        with psycopg.connect(keyed_api.db_url, autocommit=True) as conn:
            rows = conn.execute("SELECT user_id, secret FROM webhook_endpoints").fetchall()
        stored: dict[uuid.UUID, bytes] = {row[0]: bytes(row[1]) for row in rows}
        assert stored[bob.id].startswith(b"enc1:") and bob_secret.encode() not in stored[bob.id]
        # Rotation: the new key first, the old one still listed; the sender re-encrypts everything.
        rotated = make_api(secret_keys=f"{new_key},{old_key}")
        from api.webhooks.sender import Sender

        sender = Sender(rotated.settings, rotated.db_url, storage=rotated.storage)
        try:
            with psycopg.connect(rotated.db_url, autocommit=True) as conn:
                assert sender.rewrap_secrets(conn) == 2
                assert sender.rewrap_secrets(conn) == 0
                prefixes = {bytes(s)[:14] for (s,) in conn.execute("SELECT secret FROM webhook_endpoints")}
        finally:
            sender.close()
        assert prefixes == {sender.box.primary}
        # The old key can go now: deliveries are signed with the secrets the owners were shown.
        final = make_api(secret_keys=new_key)
        rotated.complete(alice.conversion()["id"])
        rotated.complete(bob.conversion()["id"])
        run_sender_once(final)
        assert len(hooks.requests) == 2
        signed_with = []
        for request in hooks.requests:
            head, body = request.split(b"\r\n\r\n", 1)
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.decode().partition(":") for line in head.split(b"\r\n")[1:])}
            signed_with += [name for name, secret in (("alice", alice_secret), ("bob", bob_secret))
                            if verify(secret, headers, body)]
        assert sorted(signed_with) == ["alice", "bob"]


def test_an_owner_has_at_most_the_configured_endpoints(make_api) -> None:
    api = make_api(webhook_max_endpoints=3)
    mallory, bob = api.owner(), api.owner()
    client = mallory.client("operator")
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda i: client.post("/v1/webhooks", json={"url": f"http://127.0.0.1:9/{i}"}),
                                range(10)))
    assert sorted(a.status_code for a in answers) == [201] * 3 + [409] * 7
    refused = next(a for a in answers if a.status_code == 409)
    assert problem_type(refused) == "webhook_limit_reached" and "at most 3" in refused.json()["detail"]
    assert len(client.get("/v1/webhooks").json()) == 3
    assert bob.client("operator").post("/v1/webhooks", json={"url": "http://127.0.0.1:9/b"}).status_code == 201


def test_the_terminal_move_writes_one_event_and_the_sender_fans_out(make_api) -> None:
    api = make_api(webhook_max_endpoints=50, webhook_timeout_s=1.0, webhook_backoff_base_s=600.0,
                   webhook_backoff_max_s=600.0)
    owner = api.owner()
    for i in range(50):
        assert owner.client("operator").post("/v1/webhooks", json={"url": f"http://127.0.0.1:9/{i}"}
                                             ).status_code == 201
    conversion = owner.conversion()
    with psycopg.connect(api.db_url) as conn:  # inside the transaction that ends the conversion
        conn.execute("SELECT update_conversion_status(conversion_id := %s, status := 'failed', "
                     "error_message := 'x', error_type := 'internal')", (uuid.UUID(conversion["id"]),))
        rows = conn.execute("SELECT (SELECT count(*) FROM webhook_events), "
                            "(SELECT count(*) FROM webhook_deliveries)").fetchone()
        conn.commit()
    assert rows == (1, 0)
    run_sender_once(api)
    outcomes = deliveries(api)
    assert len(outcomes) == 50 and {attempts for _, attempts, _ in outcomes.values()} == {1}


def test_finished_webhook_rows_are_pruned_by_retention(make_api) -> None:
    api = make_api(retention_webhooks_after_s=3600.0, retention_batch_size=2)
    with receiver() as hooks:
        owner = api.owner()
        owner.client("operator").post("/v1/webhooks", json={"url": hooks.url()})
        for _ in range(3):
            api.complete(owner.conversion()["id"])
        run_sender_once(api)
        api.complete(owner.conversion()["id"])  # this one stays pending (not sent yet)
        with psycopg.connect(api.db_url, autocommit=True) as conn:
            conn.execute("UPDATE webhook_deliveries SET finished_at = now() - interval '2 hours' "
                         "WHERE status = 'delivered'")
            conn.execute("UPDATE webhook_events SET fanned_out_at = now() - interval '2 hours', "
                         "created_at = now() - interval '2 hours' WHERE fanned_out_at IS NOT NULL")
            retention = RetentionDuty(RetentionSettings.from_settings(api.settings))
            assert retention.run_once(conn) == 6  # 3 deliveries (with attempts), 3 events
            left = conn.execute("SELECT (SELECT count(*) FROM webhook_deliveries), (SELECT count(*) FROM "
                                "webhook_attempts), (SELECT count(*) FROM webhook_events)").fetchone()
        assert left == (0, 0, 1)  # the pending event waits to be fanned out; nothing was sent or lost
