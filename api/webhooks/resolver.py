"""Bounded name resolution for webhook URLs: a small executor of its own, a timeout on every answer.

``getaddrinfo`` cannot be cancelled and a hostile name server may take as long as it likes, so a
lookup never runs on a request thread or the event loop: it runs on one of this resolver's threads
and the caller waits at most ``timeout_s`` for it. When every thread is stuck on slow names, later
lookups wait in the queue and time out the same way; nothing else in the process is held up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import socket
from collections.abc import Callable


class ResolveError(OSError):
    """The name did not resolve (no answer, an error, or not within the time allowed)."""


Lookup = Callable[[str, int], list[str]]


def system_lookup(host: str, port: int) -> list[str]:
    """The addresses of ``host`` from the system resolver (``socket.getaddrinfo``, looked up at call time)."""
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Resolver:
    """Resolves host names on ``threads`` threads of its own, each answer bounded by a timeout."""

    def __init__(self, threads: int = 4, lookup: Lookup | None = None) -> None:
        """A resolver using ``lookup`` (default: the system resolver) on a pool of ``threads``."""
        self.lookup = lookup or system_lookup
        self.pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="stayler-resolve")

    def _literal(self, host: str) -> list[str] | None:
        try:
            return [str(ipaddress.ip_address(host.split("%", 1)[0]))]
        except ValueError:
            return None

    def _run(self, host: str, port: int) -> list[str]:
        try:
            addresses = self.lookup(host, port)
        except (OSError, UnicodeError) as exc:
            raise ResolveError(f"the URL's host does not resolve ({type(exc).__name__})") from None
        if not addresses:
            raise ResolveError("the URL's host does not resolve")
        return addresses

    def resolve(self, host: str, port: int, timeout_s: float) -> list[str]:
        """Every address of ``host``, waiting at most ``timeout_s`` (blocking; call off the event loop)."""
        literal = self._literal(host)
        if literal is not None:
            return literal
        future = self.pool.submit(self._run, host, port)
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ResolveError(f"the URL's host did not resolve within {timeout_s:g} s") from None

    async def resolve_async(self, host: str, port: int, timeout_s: float) -> list[str]:
        """:meth:`resolve` for the event loop: the lookup runs on this resolver's threads, not the loop's."""
        literal = self._literal(host)
        if literal is not None:
            return literal
        future = self.pool.submit(self._run, host, port)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        except TimeoutError:
            future.cancel()
            raise ResolveError(f"the URL's host did not resolve within {timeout_s:g} s") from None

    def close(self) -> None:
        """Stop the threads (a lookup still running ends on its own)."""
        self.pool.shutdown(wait=False, cancel_futures=True)
