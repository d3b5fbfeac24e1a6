"""The console's fixtures: the API tests' real uvicorn server, and API keys with console grants."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import httpx
import psycopg

from api.keys import create_key
from console.access import grant
from producer.accounts import create_user
from tests.api.conftest import ApiEnv, api, make_api  # noqa: F401  (fixtures, re-exported)

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Login:
    """A console key of one role and an HTTP client that logged in with it."""

    key: str
    key_id: uuid.UUID
    role: str
    client: httpx.Client

    def csrf(self, path: str = "/console/") -> str:
        """The session's CSRF token, read from a page's form as a browser would."""
        match = CSRF.search(self.client.get(path).text)
        assert match, "no CSRF token on the page"
        return match.group(1)


def console_key(db_url: str, role: str) -> tuple[uuid.UUID, str]:
    """A new user's API key with a console grant (operator keys get the operator scope)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        user = create_user(conn)
        key_id, key = create_key(conn, scope="operator" if role == "operator" else "read", user_id=user,
                                 name=f"{role} on call")
        grant(conn, key_id, role)
    return key_id, key


def login(env: ApiEnv, role: str) -> Login:
    """Log in to the console over HTTP with a fresh key of ``role``."""
    key_id, key = console_key(env.db_url, role)
    client = httpx.Client(base_url=env.base_url, timeout=30)
    response = client.post("/console/login", data={"key": key})
    assert response.status_code == 303, response.text
    return Login(key, key_id, role, client)
