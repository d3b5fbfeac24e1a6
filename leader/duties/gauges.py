"""Gauges: refresh the fleet's queue gauges (one cheap query) for Prometheus."""

from __future__ import annotations

import psycopg

from leader.duties import Duty
from leader.queue_gauges import QueueGauges


class GaugesDuty(Duty):
    """Publishes queue depth, age, processing and failures from the leader only."""

    name = "gauges"

    def __init__(self, gauges: QueueGauges) -> None:
        """Refresh ``gauges`` every ``gauges.interval_s``."""
        self.gauges = gauges
        self.interval_s = gauges.interval_s

    def run_once(self, conn: psycopg.Connection) -> int:
        """Read and publish one snapshot."""
        self.gauges.refresh(conn)
        return 0

    def on_step_down(self) -> None:
        """A new leadership term starts the cancellation counter's window afresh."""
        self.gauges.lost_leadership()
