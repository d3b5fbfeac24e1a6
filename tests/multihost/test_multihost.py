"""The multi-host fleet under faults as a slow test: ``pytest -m slow tests/multihost/test_multihost.py -s``
(figures printed), or ``python -m tests.multihost.runner`` / ``make multihost`` (tests/multihost/runner.py)."""

from __future__ import annotations

import pytest

from tests.infra.pgbouncer import pgbouncer_binary
from tests.multihost.runner import MultiHostConfig, multihost_run

pytestmark = [pytest.mark.slow, pytest.mark.e2e,
              pytest.mark.skipif(pgbouncer_binary() is None, reason="pgbouncer is not installed")]


@pytest.mark.timeout(3600)  # a safety net: the run itself ends on lack of progress, not on a clock
def test_three_hosts_share_only_pgbouncer_sentinel_and_s3_and_survive_their_faults() -> None:
    config = MultiHostConfig(conversions=1500)
    with multihost_run(config) as run:
        figures = run.run()
        print("\n" + figures.render() + "\n" + figures.table(1500))
    checked = figures.checked
    assert figures.passed(1500), figures.render() + "\n" + figures.table(1500)
    assert figures.all_problems == [], figures.render()
    assert checked.lost == 0 and checked.duplicates == 0, figures.render()
    assert checked.conversions == 1500
    assert checked.result_objects == 2 * checked.completed  # a result and a thumbnail each, nothing else
    assert checked.completed > 0.9 * 1500, figures.render()  # the faults delay work; they do not fail it
    assert len(figures.faults) == 5  # PostgreSQL restart, Redis master killed, S3 stop, partition, freeze
    assert checked.retries_for_shared_services == 0, figures.render()
    assert figures.leader_changes <= figures.leader_faults, figures.render()
    assert figures.registry_lies == 0, figures.render()
    assert figures.kills >= 5
    assert 0 < figures.peak_server_connections <= figures.max_connections
