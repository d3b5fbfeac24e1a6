"""What can be checked of deploy/ without a Docker engine or a cluster: Prometheus config and rules
(promtool, with a unit test per alert), the compose file against the Compose specification, the
Kubernetes manifests against the Kubernetes schemas, the KEDA ScaledObject, the Grafana dashboard."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.ops.helpers import DASHBOARD, DEPLOY, ROOT, RULES, need_binary

K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
ALERT_TESTS = DEPLOY / "prometheus" / "tests" / "alerts_test.yml"


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_check_config(tmp_path: Path) -> None:
    promtool = need_binary("promtool")
    # The compose file mounts the rules at /etc/prometheus/rules; point a copy at the repository's.
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(DEPLOY / "prometheus" / "rules" / "*.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    for path in (DEPLOY / "prometheus" / "prometheus.yml", tmp_path / "prometheus.yml"):
        result = _run(promtool, "check", "config", str(path))
        assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in _run(promtool, "check", "config", str(tmp_path / "prometheus.yml")).stdout


def test_promtool_check_rules() -> None:
    promtool = need_binary("promtool")
    result = _run(promtool, "check", "rules", *map(str, RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules_covers_every_alert() -> None:
    promtool = need_binary("promtool")
    result = _run(promtool, "test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {r["alert"] for path in RULES for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]
              if "alert" in r}
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    firing = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case["exp_alerts"]}
    assert alerts == firing, f"alerts without a firing unit test: {alerts - firing}"
    assert {"StaylerQueueBackingUp", "StaylerOldestQueuedJobTooOld", "StaylerFailureRatioHigh", "StaylerRetryStorm",
            "StaylerNoWorkerHeartbeats", "StaylerJobsRescued"} <= alerts


def test_every_alert_has_a_runbook_section() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text().lower()
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    assert rule["annotations"]["runbook"].startswith("docs/operations.md#")
                    assert f"### {rule['alert'].lower()}" in doc, rule["alert"]


def test_compose_file_validates_against_the_compose_specification() -> None:
    pytest.importorskip("check_jsonschema", reason="pip install check-jsonschema (dev extra)")
    result = _run(sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                  str(ROOT / "docker-compose.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_stack_has_what_operators_expect() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "worker", "prometheus", "grafana"} <= set(services)
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--maxmemory-policy noeviction" in redis_cmd
    worker = services["worker"]
    assert "ports" not in worker and "container_name" not in worker  # `--scale worker=N` must work
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["restart"] == "no"
    grace = float(worker["environment"]["STAYLER_SHUTDOWN_GRACE_S"])
    assert float(worker["stop_grace_period"].rstrip("s")) > grace
    for volume in services["grafana"]["volumes"] + services["prometheus"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).exists(), source
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "USER 10001" in dockerfile and "modelkit.build" in dockerfile and "-slim" in dockerfile


def test_kubernetes_manifests_validate_against_the_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (dev extra)")
    version = kv.latest_version()
    kinds = set()
    for path in K8S:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            kinds.add(doc["kind"])
            if doc["apiVersion"].startswith("keda.sh/"):
                continue  # a CRD: checked below
            kv.validate(doc, version, strict=True)
    assert {"Deployment", "ConfigMap", "Secret", "Service", "ScaledObject", "Job"} <= kinds


def _docs(kind: str) -> list[dict]:
    return [d for p in K8S for d in yaml.safe_load_all(p.read_text()) if d and d["kind"] == kind]


def test_worker_deployment_probes_resources_grace_and_config() -> None:
    [deploy] = _docs("Deployment")
    pod = deploy["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    [config] = _docs("ConfigMap")
    assert pod["terminationGracePeriodSeconds"] > float(config["data"]["STAYLER_SHUTDOWN_GRACE_S"]) + 15
    assert any("configMapRef" in e for e in container["envFrom"])
    secret_refs = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert {"DATABASE_URL", "REDIS_URL"} <= secret_refs


def test_keda_scaled_object_has_what_keda_needs() -> None:
    [scaled] = _docs("ScaledObject")
    [deploy] = _docs("Deployment")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["metadata"]["name"]
    target = scaled["spec"]["scaleTargetRef"]
    assert target["name"] == deploy["metadata"]["name"] and target.get("kind", "Deployment") == "Deployment"
    assert scaled["spec"]["minReplicaCount"] >= 1  # the queue gauges come from the workers themselves
    assert scaled["spec"]["maxReplicaCount"] > scaled["spec"]["minReplicaCount"]
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    meta = trigger["metadata"]
    assert meta["serverAddress"].startswith("http")
    assert "stayler_queue_jobs_available" in meta["query"]
    assert float(meta["threshold"]) > 0
    assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata values must be strings"


def test_dashboard_parses_and_every_panel_has_a_query() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"]
    titles = set()
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        titles.add(panel["title"])
    assert {"Throughput", "Queue depth", "Oldest claimable job age", "Stage latency p95", "Failures by type",
            "Retries, rescues and cancellations", "Workers alive", "Model version"} <= titles
    provisioning = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert provisioning["datasources"][0]["type"] == "prometheus"
