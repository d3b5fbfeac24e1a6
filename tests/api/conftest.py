"""A real uvicorn server on a loopback port, a real HTTP client, owners with keys, and a way to finish
conversions from another connection (the SQL functions a worker calls)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn

from api.keys import create_key
from core.settings import Settings
from modelkit.samples import make_garment, make_person, to_bytes
from producer.accounts import create_user, create_vendor
from stayler.web import create_web_app
from storage import LocalStorage, result_key
from tests.reliability.corpus import MAX_BYTES


def scalar(conn: psycopg.Connection, sql: Any, params: Any = None) -> Any:
    """The first column of the first row."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def api_settings(storage_dir: Path, **overrides: Any) -> Settings:
    """Small limits and fast webhook retries for tests."""
    values: dict[str, Any] = {
        "storage_dir": storage_dir, "max_image_bytes": MAX_BYTES, "api_max_upload_bytes": MAX_BYTES + 64 * 1024,
        "thumbnail_size": 64, "api_db_pool_size": 6, "webhook_allow_private": True,
        "webhook_retry_period_s": 30.0, "webhook_backoff_base_s": 0.1, "webhook_backoff_max_s": 0.4,
        "webhook_timeout_s": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


class _PromptUvicorn(uvicorn.Server):
    """uvicorn whose main loop wakes as soon as it is told to exit, not at its next 0.1 s tick.

    Some 160 tests stop a server; waiting for the tick cost each of them up to 0.1 s.
    """

    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        """uvicorn's loop: a tick every 0.1 s (date header, request limit), ended early by :meth:`exit`."""
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    def exit(self) -> None:
        """Ask the server to stop, from any thread."""
        self.should_exit = True
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                self._loop.call_soon_threadsafe(self._wake.set)


class Server:
    """uvicorn serving the web process (the API with the console) in a thread of the test process."""

    def __init__(self, settings: Settings, db_url: str, storage: Any = None) -> None:
        self.app = create_web_app(settings, db_url, storage=storage)  # the API with the console, as `stayler api`
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_config=None, access_log=False,
                                proxy_headers=False,
                                lifespan="on")
        self.server = _PromptUvicorn(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.exit()
        self.thread.join(timeout=15)


@dataclass
class Owner:
    """A user (or vendor) with one key per scope and an HTTP client per key."""

    id: uuid.UUID
    kind: str
    keys: dict[str, str]
    base_url: str
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, scope: str = "producer") -> httpx.Client:
        if scope not in self.clients:
            self.clients[scope] = httpx.Client(base_url=self.base_url, timeout=30,
                                               headers={"Authorization": f"Bearer {self.keys[scope]}"})
        return self.clients[scope]

    def upload(self, data: bytes, image_type: str = "user", file_name: str = "photo.jpg",
               **fields: Any) -> httpx.Response:
        form = {"type": image_type, **{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in fields.items()}}
        return self.client().post("/v1/images", files={"file": (file_name, data, "application/octet-stream")},
                                  data=form)

    def image(self, image_type: str = "user", seed: int = 1) -> str:
        data = to_bytes(make_person(96, 128, seed=seed).image) if image_type == "user" else \
            to_bytes(make_garment(seed=seed))
        response = self.upload(data, image_type)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def conversion(self, **body: Any) -> dict[str, Any]:
        body.setdefault("user_image_id", self.image("user"))
        body.setdefault("cloth_image_id", self.image("cloth"))
        response = self.client().post("/v1/conversions", json=body)
        assert response.status_code == 202, response.text
        return dict(response.json())


@dataclass
class ApiEnv:
    """The running server, its settings and database, and helpers to make owners and finish conversions."""

    server: Server
    settings: Settings
    db_url: str
    storage: LocalStorage
    owners: list[Owner] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def anonymous(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30, headers=headers)

    def owner(self, kind: str = "user") -> Owner:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            owner_id = create_user(conn) if kind == "user" else create_vendor(conn, "a vendor")
            user_id, vendor_id = (owner_id, None) if kind == "user" else (None, owner_id)
            keys = {scope: create_key(conn, scope=scope, user_id=user_id, vendor_id=vendor_id)[1]
                    for scope in ("read", "producer", "operator")}
        owner = Owner(owner_id, kind, keys, self.base_url)
        self.owners.append(owner)
        return owner

    def complete(self, conversion_id: str) -> None:
        """Finish a conversion as a worker would: result and thumbnail stored, then the SQL moves."""
        cid = uuid.UUID(conversion_id)
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute("SELECT update_conversion_status(conversion_id := %s, status := 'processing')", (cid,))
            attempt = scalar(conn, "SELECT attempt FROM conversion_jobs WHERE conversion_id = %s", (cid,))
            user_id = scalar(conn, "SELECT user_id FROM conversions WHERE id = %s", (cid,))
            vendor_id = scalar(conn, "SELECT vendor_id FROM conversions WHERE id = %s", (cid,))
            data = to_bytes(make_person(96, 128, seed=9).image)
            key = result_key(cid, attempt, "image/jpeg")
            stored = self.storage.put(key, data)
            thumb = self.storage.put(result_key(cid, attempt, "image/jpeg", thumbnail=True), data[: len(data) // 2])
            image_id = scalar(
                conn, "INSERT INTO images (owner_id, owner_type, file_path, file_name, original_url, thumbnail_url, "
                "file_size, mime_type, width, height, type, metadata) "
                "VALUES (%s, %s, %s, 'result.jpg', %s, %s, %s, 'image/jpeg', 96, 128, 'result', %s) RETURNING id",
                (user_id or vendor_id, "user" if user_id else "vendor", key, stored.url, thumb.url, len(data),
                 json.dumps({"conversion_id": str(cid), "attempt": attempt})))
            conn.execute("SELECT update_conversion_status(conversion_id := %s, status := 'completed', "
                         "result_image_id := %s)", (cid, image_id))

    def fail(self, conversion_id: str) -> None:
        """Fail a conversion for good (a permanent error)."""
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute("SELECT update_conversion_status(conversion_id := %s, status := 'failed', "
                         "error_message := 'not a person', error_type := 'invalid_image')", (uuid.UUID(conversion_id),))

    def close(self) -> None:
        for owner in self.owners:
            for client in owner.clients.values():
                client.close()


@pytest.fixture
def make_api(db_url: str, tmp_path: Path) -> Iterator[Callable[..., ApiEnv]]:
    """Start an API server with settings overrides; every one started is stopped at the end."""
    started: list[tuple[Server, ApiEnv]] = []

    def start(storage: LocalStorage | None = None, **overrides: Any) -> ApiEnv:
        settings = api_settings(tmp_path / "storage", **overrides)
        storage = storage or LocalStorage(settings.storage_root)
        server = Server(settings, db_url, storage).__enter__()
        env = ApiEnv(server, settings, db_url, storage)
        started.append((server, env))
        return env

    yield start
    for server, env in started:
        env.close()
        server.__exit__(None, None, None)


@pytest.fixture
def api(make_api: Callable[..., ApiEnv]) -> ApiEnv:
    """An API server with the test settings."""
    return make_api()


def problem_type(response: httpx.Response) -> str:
    """The problem's type name (``urn:stayler:problem:<name>``), checking the media type."""
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    body = response.json()
    assert body["status"] == response.status_code
    return str(body["type"]).rsplit(":", 1)[-1]
