"""One webhook POST to an address checked beforehand, under one deadline, reading a bounded answer.

The connection goes to the addresses the URL guard resolved and checked (never to a second lookup),
with the URL's name kept in the ``Host`` header and as the TLS server name (SNI and certificate
check). Every step (connect, TLS handshake, sending, the status line and headers, the body) shares
one deadline, so a receiver that answers one byte a second is cut off at the deadline like one that
never answers. At most ``max_response_bytes`` of the answer are read, and then dropped: only the
status code matters. Redirects are not followed (a 3xx is a failed attempt).
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Mapping

from api.webhooks.urlguard import Target

#: Largest status line plus headers read from a receiver.
MAX_HEAD_BYTES = 16 * 1024
_CHUNK = 16 * 1024


class DeliveryError(Exception):
    """The POST did not get an answer; the message is one short line for the delivery log."""


def _remaining(deadline: float, timeout_s: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeliveryError(f"Timeout: no complete answer within {timeout_s:g} s")
    return left


def _connect(addresses: list[str], port: int, deadline: float, timeout_s: float) -> socket.socket:
    last: OSError | None = None
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(_remaining(deadline, timeout_s))
            sock.connect((address, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except TimeoutError:
            sock.close()
            raise DeliveryError(f"ConnectTimeout: no connection within {timeout_s:g} s") from None
        except OSError as exc:
            sock.close()
            last = exc
    raise DeliveryError(f"ConnectError: {last}")


def _handshake(sock: socket.socket, context: ssl.SSLContext, server_name: str, deadline: float,
               timeout_s: float) -> ssl.SSLSocket:
    """The TLS handshake, non-blocking, so that a dripping peer cannot stretch it past the deadline."""
    sock.setblocking(False)
    tls = context.wrap_socket(sock, server_hostname=server_name, do_handshake_on_connect=False)
    while True:
        try:
            tls.do_handshake()
            return tls
        except ssl.SSLWantReadError:
            select.select([tls], [], [], _remaining(deadline, timeout_s))
        except ssl.SSLWantWriteError:
            select.select([], [tls], [], _remaining(deadline, timeout_s))
        except ssl.SSLError as exc:
            raise DeliveryError(f"TLSError: {exc.reason or exc}") from None


def _send(sock: socket.socket, data: bytes, deadline: float, timeout_s: float) -> None:
    view = memoryview(data)
    while view:
        sock.settimeout(_remaining(deadline, timeout_s))
        sent = sock.send(view[:_CHUNK])
        view = view[sent:]


def _recv(sock: socket.socket, size: int, deadline: float, timeout_s: float) -> bytes:
    sock.settimeout(_remaining(deadline, timeout_s))
    return sock.recv(size)


def _status(head: bytes) -> int:
    line = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(line) < 2 or not line[0].startswith(b"HTTP/1.") or not line[1].isdigit() or len(line[1]) != 3:
        raise DeliveryError("ProtocolError: not an HTTP/1.x answer")
    return int(line[1])


def _body_length(head: bytes, status: int) -> int | None:
    """The body's length when the headers give it (0 for bodiless statuses); None = chunked or until close."""
    if status < 200 or status in (204, 304):
        return 0
    length: int | None = None
    for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding" and b"chunked" in value.lower():
            return None
        if name == b"content-length" and value.strip().isdigit():
            length = int(value.strip())
    return length


def _drain(sock: socket.socket, head: bytes, status: int, cap: int, deadline: float, timeout_s: float) -> None:
    """Read the answer's body up to ``cap`` bytes (within the deadline) and drop it."""
    length = _body_length(head, status)
    tail = head.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in head else b""
    read = len(tail)
    want = cap if length is None else min(length, cap)
    try:
        while read < want and not (length is None and tail.endswith(b"0\r\n\r\n")):
            chunk = _recv(sock, min(_CHUNK, want - read), deadline, timeout_s)
            if not chunk:
                return
            read += len(chunk)
            tail = (tail + chunk)[-8:]
    except (DeliveryError, OSError):
        pass  # the status is known; a slow or broken body does not change it


def post(target: Target, addresses: list[str], body: bytes, headers: Mapping[str, str], *, timeout_s: float,
         max_response_bytes: int, ssl_context: ssl.SSLContext | None = None) -> int:
    """POST ``body`` to ``target`` through the first of ``addresses`` that connects; returns the status code.

    Raises :class:`DeliveryError` when there is no complete status line and headers within ``timeout_s``
    (counted from the call), when the connection or TLS fails, or when the answer is not HTTP/1.x.
    """
    deadline = time.monotonic() + timeout_s
    sock: socket.socket = _connect(addresses, target.port, deadline, timeout_s)
    try:
        if target.scheme == "https":
            sock = _handshake(sock, ssl_context or ssl.create_default_context(), target.host, deadline, timeout_s)
        lines = [f"POST {target.path} HTTP/1.1", f"Host: {target.host_header}", f"Content-Length: {len(body)}",
                 "Connection: close", "User-Agent: stayler-webhooks", "Accept: */*"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        _send(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body, deadline, timeout_s)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = _recv(sock, _CHUNK, deadline, timeout_s)
            if not chunk:
                if head.startswith(b"HTTP/1."):
                    break
                raise DeliveryError("RemoteProtocolError: the receiver closed without answering")
            head += chunk
            if len(head) > MAX_HEAD_BYTES and b"\r\n\r\n" not in head[:MAX_HEAD_BYTES + 4]:
                raise DeliveryError(f"ProtocolError: response headers over {MAX_HEAD_BYTES} bytes")
        status = _status(head)
        _drain(sock, head, status, max_response_bytes, deadline, timeout_s)
        return status
    except TimeoutError:
        raise DeliveryError(f"Timeout: no complete answer within {timeout_s:g} s") from None
    except OSError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from None
    finally:
        sock.close()
