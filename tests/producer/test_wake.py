"""A producer wakes a worker itself right after its commit (and never before it)."""

from __future__ import annotations

import fakeredis
import psycopg

from broker.messages import waiting_messages
from broker.redis import StaylerRedisBroker
from producer import Waker, submit
from tests.support.factories import make_image, make_user


def test_a_committed_submit_sends_one_claim_message(db: psycopg.Connection) -> None:
    broker = StaylerRedisBroker(client=fakeredis.FakeRedis(), namespace="t")
    user = make_user(db)
    person, cloth = make_image(db, user, type_="user"), make_image(db, user, type_="cloth")
    submit(db, user_id=user, user_image_id=person, cloth_image_id=cloth, waker=Waker(broker, "q"))
    assert waiting_messages(broker, "q") == 1


def test_nothing_is_sent_from_inside_an_open_transaction(db_url: str) -> None:
    broker = StaylerRedisBroker(client=fakeredis.FakeRedis(), namespace="t")
    with psycopg.connect(db_url) as conn:  # not autocommit: the job is invisible until commit
        user = make_user(conn)
        person, cloth = make_image(conn, user, type_="user"), make_image(conn, user, type_="cloth")
        submit(conn, user_id=user, user_image_id=person, cloth_image_id=cloth, waker=Waker(broker, "q"))
        assert waiting_messages(broker, "q") == 0
        conn.rollback()
