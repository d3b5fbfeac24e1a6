"""docs/openapi.json, the contract kept in the repository, is exactly what the code serves."""

from __future__ import annotations

import json

from api.openapi import DOCUMENT, openapi_document, render
from tests.api.conftest import ApiEnv


def test_the_shipped_openapi_document_matches_the_code() -> None:
    assert DOCUMENT.exists(), "docs/openapi.json is missing: python -m api.openapi --write"
    assert DOCUMENT.read_text(encoding="utf-8") == render(openapi_document()), (
        "docs/openapi.json drifted from the code: run `python -m api.openapi --write` and commit it")


def test_the_running_server_serves_the_same_document(api: ApiEnv) -> None:
    with api.anonymous() as client:
        served = client.get("/openapi.json").json()
    assert served == json.loads(DOCUMENT.read_text(encoding="utf-8"))
