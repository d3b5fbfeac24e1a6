"""worker.failpoints: the test-only fault switches parse and refuse unknown actions (no services)."""

from __future__ import annotations

import pytest

from worker.failpoints import Failpoints


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
