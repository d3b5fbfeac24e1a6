"""Issue 21: who was dressed reaches the result image's metadata (model → batch → queue door → row).

The person stage picks the one person to dress (``models.subject``); the worker records that
person's box, mask share and the other figures it left undressed in the completed result's
``images.metadata["subject"]``, in the completion's transaction, through ``jobs_note_subject()``
(the worker role may not update ``images`` itself). The note is bounded: three known keys.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from modelkit.garments import stripes
from models.runner import TryOnRunner
from schema.queries import Q
from storage import LocalStorage
from tests.support.factories import conversion, make_conversion
from worker.batch import BatchPipeline
from worker.inflight import HeldClaim, InFlight
from worker.jobqueue import JobQueue

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"


def _metadata_of_result(db: psycopg.Connection, conv: uuid.UUID) -> dict[str, object]:
    row = conversion(db, conv)
    assert row["status"] == "completed", row
    meta = db.execute("SELECT metadata FROM images WHERE id = %s", (row["result_image_id"],)).fetchone()
    assert meta is not None
    return dict(meta[0])


def test_a_completed_conversion_records_who_was_dressed(db: psycopg.Connection, tmp_path: Path) -> None:
    # A dark suit with a neighbour's arm at the edge: the default pipeline dresses the man.
    conv = make_conversion(db)
    storage = LocalStorage(tmp_path)
    person, cloth = db.execute(
        "SELECT ui.file_path, ci.file_path FROM conversions c JOIN images ui ON ui.id = c.user_image_id "
        "JOIN images ci ON ci.id = c.cloth_image_id WHERE c.id = %s", (conv,)).fetchone() or ("", "")
    storage.put(person, (PHOTOS / "suit-neighbours-arm.jpg").read_bytes())
    storage.put(cloth, stripes())
    runner = TryOnRunner(None, intra_op_threads=1, max_batch=8, thumbnail_size=256)
    queue = JobQueue.on_connection(db, "w-subject")
    [claim] = queue.claim(1)
    inflight = InFlight()
    inflight.add(HeldClaim(claim.job_id, claim.attempt, 0.0))
    report = BatchPipeline(queue, storage, runner, inflight).process([claim], 0.0)
    assert report.completed == [claim.job_id], report
    meta = _metadata_of_result(db, conv)
    assert meta["conversion_id"] == str(conv) and meta["attempt"] == 1
    subject = meta["subject"]
    assert isinstance(subject, dict) and set(subject) == {"box", "mask_share", "other_figures"}, subject
    x0, y0, x1, y1 = subject["box"]
    assert 0 <= x0 < x1 <= 352 and 0 <= y0 < y1 <= 384, subject  # the photo is 352×384
    assert x1 - x0 > 352 / 3, "the box spans the dressed man"
    assert 0 < subject["mask_share"] <= 1 and subject["other_figures"] >= 0
    assert len(json.dumps(subject)) < 120


def test_the_worker_role_notes_a_bounded_subject_only_on_its_completed_attempt(
        db: psycopg.Connection, db_url: str) -> None:
    conv, other = make_conversion(db), make_conversion(db)
    queue = JobQueue.on_connection(db, "w-roles")
    claims = {c.conversion_id: c for c in queue.claim(2)}
    with psycopg.connect(db_url, autocommit=True) as worker:
        worker.execute(sql.SQL("SET ROLE {}").format(sql.Identifier("stayler_worker")))
        items = [{"job_id": str(c.job_id), "attempt": c.attempt, "file_path": f"results/{c.conversion_id}/a1.jpg",
                  "file_name": "a1.jpg", "original_url": "file:///a1.jpg", "thumbnail_url": "file:///t.jpg",
                  "file_size": 10, "mime_type": "image/jpeg", "width": 4, "height": 4,
                  "processing_time_ms": 5, "ai_model_version": "v"} for c in claims.values()]
        with worker.transaction():
            worker.execute(Q.jobs_complete, {"items": json.dumps(items)}).fetchall()
            notes = [
                # extra keys are dropped; the wrong attempt notes nothing
                {"job_id": str(claims[conv].job_id), "attempt": 1,
                 "subject": {"box": [1, 2, 30, 40], "mask_share": 0.8, "other_figures": 2, "face": "x" * 500}},
                {"job_id": str(claims[other].job_id), "attempt": 2, "subject": {"box": [0, 0, 1, 1]}},
            ]
            [(count,)] = worker.execute(Q.jobs_note_subject, {"items": json.dumps(notes)}).fetchall()
    assert count == 1
    assert _metadata_of_result(db, conv)["subject"] == {"box": [1, 2, 30, 40], "mask_share": 0.8, "other_figures": 2}
    assert "subject" not in _metadata_of_result(db, other)
    # Too large (a box of a thousand numbers): nothing is written.
    big = [{"job_id": str(claims[other].job_id), "attempt": 1, "subject": {"box": list(range(1000))}}]
    [(count,)] = db.execute(Q.jobs_note_subject, {"items": json.dumps(big)}).fetchall()
    assert count == 0 and "subject" not in _metadata_of_result(db, other)
