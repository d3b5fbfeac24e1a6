"""Bad input: every corpus case is accepted and processed, refused at registration with a clear
message, or fails its conversion with a stable ``error_type``; no worker dies, no job loops, memory
stays bounded."""

from __future__ import annotations

import uuid
from pathlib import Path

import psutil
import psycopg
import pytest

from modelkit.samples import make_garment, to_bytes
from producer import ProducerError, register_image, submit
from producer.accounts import create_user
from producer.images import ImageLimits
from storage import LocalStorage
from tests.reliability.corpus import MAX_BYTES, MAX_PIXELS, Case, build_corpus
from tests.support.fleet import Env
from tests.support.wait import wait_for
from worker.errors import ERROR_TYPES

LIMITS = ImageLimits(max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, thumbnail_size=64)
CORPUS = build_corpus()
#: error_types bad input may end with: permanent ones only (a retry cannot heal an image).
INPUT_ERRORS = {"invalid_image", "unsupported_format", "image_too_large", "input_missing"}


def test_the_corpus_has_at_least_25_kinds() -> None:
    assert len({c.name for c in CORPUS}) == len(CORPUS) >= 25


def _register(conn: psycopg.Connection, storage: LocalStorage, case: Case, user: uuid.UUID, kind: str) -> uuid.UUID:
    return register_image(conn, storage, case.data, owner_id=user, owner_type="user", image_type=kind,
                          limits=LIMITS, file_name=case.file_name).id


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_registration_accepts_or_refuses_clearly(db: psycopg.Connection, tmp_path: Path, case: Case) -> None:
    storage = LocalStorage(tmp_path / "storage")
    user = create_user(db)
    kind = "cloth" if case.kind == "cloth" else "user"
    if case.accept:
        image_id = _register(db, storage, case, user, kind)
        row = db.execute("SELECT file_path, width, height, mime_type FROM images WHERE id = %s", (image_id,)
                         ).fetchone()
        assert row is not None and row[1] >= 1 and row[2] >= 1
        assert row[3] in ("image/jpeg", "image/png", "image/webp")  # from the content, not the file name
        assert (storage.root / row[0]).read_bytes() == case.data
        if case.name == "exif_rotated":
            assert (row[1], row[2]) == (96, 128)  # upright
        return
    with pytest.raises(ProducerError) as info:
        _register(db, storage, case, user, kind)
    err = info.value
    assert err.code in case.refuse_codes, (err.code, str(err))
    message = str(err)
    assert message.startswith("not accepted: ") or "limit" in message
    assert "Traceback" not in message and len(message) < 300
    # Nothing stored, nothing written.
    assert db.execute("SELECT count(*) FROM images").fetchone() == (0,)
    assert not [p for p in storage.root.rglob("*") if p.is_file()]


def _worker_pids(fleet_pid: int) -> set[int]:
    master = psutil.Process(fleet_pid)
    return {p.pid for p in master.children(recursive=True)}


