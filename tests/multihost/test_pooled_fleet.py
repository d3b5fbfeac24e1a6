"""Forty worker processes drain 3,000 conversions through a real PgBouncer into a PostgreSQL that
allows 30 connections (tests/multihost/pooled_fleet.py): ``pytest -m slow tests/multihost -s``."""

from __future__ import annotations

import pytest

from tests.infra.pgbouncer import pgbouncer_binary
from tests.multihost.pooled_fleet import pooled_cluster, pooled_config, run

pytestmark = [pytest.mark.slow, pytest.mark.e2e,
              pytest.mark.skipif(pgbouncer_binary() is None, reason="pgbouncer is not installed")]


@pytest.mark.timeout(420)
@pytest.mark.parametrize("direct_url", [True, False], ids=["leader-direct", "no-direct-url"])
def test_forty_processes_through_pgbouncer_stay_within_thirty_server_connections(direct_url: bool) -> None:
    config = pooled_config(direct_url)
    with pooled_cluster(config) as cluster:
        figures = run(cluster, 3000)
        print("\n" + figures.render())
    checked = figures.checked
    assert figures.processes == 40
    # Without the pooler 40 processes would need 40 × 2 + 1 = 81 connections; the server allows 30.
    assert config.hosts * config.processes * 2 + 1 > config.max_connections
    assert checked.problems == [], figures.render()
    assert checked.lost == 0 and checked.duplicates == 0, figures.render()
    assert checked.conversions == checked.completed == 3000, figures.render()
    assert checked.result_objects == 2 * 3000  # one result and one thumbnail each
    assert 0 < figures.peak_server_connections <= config.max_connections, figures.render()
