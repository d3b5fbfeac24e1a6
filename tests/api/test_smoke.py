"""The server starts, answers health checks, and serves its OpenAPI document."""

from __future__ import annotations

import httpx


def test_health_ready_openapi_docs_metrics(api) -> None:
    with api.anonymous() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ready"}
        paths = client.get("/openapi.json").json()["paths"]
        assert "/v1/conversions/{conversion_id}" in paths and "/v1/images" in paths
        assert client.get("/docs").status_code == 200
        metrics = client.get("/metrics").text
        assert 'stayler_api_requests_total{method="GET",route="/healthz",status="200"}' in metrics


def test_readyz_is_503_quickly_when_the_database_is_unreachable(tmp_path) -> None:
    import time

    from tests.api.conftest import Server, api_settings, problem_type

    with Server(api_settings(tmp_path / "storage"), "postgresql://postgres@127.0.0.1:1/nothing") as server, \
            httpx.Client(base_url=server.base_url, timeout=30) as client:
        assert client.get("/healthz").status_code == 200
        start = time.monotonic()
        response = client.get("/readyz")
        assert response.status_code == 503 and problem_type(response) == "database_unavailable"
        assert time.monotonic() - start < 5
        assert "127.0.0.1:1" not in response.text
