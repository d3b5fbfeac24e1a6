"""The server starts, answers health checks, and serves its OpenAPI document."""

from __future__ import annotations


def test_health_ready_openapi_docs_metrics(api) -> None:
    with api.anonymous() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ready"}
        paths = client.get("/openapi.json").json()["paths"]
        assert "/v1/conversions/{conversion_id}" in paths and "/v1/images" in paths
        assert client.get("/docs").status_code == 200
        metrics = client.get("/metrics").text
        assert 'stayler_api_requests_total{method="GET",route="/healthz",status="200"}' in metrics
