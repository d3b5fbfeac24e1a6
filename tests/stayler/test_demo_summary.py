"""The demo's summary: each row's own time, result paths whole at 80 columns, what to try next (issue 23)."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta

from rich.console import Console

from producer.conversions import ConversionStatus
from stayler.demo import _summary

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _row(n: int, done_after_ms: int, status: str = "completed") -> ConversionStatus:
    cid = uuid.uuid4()
    return ConversionStatus(
        id=cid, status=status, user_id=uuid.uuid4(), vendor_id=None, conversion_type="free", style_name="casual",
        error_message=None, processing_time_ms=480,  # the batch's model time: the same for every row
        result_image_id=uuid.uuid4() if status == "completed" else None, created_at=T0 + timedelta(seconds=n),
        updated_at=T0, job_id=uuid.uuid4(), job_status=status, attempt=1, retry_count=0, max_retries=3,
        error_type=None if status == "completed" else "no_person",
        job_error_message=None if status == "completed" else "no person found in the photo",
        worker_id="w", run_after=T0, started_at=T0, completed_at=T0 + timedelta(seconds=n, milliseconds=done_after_ms),
        result_key=f"results/{cid}/a1.jpg" if status == "completed" else None, result_url=None)


def test_summary_shows_each_rows_time_whole_paths_and_next_steps() -> None:
    rows = [_row(0, 212), _row(1, 347), _row(2, 95, status="failed")]
    out = io.StringIO()
    where = "/home/someone/projects/stayler-conversion-workers/.state/storage"
    _summary(Console(file=out, width=80, color_system=None), rows, 2.5, where)
    text = out.getvalue()
    for ms in ("212", "347", "95"):
        assert ms in text
    assert "480" not in text  # the batch's time is not repeated on every row
    lines = text.splitlines()
    for r in rows[:2]:
        path = f"{where}/results/{r.id}/a1.jpg"
        assert any(path in line for line in lines), f"{path} is cut or folded:\n{text}"
    assert "no person found in the photo" in text
    assert "What to try next" in "\n".join(lines[-6:])
