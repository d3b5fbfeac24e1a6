"""The fair clock moves to the latest virtual start a claim spent, only forward, and a claim that
does not move it leaves its row alone (no write, no lock held to commit: it is the one row every
claim would otherwise queue on)."""

from __future__ import annotations

import psycopg

from bench.fairness import load_queue
from tests.queue.ops import claim_jobs


def _clock(conn: psycopg.Connection) -> tuple[float, str]:
    row = conn.execute("SELECT vtime, xmin::text FROM fair_clock").fetchone()
    assert row is not None
    return float(row[0]), str(row[1])


def test_the_clock_moves_forward_only_and_is_left_alone_when_it_would_not_move(db: psycopg.Connection) -> None:
    load_queue(db, 40, 120)  # 40 owners x 3 jobs: virtual starts 0, 1, 2 (weight 1)
    start, version = _clock(db)
    assert start == 0.0
    claimed = claim_jobs(db, "w-clock", 16)  # 16 owners' first jobs, all at virtual start 0
    assert len(claimed) == 16
    assert _clock(db) == (0.0, version)  # not moved, so not written
    for _ in range(2):
        claim_jobs(db, "w-clock", 16)  # the other 24 first jobs, then 8 at virtual start 1
    moved, version = _clock(db)
    assert moved == 1.0
    spent = db.execute("SELECT max(vstart) FROM conversion_jobs WHERE status = 'processing'").fetchone()
    assert spent is not None and spent[0] == moved
    # An earlier virtual start spent later (a job handed back) never moves the clock back.
    db.execute("UPDATE conversion_jobs SET vstart = 0.5 WHERE id = (SELECT id FROM conversion_jobs "
               "WHERE status = 'queued' ORDER BY vstart LIMIT 1)")
    claim_jobs(db, "w-clock", 1)
    assert _clock(db) == (1.0, version)
