"""broker.messages and broker.redis on fakeredis: claim messages, the idle poll, the follow-up."""

from __future__ import annotations

import logging

import fakeredis
import pytest

from broker.messages import ACTOR_NAME, claim_message, send_claim_messages, send_follow_up, waiting_messages
from broker.redis import StaylerRedisBroker


def test_claim_messages_carry_no_payload_and_are_counted_in_redis() -> None:
    broker = StaylerRedisBroker(client=fakeredis.FakeRedis(), namespace="t", idle_poll_ms=20)
    msg = claim_message("q")
    assert (msg.actor_name, msg.args, msg.kwargs) == (ACTOR_NAME, (), {})
    assert send_claim_messages(broker, "q", 3) == 3
    assert waiting_messages(broker, "q") == 3


def test_the_broker_caps_the_idle_poll() -> None:
    broker = StaylerRedisBroker(client=fakeredis.FakeRedis(), namespace="t", idle_poll_ms=20)
    broker.declare_queue("q")
    consumer = broker.consume("q", prefetch=1, timeout=1000)
    assert consumer.timeout == 20  # type: ignore[attr-defined]


def test_a_follow_up_message_lost_to_a_redis_outage_does_not_abort_the_batch(
        caplog: pytest.LogCaptureFixture) -> None:
    # Regression: the actor enqueued its follow-up before processing the batch; with Redis down the
    # enqueue raised and the claimed jobs were held (and heartbeated) until the job timeout.
    import redis

    class DownBroker(StaylerRedisBroker):
        def enqueue(self, message: object, *, delay: int | None = None) -> object:  # type: ignore[override]
            raise redis.ConnectionError("Connection refused")

    broker = DownBroker(client=fakeredis.FakeRedis(), namespace="t")
    with caplog.at_level(logging.WARNING):
        assert send_follow_up(broker, "q") is False
    assert "the sweep will" in caplog.text
    ok = StaylerRedisBroker(client=fakeredis.FakeRedis(), namespace="t")
    assert send_follow_up(ok, "q") is True and waiting_messages(ok, "q") == 1
