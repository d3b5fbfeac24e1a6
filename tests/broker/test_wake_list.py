"""The wake list behind the blocking idle wait (fast checks on fakeredis; the real-server figures are in
``test_idle_cost``)."""

from __future__ import annotations

import threading

import dramatiq
import fakeredis

from broker.redis import WAKE_CAP, StaylerRedisBroker


def _broker() -> StaylerRedisBroker:
    return StaylerRedisBroker(client=fakeredis.FakeRedis(), namespace="t", idle_poll_ms=2000)


def _message(queue: str) -> dramatiq.Message[object]:
    return dramatiq.Message(queue_name=queue, actor_name="a", args=(), kwargs={}, options={})


def test_every_enqueue_pushes_one_wake_token_and_the_list_stays_capped() -> None:
    broker = _broker()
    broker.declare_queue("q")
    broker.enqueue(_message("q"))
    assert broker.client.llen("t:q.wake") == 1
    broker.wake("q", WAKE_CAP + 50)
    assert broker.client.llen("t:q.wake") == WAKE_CAP


def test_an_idle_consumer_blocks_until_an_enqueue_wakes_it() -> None:
    # A long idle wait (30 s), so even a late timer on a loaded machine falls inside it.
    broker = StaylerRedisBroker(client=fakeredis.FakeRedis(), namespace="t", idle_poll_ms=30_000)
    broker.declare_queue("q")
    consumer = broker.consume("q", prefetch=1, timeout=30_000)
    woken: list[bool] = []  # what each idle wait returned: True when a wake token ended it
    wait_for_wake = broker.wait_for_wake
    enqueued = threading.Event()

    def enqueue() -> None:
        broker.enqueue(_message("q"))
        enqueued.set()

    timer = threading.Timer(0.2, enqueue)

    def recording(queue_name: str, timeout_s: float) -> bool:
        timer.start()  # the enqueue comes while the consumer waits, never before its empty fetch
        woke = wait_for_wake(queue_name, timeout_s)
        woken.append(woke)
        return woke

    broker.wait_for_wake = recording  # type: ignore[method-assign]
    assert next(consumer) is None  # the empty fetch, then the wait the enqueue ends
    # Counted, not timed: one idle wait, ended by the enqueue's wake token (not its 30 s timeout).
    assert woken == [True] and enqueued.is_set()
    message = next(consumer)
    assert message is not None and message.actor_name == "a"
    timer.join()


def test_a_full_consumer_leaves_the_wake_tokens_to_others() -> None:
    broker = _broker()
    broker.declare_queue("q")
    broker.enqueue(_message("q"))
    consumer = broker.consume("q", prefetch=1, timeout=2000)
    assert next(consumer) is not None  # now holding its one allowed message
    broker.enqueue(_message("q"))
    assert next(consumer) is None
    assert broker.client.llen("t:q.wake") == 2  # nothing taken: an idle consumer elsewhere gets woken


def test_requeued_messages_wake_the_other_consumers() -> None:
    broker = _broker()
    broker.declare_queue("q")
    broker.enqueue(_message("q"))
    consumer = broker.consume("q", prefetch=1, timeout=2000)
    held = next(consumer)
    assert held is not None
    broker.client.delete("t:q.wake")
    consumer.requeue([held])
    assert broker.client.llen("t:q.wake") == 1 and broker.waiting_messages("q") == 1
