"""A TCP proxy on loopback that can cut a connection right after forwarding a chosen statement.

``FaultProxy(upstream_port).cut_after(b"jobs_complete")`` arms a fault: the next client message
that contains the marker is forwarded to the server whole, then the client's side is closed at
once, so the client never sees the reply while the server still runs (and commits) the statement.
That is the ambiguous commit of a failover, a restart or a cut cable, made repeatable.

``black_hole(True)`` makes it a partition that sends no RST: connections stay open (the kernel
answers keepalives, so TCP never notices), new ones are accepted, and every byte either way is
swallowed. ``black_hole(False)`` heals it; connections that lost bytes are closed then (their
streams are corrupt), as a real partition ends them with a timeout on one side or the other.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator


class FaultProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<upstream_port>, with an optional one-shot cut."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        """Listen on a free loopback port; ``start`` serves it."""
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._marker: bytes | None = None
        self._black_hole = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.cuts = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def cut_after(self, marker: bytes) -> None:
        """Arm: the next client message containing ``marker`` is forwarded, then the client is cut."""
        with self._lock:
            self._marker = marker

    def black_hole(self, on: bool) -> None:
        """Swallow every byte (on) or forward again (off; connections that lost bytes are closed)."""
        if on:
            self._black_hole.set()
        else:
            self._black_hole.clear()

    def url(self, database_url: str) -> str:
        """``database_url`` with its host and port replaced by the proxy's."""
        scheme, rest = database_url.split("://", 1)
        credentials, _, tail = rest.rpartition("@")
        path = tail.split("/", 1)[1] if "/" in tail else ""
        prefix = f"{credentials}@" if credentials else ""
        return f"{scheme}://{prefix}127.0.0.1:{self.port}/{path}"

    def start(self) -> FaultProxy:
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting (open connections end with their peers)."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        while self._black_hole.is_set() and not self._stop.is_set():
            # A partition: the client's connect "succeeds" (the proxy accepted) but nothing answers.
            ready, _, _ = select.select([client], [], [], 0.05)
            if ready:
                try:
                    if not client.recv(65536):
                        client.close()
                        return
                except OSError:
                    return
        if self._stop.is_set():
            client.close()
            return
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        self._pump(client, server)

    def _take_marker(self, data: bytes) -> bool:
        with self._lock:
            if self._marker is not None and self._marker in data:
                self._marker = None
                self.cuts += 1
                return True
        return False

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        cut_at: float | None = None
        swallowed = False
        with client, server:
            while not self._stop.is_set():
                if swallowed and not self._black_hole.is_set():
                    return  # healed: this connection lost bytes, so it ends
                if cut_at is not None and time.monotonic() - cut_at > 0.5:
                    return  # the statement has run; the client hears nothing but a closed socket
                ready, _, _ = select.select([client, server], [], [], 0.05)
                for sock in ready:
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    if self._black_hole.is_set():
                        swallowed = True
                        continue  # swallowed: no reply, no RST
                    try:
                        if sock is client:
                            server.sendall(data)
                            if cut_at is None and self._take_marker(data):
                                # Keep forwarding the rest of the client's message (it may span
                                # several packets) but no reply, so the server runs and commits it.
                                cut_at = time.monotonic()
                        elif cut_at is None:
                            client.sendall(data)
                    except OSError:
                        return  # the other side went away


@contextlib.contextmanager
def fault_proxy(upstream_port: int) -> Iterator[FaultProxy]:
    """A running proxy for the block."""
    proxy = FaultProxy(upstream_port).start()
    try:
        yield proxy
    finally:
        proxy.close()
