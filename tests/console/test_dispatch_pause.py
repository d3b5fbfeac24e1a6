"""Pausing dispatch (fleet_controls, set by the console) stops the leader's dispatch duty from sending
claim messages; resuming sends them again. Scheduled jobs are still made ready meanwhile."""

from __future__ import annotations

import psycopg
import pytest

from broker.messages import waiting_messages
from tests.leader.test_duties import dispatch_duty
from tests.support.factories import make_conversion


def test_a_paused_fleet_sends_no_claim_messages(db: psycopg.Connection) -> None:
    duty = dispatch_duty()
    for _ in range(9):
        make_conversion(db)
    db.execute("SELECT operator_set_dispatch_paused(true, 'anna', 'maintenance')")
    assert duty.run_once(db) == 0
    assert waiting_messages(duty.broker, "q") == 0
    db.execute("SELECT operator_set_dispatch_paused(false, 'anna', 'done')")
    assert duty.run_once(db) == 3
    rows = db.execute("SELECT action, conversion_id, status_before, status_after FROM operator_actions "
                      "ORDER BY id").fetchall()
    assert rows == [("pause_dispatch", None, "running", "paused"), ("resume_dispatch", None, "paused", "running")]


def test_pausing_needs_a_name_and_a_reason(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.Error) as caught:
        db.execute("SELECT operator_set_dispatch_paused(true, 'anna', ' ')")
    assert caught.value.sqlstate == "SA004"
