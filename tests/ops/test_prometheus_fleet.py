"""A real Prometheus scrapes a real worker fleet processing conversions; then every PromQL expression
of the dashboard, the recording rules, the alerts and the KEDA trigger runs through Prometheus' HTTP
API and must return data.

Alert expressions are thresholds, empty while the system is healthy: each must evaluate without
error, and every series it reads must have data (their firing is unit-tested with ``promtool test
rules``). The workload covers every outcome: completed, failed (missing input), retried (unreadable
input), rescued (a job held by a worker that does not exist), cancelled.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.ops.helpers import DASHBOARD, DEPLOY, RULES, fetch, free_port, metrics_env, need_binary
from tests.support.factories import make_conversion
from tests.support.fleet import Env
from tests.support.wait import wait_for
from tests.support.workload import Workload, connect

pytestmark = pytest.mark.e2e

RATE_INTERVAL = "1m"


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, expr) for every query of the dashboard, Grafana variables substituted."""
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"].replace("$__rate_interval", RATE_INTERVAL))
            for p in dash["panels"] for t in p["targets"]]


def rules() -> list[dict[str, Any]]:
    """Every rule of the deploy rule files."""
    return [rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def keda_query() -> str:
    """The KEDA ScaledObject's Prometheus query."""
    doc = yaml.safe_load((DEPLOY / "k8s" / "keda-scaledobject.yaml").read_text())
    return str(doc["spec"]["triggers"][0]["metadata"]["query"])


def selectors(expr: str) -> set[str]:
    """The metric names an expression reads (stayler_* and recorded stayler:* series)."""
    return set(re.findall(r"\bstayler[:_][a-z0-9_:]*[a-z0-9_]", expr)) - {"stayler_"}


class PromAPI:
    """A tiny client of Prometheus' HTTP API."""

    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, expr: str) -> tuple[str, list[dict[str, Any]], str]:
        """Run an instant query: status, result vector, error text."""
        _, body = fetch(f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        data = json.loads(body)
        return data["status"], data.get("data", {}).get("result", []), data.get("error", "")


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[PromAPI, int]]:
    """A Prometheus server (Debian's package) with the deploy rules, scraping a port the test picks."""
    binary = need_binary("prometheus")
    target_port = free_port()
    port = free_port()
    rule_dir = tmp_path / "rules"
    rule_dir.mkdir()
    for path in RULES:  # evaluate every group each second (the deploy files say 15 s)
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            group["interval"] = "1s"
        (rule_dir / path.name).write_text(yaml.safe_dump(doc))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rule_dir / "*.yml")],
        "scrape_configs": [{"job_name": "stayler-workers",
                            "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    api = PromAPI(f"http://127.0.0.1:{port}")
    try:
        wait_for(lambda: _ready(api.base), 30, "Prometheus to start")
        yield api, target_port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _ready(base: str) -> bool:
    try:
        return fetch(f"{base}/-/ready", timeout=1)[0] == 200
    except OSError:
        return False


def _has_data(result: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(r["value"][1])) for r in result)


@pytest.mark.slow  # a Prometheus server and a fleet; tests/ops/test_metrics_exposition.py covers the exposition
def test_prometheus_scrapes_the_fleet_and_every_dashboard_and_alert_query_has_data(
        env: Env, prometheus: tuple[PromAPI, int], tmp_path: Path) -> None:
    api, port = prometheus
    with connect(env.db_url) as conn:
        work = Workload(conn, env.storage_dir)
        # A job in backoff (claimable in an hour), cancelled once the fleet runs: counts a cancellation.
        [parked] = work.submit(1)
        conn.execute("UPDATE conversion_jobs SET run_after = now() + interval '1 hour' WHERE conversion_id = %s",
                     (parked,))
        [ghost] = work.submit(1)  # "claimed" by a worker that never heartbeats: the leader rescues it
        _hold_by_ghost(conn, ghost)
        env.start_fleet(2, 2, **metrics_env(tmp_path, port))
        wait_for(lambda: api.query('up{job="stayler-workers"} == 1')[1], 30, "Prometheus to scrape the fleet", env)
        wait_for(lambda: api.query("stayler_queue_stats_timestamp_seconds")[1], 30, "the leader's queue gauges", env)
        conn.execute("SELECT operator_cancel_conversion(%s, 'test', 'test')", (parked,))

        ids = work.submit(6)
        ids += work.submit(2, priority=5)
        missing = make_conversion(conn, person_key=f"missing/{uuid.uuid4()}.jpg",
                                  cloth_key=f"missing/{uuid.uuid4()}.jpg")
        unreadable = [f"dirs/{uuid.uuid4()}" for _ in range(2)]  # folders where files should be
        for folder in unreadable:
            (env.storage_dir / folder).mkdir(parents=True)
        retried = make_conversion(conn, person_key=unreadable[0], cloth_key=unreadable[1], max_retries=1)
        everything = [*ids, missing, retried, ghost]
        wait_for(lambda: work.all_terminal(everything), 60, "every conversion to finish", env)
        wait_for(lambda: api.query("stayler_jobs_cancelled_total")[1], 20, "the cancellation counter", env)
        statuses = work.statuses(everything)
        assert statuses[missing] == statuses[retried] == "failed"
        assert statuses[ghost] == "completed"
        # The latency panels are rates of histograms: a burst that ended before Prometheus first saw
        # the histograms leaves every rate at 0 (histogram_quantile answers NaN). Once they are
        # scraped, two more conversions make the rates move.
        wait_for(lambda: api.query("stayler_job_end_to_end_seconds_count")[1], 30, "the latency histograms", env)
        more = work.submit(2)
        wait_for(lambda: work.all_terminal(more), 60, "two more conversions", env)

    expressions = [(f"panel {title!r}", expr) for title, expr in dashboard_expressions()]
    expressions += [(f"record {r['record']}", r["expr"]) for r in rules() if "record" in r]
    expressions.append(("KEDA trigger", keda_query()))
    alerts = [r for r in rules() if "alert" in r]
    assert alerts and len(expressions) > 20

    missing_data: dict[str, str] = {}
    deadline = time.monotonic() + 30
    pending = dict.fromkeys(expressions)
    while pending and time.monotonic() < deadline:
        for name, expr in list(pending):
            status, result, error = api.query(expr)
            assert status == "success", f"{name}: {expr}: {error}"
            if _has_data(result):
                del pending[(name, expr)]
        time.sleep(1)
    missing_data.update(dict(pending.keys()))
    for alert in alerts:
        status, _, error = api.query(alert["expr"])
        assert status == "success", f"alert {alert['alert']}: {error}"
        for metric in selectors(alert["expr"]):
            if not _has_data(api.query(metric)[1]):
                missing_data[f"alert {alert['alert']} reads {metric}"] = metric
    assert not missing_data, f"queries without data: {json.dumps(missing_data, indent=1)}\n{env.logs()}"

    # The queue gauges are exported once per fleet (no pid label), though two processes ran a dispatcher.
    for metric in ("stayler_queue_jobs_available", "stayler_queue_workers_alive"):
        result = api.query(metric)[1]
        assert len(result) == 1 and "pid" not in result[0]["metric"], result
    assert float(api.query("stayler_queue_workers_alive")[1][0]["value"][1]) == 2
    assert float(api.query("sum(stayler_worker_processes)")[1][0]["value"][1]) == 2
    rescued = api.query("sum(stayler_jobs_rescued_total)")[1]
    assert float(rescued[0]["value"][1]) == 1
    failed = {r["metric"]["error_type"] for r in api.query("stayler_jobs_failed_total")[1]}
    assert {"input_missing", "storage"} <= failed
    no_ids = api.query('{__name__=~"stayler_.*", job="stayler-workers"}')[1]
    uuid_re = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-")
    assert not [r["metric"] for r in no_ids if any(uuid_re.search(str(v)) for v in r["metric"].values())]


def _hold_by_ghost(conn: psycopg.Connection, conversion_id: uuid.UUID) -> None:
    """Mark the conversion's queued job as held by a dead worker whose last heartbeat is old."""
    conn.execute(
        """UPDATE conversion_jobs SET status = 'processing', worker_id = 'ghost:1:dead', attempt = attempt + 1,
                  started_at = now() - interval '1 hour', heartbeat_at = now() - interval '1 hour'
            WHERE conversion_id = %s AND status = 'queued'""", (conversion_id,))
