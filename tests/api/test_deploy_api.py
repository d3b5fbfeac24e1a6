"""The API's deployment files: Kubernetes manifests valid against the schemas, compose services present."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "k8s" / "api" / "api.yaml"


def _docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def test_api_manifests_validate_against_the_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (dev extra)")
    version = kv.latest_version()
    for doc in _docs():
        kv.validate(doc, version, strict=True)
    assert sorted(d["kind"] for d in _docs()) == ["Deployment", "Deployment", "Service"]


def test_api_probes_and_commands() -> None:
    deployments = {d["metadata"]["name"]: d for d in _docs() if d["kind"] == "Deployment"}
    [api] = deployments["stayler-api"]["spec"]["template"]["spec"]["containers"]
    assert api["args"][0] == "api" and api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    [sender] = deployments["stayler-webhooks"]["spec"]["template"]["spec"]["containers"]
    assert sender["args"] == ["webhooks"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert compose["api"]["command"][0] == "api" and compose["webhooks"]["command"] == ["webhooks"]


def test_the_api_listens_on_the_direct_url_and_wakes_workers_through_redis() -> None:
    # ?wait LISTENs for completions (a transaction pooler drops them) and a commit wakes a worker at
    # once only when the API knows the broker: without REDIS_URL every submit waited for the leader.
    [api] = next(d for d in _docs() if d["metadata"]["name"] == "stayler-api")["spec"]["template"]["spec"]["containers"]
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in api["env"] if "valueFrom" in e}
    assert secrets["DATABASE_URL"] == "DATABASE_URL"  # the direct one; POOLED_DATABASE_URL is PgBouncer
    assert secrets["REDIS_URL"] == "REDIS_URL"


def test_the_api_and_the_sender_get_the_same_webhook_secret_keys() -> None:
    # The API seals new endpoints' secrets and the sender opens them: both need STAYLER_SECRET_KEYS
    # from one place, or secrets are stored in plaintext (or cannot be opened).
    deployments = {d["metadata"]["name"]: d for d in _docs() if d["kind"] == "Deployment"}
    sources = []
    for name in ("stayler-api", "stayler-webhooks"):
        [container] = deployments[name]["spec"]["template"]["spec"]["containers"]
        [entry] = [e for e in container["env"] if e["name"] == "STAYLER_SECRET_KEYS"]
        sources.append(entry["valueFrom"]["secretKeyRef"])
    assert sources[0] == sources[1] == {"name": "stayler-secrets", "key": "STAYLER_SECRET_KEYS"}
    secret = yaml.safe_load((ROOT / "deploy" / "k8s" / "secret.example.yaml").read_text())
    assert "STAYLER_SECRET_KEYS" in secret["stringData"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert compose["api"]["environment"]["STAYLER_SECRET_KEYS"] == "${STAYLER_SECRET_KEYS:-}"
    assert compose["webhooks"]["environment"] is compose["api"]["environment"] or \
        compose["webhooks"]["environment"]["STAYLER_SECRET_KEYS"] == "${STAYLER_SECRET_KEYS:-}"
