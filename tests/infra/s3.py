"""A real S3 server on loopback for tests: moto's server mode, in this process, on a free port.

``s3_server`` (session) starts it and sets nothing global: tests and worker subprocesses get the
endpoint and credentials from ``S3Server.env()`` (the standard AWS variables). ``s3_bucket`` gives
each test a fresh bucket. ``S3Server.paused()`` is a real outage for a while (the multi-host run's
"S3 unavailable" fault), and ``locked_server()`` starts a second server that checks credentials
(IAM auth on), for the wrong-credentials case.

Clients reach moto through a gate of ours on the endpoint's port: stopping moto's own server ends
only its accept loop, while its handler threads keep serving the clients' keep-alive connections,
so a "stopped" moto still answers every client that had talked to it before. While the gate is
down it resets every open connection (RST) and resets each new one as it arrives; moto keeps
running behind it, so every object is still there when the gate opens again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.reliability.servers import free_port
from tests.support.services import refuse_in_fast_run

REGION = "us-east-1"


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with an RST (linger 0), as a dead server's host answers."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Gate:
    """A TCP forwarder on loopback that can go down: it then resets every connection, old and new."""

    def __init__(self, upstream_port: int, port: int = 0) -> None:
        """Listen on ``port`` (a free one when 0) and forward to ``upstream_port``."""
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", port))  # SO_REUSEADDR: the same port again
        self.port = int(self._listener.getsockname()[1])
        self._down = threading.Event()
        self._closed = threading.Event()
        # Readable while the gate is down or closed: wakes every pump at once, no polling.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        #: Connections reset because the gate went down (open ones and refused new ones).
        self.resets = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="s3-gate", daemon=True).start()

    def down(self, on: bool) -> None:
        """Reset every connection and every new one (on), or forward again (off)."""
        if on:
            self._down.set()
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        else:
            self._down.clear()
            with contextlib.suppress(OSError):
                while self._wake_r.recv(4096):
                    pass

    def close(self) -> None:
        """Stop accepting and end every connection."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        with contextlib.suppress(OSError):
            self._listener.close()

    def _count_reset(self, sock: socket.socket) -> None:
        with self._lock:
            self.resets += 1
        _reset(sock)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down.is_set():
                self._count_reset(client)
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            _reset(client)
            return
        try:
            while True:
                ready, _, _ = select.select([client, server, self._wake_r], [], [])
                if self._down.is_set() or self._closed.is_set():
                    self._count_reset(client)
                    return
                for sock in ready:
                    if sock is self._wake_r:
                        continue  # a stale wake-up from an outage that already ended
                    data = sock.recv(65536)
                    if not data:
                        return
                    (server if sock is client else client).sendall(data)
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                client.close()
            with contextlib.suppress(OSError):
                server.close()


class S3Server:
    """A moto S3 server on ``127.0.0.1`` (ThreadedMotoServer on a free port) behind a :class:`_Gate`."""

    access_key = "stayler-test-key"
    secret_key = "stayler-test-secret"

    def __init__(self) -> None:
        """Not started yet; see :meth:`start`."""
        self._server: Any = None
        self._gate: _Gate | None = None
        self.port = 0

    def start(self) -> None:
        """Start serving; the endpoint is :attr:`endpoint` (the same port as before after a :meth:`stop`)."""
        refuse_in_fast_run("an S3 server")
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        self._server.start()
        self._gate = _Gate(self._server.get_host_and_port()[1], self.port)
        self.port = self._gate.port

    def stop(self) -> None:
        """Stop serving and end every open connection.

        moto keeps its objects in this process, so :meth:`start` serves them again.
        """
        if self._gate is not None:
            self._gate.close()
            self._gate = None
        if self._server is not None:
            self._server.stop()
            with contextlib.suppress(Exception):  # moto's stop leaves its listening socket open
                self._server._server.server_close()
            self._server = None

    @property
    def resets(self) -> int:
        """Connections reset by outages so far (open ones cut, new ones refused)."""
        return self._gate.resets if self._gate is not None else 0

    @contextlib.contextmanager
    def paused(self, seconds: float | None = None) -> Iterator[None]:
        """S3 is down inside the block (or for ``seconds`` of it): every connection, open or new, is reset.

        The objects stay: the server runs on behind the gate and serves them again afterwards.
        """
        assert self._gate is not None, "the server is not running"
        self._gate.down(True)
        try:
            if seconds is not None:
                time.sleep(seconds)
            yield
        finally:
            self._gate.down(False)

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables pointing at this server (for ``os.environ`` or a subprocess)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": REGION}

    def client(self) -> Any:
        """A boto3 S3 client of this server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=REGION)

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh name unless given); returns its name."""
        name = name or f"stayler-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key in ``bucket`` under ``prefix``."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


@contextlib.contextmanager
def locked_server() -> Iterator[str]:
    """A second moto server (a subprocess) that checks credentials; yields its endpoint.

    No user exists on it, so every request is refused as ``InvalidAccessKeyId``. A subprocess because
    moto's auth switch is process-wide and would lock the shared in-process server too.
    """
    refuse_in_fast_run("an S3 server")
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import socket

        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the credential-checking moto server did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server on loopback for the whole session."""
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The AWS variables of the test server, set in ``os.environ`` for this test."""
    env = s3_server.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_bucket(s3_server: S3Server, s3_env: dict[str, str]) -> str:
    """A fresh, empty bucket on the test server (the AWS variables point at it)."""
    return s3_server.create_bucket()
