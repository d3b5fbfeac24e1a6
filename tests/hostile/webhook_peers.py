"""Hostile webhook receivers on loopback (dripping, huge answers, TLS) and a fake name resolver."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from api.webhooks.sender import Sender
from tests.api.conftest import ApiEnv


class RawReceiver:
    """A TCP server that reads each request's head and body, then answers with ``answer(conn)``.

    It counts requests and the bytes it managed to send, and knows whether a connection is open.
    """

    def __init__(self, answer: Callable[[socket.socket], None], tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.requests: list[bytes] = []
        self.server_names: list[str | None] = []
        self.sent = 0
        self.open_connections = 0
        self.most_open = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}/hooks"

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self.lock:
            self.open_connections += 1
            self.most_open = max(self.most_open, self.open_connections)
        try:
            if self.tls is not None:
                names: list[str | None] = []
                self.tls.sni_callback = lambda s, name, ctx: names.append(name)
                conn = self.tls.wrap_socket(conn, server_side=True)
                self.server_names.extend(names)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(body) < length:
                body += conn.recv(65536)
            self.requests.append(head + b"\r\n\r\n" + body)
            self.answer(conn)
        except OSError:
            pass
        finally:
            with self.lock:
                self.open_connections -= 1
            conn.close()

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.sent += len(data)

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


def ok(receiver_box: list[RawReceiver]) -> Callable[[socket.socket], None]:
    def answer(conn: socket.socket) -> None:
        receiver_box[0].send(conn, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
    return answer


@contextmanager
def receiver(kind: str = "ok", *, drip_s: float = 1.0, drip_bytes: int = 600, answer_bytes: int = 400 * 2**20,
             tls: ssl.SSLContext | None = None) -> Iterator[RawReceiver]:
    """A receiver that answers at once (``ok``), one byte every ``drip_s`` (``drip``), or ``answer_bytes``
    of body (``huge``, streamed, never held in memory)."""
    box: list[RawReceiver] = []

    def drip(conn: socket.socket) -> None:
        for byte in (b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * drip_bytes)[:drip_bytes]:
            if box[0].closed.is_set():
                return
            box[0].send(conn, bytes([byte]))
            time.sleep(drip_s)

    def huge(conn: socket.socket) -> None:
        box[0].send(conn, f"HTTP/1.1 200 OK\r\ncontent-length: {answer_bytes}\r\n\r\n".encode())
        block = b"x" * 65536
        left = answer_bytes
        while left > 0 and not box[0].closed.is_set():
            box[0].send(conn, block[:left])
            left -= len(block)

    answers: dict[str, Callable[[socket.socket], None]] = {"ok": ok(box), "drip": drip, "huge": huge}
    r = RawReceiver(answers[kind], tls=tls)
    box.append(r)
    try:
        yield r
    finally:
        r.close()


class FakeDns:
    """Replaces ``socket.getaddrinfo`` for chosen names: each name has a script of answers (the last one
    repeats); names under ``.slow.test`` block until :attr:`release` is set. Other names go to the real
    resolver. Connections to global addresses are refused on the spot (and recorded in
    :attr:`outside`), so a test that resolves a name to a public address never leaves the machine."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = socket.getaddrinfo
        self.scripts: dict[str, list[list[str]]] = {}
        self.release = threading.Event()
        self.calls: list[str] = []
        self.outside: list[str] = []
        monkeypatch.setattr(socket, "getaddrinfo", self.getaddrinfo)
        outside = self.outside

        class NoInternet(socket.socket):
            def connect(self, address: Any) -> None:
                if isinstance(address, tuple) and ipaddress.ip_address(address[0]).is_global:
                    outside.append(address[0])
                    raise ConnectionRefusedError(111, "refused by the test: no internet")
                super().connect(address)

        monkeypatch.setattr(socket, "socket", NoInternet)

    def answer(self, name: str, *answers: list[str]) -> None:
        self.scripts[name] = list(answers)

    def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name.endswith(".slow.test"):
            self.calls.append(name)
            self.release.wait()
            raise socket.gaierror(socket.EAI_AGAIN, "slow name")
        if name not in self.scripts:
            return self.real(host, port, *args, **kwargs)
        self.calls.append(name)
        script = self.scripts[name]
        addresses = script.pop(0) if len(script) > 1 else script[0]
        port_number = int(port) if port is not None else 0
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                 (a, port_number)) for a in addresses]


def add_endpoint(api: ApiEnv, owner_id: Any, url: str, secret: bytes = b"k" * 32) -> Any:
    """An endpoint written straight into the table (as an old row, or one whose URL the API would refuse)."""
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        row = conn.execute("INSERT INTO webhook_endpoints (user_id, url, events, secret) VALUES (%s, %s, "
                           "ARRAY['conversion.completed','conversion.failed','conversion.cancelled'], %s) "
                           "RETURNING id", (owner_id, url, secret)).fetchone()
    assert row is not None
    return row[0]


def deliveries(api: ApiEnv) -> dict[Any, tuple[str, int, list[Any]]]:
    """endpoint id → (status, attempts, [(status_code, error), ...]) of every delivery."""
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT d.endpoint_id, d.status, d.attempts, COALESCE((SELECT array_agg(ARRAY[a.status_code::text, "
            "a.error] ORDER BY a.attempt) FROM webhook_attempts a WHERE a.delivery_id = d.id), '{}') "
            "FROM webhook_deliveries d").fetchall()
    return {r[0]: (r[1], r[2], list(r[3])) for r in rows}


def run_sender_once(api: ApiEnv, **kwargs: Any) -> int:
    """One sender pass over everything due, as ``stayler webhooks`` makes it."""
    sender = Sender(api.settings, api.db_url, storage=api.storage, **kwargs)
    try:
        with psycopg.connect(api.db_url, autocommit=True) as conn:
            return sender.run_once(conn)
    finally:
        sender.close()
