"""The deploy files describe a fleet that spans hosts: S3 instead of a shared volume, PgBouncer
(with the tested settings) in front of PostgreSQL for the workers, a direct URL for the leader."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.infra.pgbouncer import TESTED_SETTINGS
from tests.ops.helpers import DEPLOY, ROOT

PGBOUNCER = DEPLOY / "k8s" / "pgbouncer" / "pgbouncer.yaml"


def _k8s(path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / path).read_text()) if d]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _as_env(settings: dict[str, str]) -> dict[str, str]:
    """TESTED_SETTINGS as the pgbouncer image's environment variables."""
    return {key.upper(): value for key, value in settings.items()}


def test_pgbouncer_manifest_validates_and_runs_the_tested_settings() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (dev extra)")
    docs = [d for d in yaml.safe_load_all(PGBOUNCER.read_text()) if d]
    for doc in docs:
        kv.validate(doc, kv.latest_version(), strict=True)
    assert sorted(d["kind"] for d in docs) == ["Deployment", "PodDisruptionBudget", "Service"]
    [deploy] = [d for d in docs if d["kind"] == "Deployment"]
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    env = _env(container)
    assert {k: env.get(k) for k in _as_env(TESTED_SETTINGS)} == _as_env(TESTED_SETTINGS)
    [service] = [d for d in docs if d["kind"] == "Service"]
    secret = _k8s("secret.example.yaml")[0]["stringData"]
    pooled = urlsplit(secret["POOLED_DATABASE_URL"])
    assert (pooled.hostname, pooled.port) == (service["metadata"]["name"], service["spec"]["ports"][0]["port"])
    assert env["DB_PASSWORD"]["secretKeyRef"]["key"] in secret


def test_kubernetes_workers_use_the_pooler_the_direct_url_and_s3_without_a_shared_volume() -> None:
    [deploy] = [d for d in _k8s("worker-deployment.yaml") if d["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = _env(container)
    assert env["DATABASE_URL"]["secretKeyRef"]["key"] == "POOLED_DATABASE_URL"
    assert env["STAYLER_DIRECT_DATABASE_URL"]["secretKeyRef"]["key"] == "DATABASE_URL"
    assert env["STAYLER_DATABASE_POOLED"] == "true"
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])
    secret = _k8s("secret.example.yaml")[0]["stringData"]
    refs = {v["secretKeyRef"]["key"] for v in env.values() if isinstance(v, dict)}
    assert refs <= set(secret) and {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= refs
    assert urlsplit(secret["DATABASE_URL"]).hostname == "postgres"
    config = _k8s("configmap.yaml")[0]["data"]
    assert config["STAYLER_STORAGE_URL"].startswith("s3://") and "AWS_ENDPOINT_URL" in config
    assert "STAYLER_STORAGE_DIR" not in config


def test_compose_workers_use_pgbouncer_the_direct_url_and_minio_without_a_shared_volume() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert {"pgbouncer", "minio", "minio-bucket"} <= set(services)
    assert {k: services["pgbouncer"]["environment"].get(k) for k in _as_env(TESTED_SETTINGS)} \
        == _as_env(TESTED_SETTINGS)
    worker = services["worker"]["environment"]
    assert urlsplit(worker["DATABASE_URL"]).hostname == "pgbouncer"
    assert urlsplit(worker["STAYLER_DIRECT_DATABASE_URL"]).hostname == "postgres"
    assert worker["STAYLER_DATABASE_POOLED"] == "true"
    assert worker["STAYLER_STORAGE_URL"].startswith("s3://")
    assert urlsplit(worker["AWS_ENDPOINT_URL"]).hostname == "minio"
    bucket = urlsplit(worker["STAYLER_STORAGE_URL"]).hostname
    assert f"store/{bucket}" in " ".join(services["minio-bucket"]["command"])
    for name, service in services.items():
        mounts = [str(v).split(":")[0] for v in service.get("volumes", [])]
        assert "results" not in mounts, f"{name} still mounts a shared results folder"
        assert "STAYLER_STORAGE_DIR" not in service.get("environment", {}), name
