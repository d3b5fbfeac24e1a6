"""``stayler apikeys console KEY_ID --role operator|viewer|none``: who may log in to the console."""

from __future__ import annotations

import httpx
import psycopg

from tests.api.conftest import ApiEnv
from tests.api.test_cli import _run


def _key_id(api: ApiEnv, user: object, scope: str) -> str:
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        row = conn.execute("SELECT id FROM api_keys WHERE user_id = %s AND scope = %s", (user, scope)).fetchone()
    assert row is not None
    return str(row[0])


def test_grant_and_take_away_console_access(api: ApiEnv, capsys) -> None:
    owner = api.owner()
    operator_id, read_id = _key_id(api, owner.id, "operator"), _key_id(api, owner.id, "read")
    code, _, err = _run(["apikeys", "console", read_id, "--role", "operator"], api.db_url, capsys)
    assert code == 2 and "scope 'operator'" in err
    code, out, _ = _run(["apikeys", "console", operator_id, "--role", "operator"], api.db_url, capsys)
    assert code == 0 and "as operator" in out
    with httpx.Client(base_url=api.base_url) as client:
        assert client.post("/console/login", data={"key": owner.keys["operator"]}).status_code == 303
        assert client.get("/console/").status_code == 200
        code, out, _ = _run(["apikeys", "console", operator_id, "--role", "none"], api.db_url, capsys)
        assert code == 0 and "removed" in out
        assert client.get("/console/").status_code == 303  # the session ended with the grant
