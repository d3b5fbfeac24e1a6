"""A real S3 server on loopback for tests: moto's server mode, in this process, on a free port.

``s3_server`` (session) starts it and sets nothing global: tests and worker subprocesses get the
endpoint and credentials from ``S3Server.env()`` (the standard AWS variables). ``s3_bucket`` gives
each test a fresh bucket. ``S3Server.pause()`` makes the endpoint refuse connections for a while
(the multi-host test's "S3 unavailable" fault), and ``locked_server()`` starts a second server that
checks credentials (IAM auth on), for the wrong-credentials case.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.reliability.servers import free_port
from tests.support.services import refuse_in_fast_run

REGION = "us-east-1"


class S3Server:
    """A moto S3 server on ``127.0.0.1`` (ThreadedMotoServer, port chosen by the OS)."""

    access_key = "stayler-test-key"
    secret_key = "stayler-test-secret"

    def __init__(self) -> None:
        """Not started yet; see :meth:`start`."""
        self._server: Any = None
        self.port = 0

    def start(self) -> None:
        """Start serving; the endpoint is :attr:`endpoint`."""
        refuse_in_fast_run("an S3 server")
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]

    def stop(self) -> None:
        """Stop serving (the objects stay in memory; :meth:`start` serves them again on the same port)."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    @contextlib.contextmanager
    def paused(self, seconds: float | None = None) -> Iterator[None]:
        """The endpoint refuses connections inside the block (or for ``seconds`` of it)."""
        self.stop()
        try:
            if seconds is not None:
                time.sleep(seconds)
            yield
        finally:
            self.start()

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
