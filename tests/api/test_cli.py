"""``stayler apikeys create|list|revoke``: the key is printed once, listed by prefix, and revocable."""

from __future__ import annotations

import json
import uuid

from core.settings import Settings
from stayler.cli import build_parser


def _run(argv: list[str], db_url: str, capsys) -> tuple[int, str, str]:
    args = build_parser().parse_args(argv)
    code = args.handler(args, Settings(database_url=db_url))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_apikeys_create_list_revoke(api, capsys) -> None:
    owner = api.owner()
    code, out, _ = _run(["apikeys", "create", "--user-id", str(owner.id), "--scope", "read", "--json"],
                        api.db_url, capsys)
    created = json.loads(out)
    assert code == 0 and created["key"].startswith("sk_stayler_") and created["scope"] == "read"
    with api.anonymous(Authorization=f"Bearer {created['key']}") as client:
        assert client.get("/v1/conversions").status_code == 200
        code, out, _ = _run(["apikeys", "list", "--user-id", str(owner.id)], api.db_url, capsys)
        assert code == 0 and created["id"] in out and created["key"] not in out
        assert out.count("\n") == 5  # a header, the three keys of the fixture's owner and this one
        code, out, _ = _run(["apikeys", "revoke", created["id"]], api.db_url, capsys)
        assert code == 0
        assert client.get("/v1/conversions").status_code == 401
    code, _, err = _run(["apikeys", "revoke", str(uuid.uuid4())], api.db_url, capsys)
    assert code == 2 and "no API key" in err
    code, _, err = _run(["apikeys", "create", "--vendor-id", str(uuid.uuid4())], api.db_url, capsys)
    assert code == 2 and "there is no vendor" in err