@pytest.mark.slow  # a fleet run over the corpus; registration of every case stays in the default suite
@pytest.mark.e2e
def test_every_case_through_real_workers_ends_cleanly(env: Env) -> None:
    """Accepted cases are converted (as person, garment or both); refused cases' bytes are put in
    storage behind a registered image (bit rot, a bypassed upload path) so the worker's decoder
    meets them too. Every conversion ends once, with a documented error_type when it fails."""
    storage = LocalStorage(env.storage_dir)
    with psycopg.connect(env.db_url, autocommit=True) as conn:
        user = create_user(conn)
        garment = register_image(conn, storage, to_bytes(make_garment(seed=3)), owner_id=user, owner_type="user",
                                 image_type="cloth", limits=LIMITS).id
        from tests.reliability.corpus import _person

        person_bytes = to_bytes(_person())
        person = register_image(conn, storage, person_bytes, owner_id=user, owner_type="user", image_type="user",
                                limits=LIMITS).id
        expected: dict[uuid.UUID, Case] = {}
        for case in CORPUS:
            if case.accept:
                p = _register(conn, storage, case, user, "user") if case.kind in ("user", "both") else person
                g = _register(conn, storage, case, user, "cloth") if case.kind in ("cloth", "both") else garment
            else:
                rotten = register_image(conn, storage, person_bytes, owner_id=user, owner_type="user",
                                        image_type="user", limits=LIMITS)
                (env.storage_dir / rotten.file_path).write_bytes(case.data)
                p, g = rotten.id, garment
            cid = submit(conn, user_id=user, user_image_id=p, cloth_image_id=g, style_name=case.name,
                         max_retries=2)
            expected[cid] = case
        # An input whose file vanished from storage after registration.
        vanished = register_image(conn, storage, person_bytes, owner_id=user, owner_type="user", image_type="user",
                                  limits=LIMITS)
        (env.storage_dir / vanished.file_path).unlink()
        missing = submit(conn, user_id=user, user_image_id=vanished.id, cloth_image_id=garment)
        fleet = env.start_fleet(processes=2, threads=2, STAYLER_MODEL="tryon-geometric",
                                STAYLER_CLAIM_BATCH_SIZE="4", STAYLER_METRICS_PORT="0",
                                STAYLER_METRICS_DIR=str(env.log_dir / "metrics"))
        wait_for(lambda: len(_worker_pids(fleet.pid)) >= 2, 30, "the worker processes", env)
        pids_before = _worker_pids(fleet.pid)
        ids = [*expected, missing]

        def done() -> bool:
            rows = conn.execute("SELECT count(*) FROM conversions WHERE id = ANY(%s) AND status IN "
                                "('completed','failed','cancelled')", (ids,)).fetchone()
            return rows is not None and rows[0] == len(ids)

        wait_for(done, 90, "every corpus conversion to end", env)
        assert fleet.poll() is None, "a worker process died:\n" + env.logs()
        assert _worker_pids(fleet.pid) == pids_before, "a worker process was replaced:\n" + env.logs()
        rss = sum(psutil.Process(p).memory_info().rss for p in pids_before if psutil.pid_exists(p))
        rows = conn.execute(
            "SELECT c.id, c.status, j.error_type, j.attempt, j.retry_count, c.error_message, c.result_image_id "
            "FROM conversions c JOIN conversion_jobs j ON j.conversion_id = c.id WHERE c.id = ANY(%s)", (ids,)
        ).fetchall()
    outcomes = {}
    for cid, status, error_type, attempt, retries, message, result in rows:
        if cid == missing:
            assert (status, error_type, attempt) == ("failed", "input_missing", 1), message
            assert str(env.storage_dir) not in message, f"a file path in error_message: {message}"
            continue
        case = expected[cid]
        outcomes[case.name] = (status, error_type)
        assert attempt == 1 and retries == 0, f"{case.name} looped: attempt {attempt}, retries {retries}"
        if status == "completed":
            assert result is not None
            continue
        assert status == "failed" and result is None, case.name
        assert error_type in ERROR_TYPES and error_type in INPUT_ERRORS, (case.name, error_type, message)
        assert message and "Traceback" not in message
        if not case.accept:
            assert error_type in case.refuse_codes | {"invalid_image", "unsupported_format"}, (case.name, error_type)
    # Every case the producer accepts, the model handles (no hidden refusal at conversion time).
    refused_later = sorted(c.name for cid, c in expected.items() if c.accept and outcomes[c.name][0] != "completed")
    assert refused_later == [], {n: outcomes[n] for n in refused_later}
    assert rss < 1_500_000_000, f"worker processes use {rss / 1e6:.0f} MB after the corpus"
    logs = "\n".join(p.read_text(errors="replace") for p in env.log_dir.glob("fleet-*.log"))
    assert "exited unexpectedly" not in logs
    # Default logs carry the ids that trace a job, never who owns it or where files live.
    assert str(user) not in logs, "a user id in the worker logs"
    assert str(env.storage_dir) not in logs and str(env.storage_dir.resolve()) not in logs, "a path in the logs"
