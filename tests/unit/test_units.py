"""Fast unit tests: no database, no Redis server."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import fakeredis
import psycopg
import pytest

from broker.messages import ACTOR_NAME, claim_message, send_claim_messages, send_follow_up, waiting_messages
from broker.redis import StaylerRedisBroker
from core import logs
from core.settings import Settings
from leader.planner import messages_to_send
from schema.queries import Q, load
from storage import InvalidKeyError, LocalStorage, StorageError, attempt_keys, result_key, validate_key
from worker.errors import ERROR_TYPES, classify
from worker.failpoints import Failpoints
from worker.inflight import HeldClaim, InFlight


@pytest.mark.parametrize(("available", "waiting", "batch", "cap", "expected"), [
    (0, 0, 8, 64, 0),
    (1, 0, 8, 64, 1),
    (17, 0, 8, 64, 3),
    (17, 2, 8, 64, 1),
    (17, 5, 8, 64, 0),
    (10_000, 0, 16, 64, 64),
    (10_000, 70, 16, 64, 0),
])
def test_planner_tops_the_queue_up_to_one_message_per_batch(available: int, waiting: int, batch: int, cap: int,
                                                            expected: int) -> None:
    assert messages_to_send(available, waiting, batch, cap) == expected


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


@pytest.mark.parametrize(("exc", "code", "transient"), [
    (FileNotFoundError(2, "No such file", "images/x.jpg"), "input_missing", False),
    (psycopg.OperationalError("connection refused"), "database", True),
    (OSError(28, "No space left on device"), "storage", True),
    (StorageError("could not write"), "storage", True),
    (ValueError("boom"), "internal", True),
])
def test_errors_map_to_stable_types(exc: BaseException, code: str, transient: bool) -> None:
    failure = classify(exc)
    assert (failure.error_type, failure.transient) == (code, transient)
    assert failure.error_type in ERROR_TYPES
    assert failure.message


def test_library_errors_keep_their_own_type() -> None:
    from imaging.errors import ImageDecodeError
    from models.contract import ModelContractError

    assert classify(ImageDecodeError("truncated")).error_type == "invalid_image"
    assert classify(ModelContractError("bad")).transient is False
    assert len(classify(ValueError("x" * 5000)).message) <= 1100


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs/path", "images/../../x", "images/x y.jpg", "", "Images/A.jpg",
                                 "images/\x00.jpg", "a" * 600])
def test_storage_refuses_keys_that_are_not_the_systems_own(key: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidKeyError):
        validate_key(key)
    with pytest.raises(InvalidKeyError):
        LocalStorage(tmp_path).put(key, b"x")
    assert list(tmp_path.rglob("*")) == []


def test_local_storage_round_trip_and_atomic_writes(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    cid = uuid.uuid4()
    key = result_key(cid, 2, "image/jpeg")
    obj = store.put(key, b"abc")
    assert (obj.size, store.get(key)) == (3, b"abc")
    assert obj.url == f"file://{tmp_path.resolve()}/{key}"
    assert key in attempt_keys(cid, 2) and result_key(cid, 2, "image/jpeg", thumbnail=True) in attempt_keys(cid, 2)
    (tmp_path / "results" / str(cid) / "blocker").mkdir()
    with pytest.raises(StorageError):
        store.put(f"results/{cid}/blocker", b"x")  # a folder where a file must go
    assert not list(tmp_path.rglob(".tmp-*"))  # no partial file left behind
    store.delete(key)
    store.delete(key)  # deleting twice is fine
    with pytest.raises(FileNotFoundError):
        store.get(key)


def test_failpoints_parse_and_refuse_unknown_actions() -> None:
    fp = Failpoints.parse("kill=poison, sleep=slow:0.01, stall=late:0.01")
    assert fp.active and fp.kill_styles == {"poison"} and fp.sleep_styles == (("slow", 0.01),)
    assert fp.stall_styles == (("late", 0.01),)
    fp.stall("late")
    fp.hit("slow")  # sleeps 10 ms, does not kill
    fp.hit(None)
    assert not Failpoints.parse("").active
    with pytest.raises(ValueError, match="unknown failpoint"):
        Failpoints.parse("explode=now")


def test_inflight_marks_lost_claims() -> None:
    registry = InFlight()
    a, b = uuid.uuid4(), uuid.uuid4()
    registry.add(HeldClaim(a, 1, 0.0))
    registry.add(HeldClaim(b, 1, 0.0))
    registry.mark_lost({b, uuid.uuid4()})
    assert (registry.is_lost(a), registry.is_lost(b), len(registry)) == (False, True, 2)
    registry.remove(a)
    assert registry.is_lost(a)  # no longer held counts as lost


def test_json_logs_carry_bound_ids(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json")
    try:
        with logs.bound(conversion_id="c1", job_id="j1"):
            logging.getLogger("t").info("hello", extra={"attempt": 2})
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert (line["msg"], line["conversion_id"], line["job_id"], line["attempt"]) == ("hello", "c1", "j1", 2)
    finally:
        logs.configure("WARNING", "text")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://x/y")
    monkeypatch.setenv("STAYLER_WORKER_PROCESSES", "4")
    monkeypatch.setenv("STAYLER_MODEL_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider")
    settings = Settings()
    assert settings.database_url == "postgresql://x/y"
    assert settings.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert settings.intra_op_threads >= 1
    monkeypatch.setenv("STAYLER_CLAIM_BATCH_SIZE", "0")
    with pytest.raises(ValueError, match="claim_batch_size"):
        Settings()


def test_named_queries_load_once_and_refuse_duplicates(tmp_path: Path) -> None:
    assert "FOR UPDATE OF j SKIP LOCKED" in Q.job_claim_batch
    with pytest.raises(AttributeError, match="no query named"):
        _ = Q.nope
    dup = tmp_path / "q.sql"
    dup.write_text("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
    with pytest.raises(ValueError, match="twice"):
        load(dup)
    for name in Q.names():
        assert "%(" in getattr(Q, name) or "%s" not in getattr(Q, name)  # named, bound parameters only


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
