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
    from typing import Any

    from tests.api.conftest import Server, api_settings, problem_type

    with Server(api_settings(tmp_path / "storage"), "postgresql://postgres@127.0.0.1:1/nothing") as server, \
            httpx.Client(base_url=server.base_url, timeout=30) as client:
        assert client.get("/healthz").status_code == 200
        pool = server.app.state.ctx.db.pool
        asked: list[float | None] = []  # how long each connection request of the readiness check may wait
        connection = pool.connection

        def recording(timeout: float | None = None) -> Any:
            asked.append(timeout)
            return connection(timeout=timeout)

        pool.connection = recording
        response = client.get("/readyz")
        assert response.status_code == 503 and problem_type(response) == "database_unavailable"
        # Quick by construction, not by a stopwatch: the check waited for a connection only for its own
        # short deadline, never for the pool's (a request path's) longer one.
        assert asked and all(t is not None and t < pool.timeout for t in asked), (asked, pool.timeout)
        assert "127.0.0.1:1" not in response.text
