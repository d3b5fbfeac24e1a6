"""The chaos suite as a slow test: ``pytest -m slow tests/chaos -s`` (figures printed), or run
``python -m tests.chaos.runner`` directly (see tests/chaos/runner.py)."""

from __future__ import annotations

import pytest

from tests.chaos.runner import ChaosConfig, chaos_run

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


# No wall-clock bound of its own: the run ends on the drain or when nothing moved for
# ChaosConfig.stall_s; the timeout below only stops a hung process.
@pytest.mark.timeout(3600)
def test_chaos_2000_conversions_nothing_lost_nothing_twice() -> None:
    with chaos_run(ChaosConfig(conversions=2000)) as chaos:
        figures = chaos.run()
        print("\n" + figures.render())
    assert figures.lost == 0, figures.render()
    assert figures.duplicates == 0, figures.render()
    assert figures.problems == [], figures.render()
    assert figures.conversions == 2000
    # A kill every 2-5 s: how many land depends on how fast the run drains, so ask for a handful.
    assert figures.kills >= 5 and figures.postgres_restarts == 1 and figures.redis_flushes == 1
