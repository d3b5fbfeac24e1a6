"""No user ids, file paths or tokens in metric labels (worker/metrics.py, leader/queue_gauges.py).

Log hygiene with real workers is checked in ``test_bad_input`` (the fleet's logs of the whole corpus
run carry no user id and no storage path; error messages name storage keys, not host paths).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

FORBIDDEN = {"user", "user_id", "vendor", "vendor_id", "owner", "owner_id", "job", "job_id", "conversion",
             "conversion_id", "worker", "worker_id", "image", "image_id", "path", "file", "file_path", "file_name",
             "key", "url", "token", "email", "hostname", "pid", "idempotency_key", "style", "style_name"}


def _label_names(registry: CollectorRegistry) -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for collector in list(registry._collector_to_names):
        metric_name = getattr(collector, "_name", type(collector).__name__)
        names[metric_name] = set(getattr(collector, "_labelnames", ()))
    return names


def test_worker_metric_labels_are_bounded_and_carry_no_identities() -> None:
    from worker.metrics import WorkerMetrics

    registry = CollectorRegistry()
    WorkerMetrics(registry=registry)
    labels = _label_names(registry)
    assert labels, "no metrics defined"
    for metric, names in labels.items():
        assert not names & FORBIDDEN, f"{metric} has identity labels {names & FORBIDDEN}"


def test_fleet_gauge_labels_carry_no_identities() -> None:
    from leader import queue_gauges as gauges

    text = repr(gauges.FLEET_METRICS)
    for name in ("user_id", "vendor_id", "job_id", "conversion_id", "worker_id", "file_path"):
        assert name not in text
