"""The test S3 server's outage is real: a client that talked to it before the stop is refused too."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from storage import StorageError, from_url
from tests.infra.s3 import S3Server, s3_bucket, s3_env, s3_server

__all__ = ["s3_bucket", "s3_env", "s3_server"]


def test_a_connection_open_when_s3_stops_is_cut_not_served(s3_server: S3Server, s3_bucket: str) -> None:
    # Regression (issue 26): stopping moto ends its accept loop only; a connection already open
    # (a request on its way) was still answered by moto's handler thread during the "outage", and
    # the restart had to win the same port back. Now every open connection is reset at the stop.
    sock = socket.create_connection(("127.0.0.1", s3_server.port), timeout=5)
    sock.sendall(f"GET /{s3_bucket}?list-type=2 HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())  # not ended yet
    resets = s3_server.resets
    with s3_server.paused():
        time.sleep(0.3)
        with contextlib.suppress(OSError):
            sock.sendall(b"\r\n")  # the request's end arrives during the outage
        reply = b""
        with contextlib.suppress(OSError):
            reply = sock.recv(65536)
        assert not reply.startswith(b"HTTP/1.1 200"), reply[:200]
        with pytest.raises(OSError):  # a new connection is refused (reset) too
            fresh = socket.create_connection(("127.0.0.1", s3_server.port), timeout=5)
            fresh.sendall(f"GET /{s3_bucket}?list-type=2 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            if not fresh.recv(65536):
                raise ConnectionResetError("closed")
    sock.close()
    assert s3_server.resets >= resets + 2


def test_a_boto3_client_is_refused_during_the_outage_and_finds_its_objects_after(s3_server: S3Server,
                                                                                s3_bucket: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server.endpoint, aws_access_key_id=s3_server.access_key,
                          aws_secret_access_key=s3_server.secret_key, region_name="us-east-1",
                          config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2,
                                        read_timeout=5))
    client.put_object(Bucket=s3_bucket, Key="before", Body=b"kept")
    with s3_server.paused():
        with pytest.raises(BotoCoreError):
            client.get_object(Bucket=s3_bucket, Key="before")
        with pytest.raises(BotoCoreError):
            client.put_object(Bucket=s3_bucket, Key="during", Body=b"x")
    assert client.get_object(Bucket=s3_bucket, Key="before")["Body"].read() == b"kept"
    assert s3_server.keys(s3_bucket) == ["before"]


def test_the_project_storage_sees_the_outage_as_transient_and_resumes(s3_server: S3Server, s3_bucket: str) -> None:
    store = from_url(f"s3://{s3_bucket}/p")
    store.put("images/aa/before.jpg", b"kept")
    assert store.get("images/aa/before.jpg") == b"kept"  # the connection pool holds a live connection
    with s3_server.paused():
        with pytest.raises(StorageError) as caught:
            store.get("images/aa/before.jpg")
        assert caught.value.transient
    assert store.get("images/aa/before.jpg") == b"kept"
