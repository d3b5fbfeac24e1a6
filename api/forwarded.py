"""Who and where a request really came from, behind a proxy.

``X-Forwarded-For``, ``-Proto`` and ``-Host`` are honoured only when the connection comes from an
address in ``STAYLER_API_TRUSTED_PROXIES``; from anywhere else they are ignored, so a client cannot
claim another address or scheme. ``STAYLER_API_PUBLIC_BASE_URL``, when set, decides the scheme and
host every request is seen under, so result URLs and the console cookie's ``Secure`` flag follow
the public address even when the proxy sends no forwarded headers.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from core.settings import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> list[Network]:
    """``"10.0.0.0/8, 192.168.1.7"`` → networks; a word that is not an address or network raises ValueError."""
    return [ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()]


def _trusted(address: str | None, networks: list[Network]) -> bool:
    if not address or not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


class ForwardedMiddleware:
    """Apply trusted forwarded headers and the public base URL to the request's scope."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        """Wrap ``app`` with the proxies and public URL of ``settings``."""
        self.app = app
        self.proxies = parse_networks(settings.api_trusted_proxies)
        base = urlsplit(settings.api_public_base_url) if settings.api_public_base_url else None
        self.public = (base.scheme, base.netloc) if base and base.scheme in ("http", "https") and base.netloc else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite client, scheme and host as the settings allow, then pass on."""
        if scope["type"] in ("http", "websocket"):
            scope = dict(scope)
            headers = dict(scope["headers"])
            client = scope.get("client")
            if client and _trusted(client[0], self.proxies):
                self._apply_forwarded(scope, headers, client)
            if self.public is not None:
                scheme, host = self.public
                scope["scheme"] = scheme if scope["type"] == "http" else ("wss" if scheme == "https" else "ws")
                self._set_host(scope, host)
        await self.app(scope, receive, send)

    def _apply_forwarded(self, scope: dict, headers: dict[bytes, bytes], client: tuple[str, int]) -> None:
        proto = headers.get(b"x-forwarded-proto", b"").decode("latin-1").split(",")[0].strip().lower()
        if proto in ("http", "https"):
            scope["scheme"] = proto
        host = headers.get(b"x-forwarded-host", b"").decode("latin-1").split(",")[0].strip()
        if host:
            self._set_host(scope, host)
        hops = [h.strip() for h in headers.get(b"x-forwarded-for", b"").decode("latin-1").split(",") if h.strip()]
        # The right-most address not of a trusted proxy is the client (the ones left of it are its claims).
        for hop in reversed(hops):
            if not _trusted(hop, self.proxies):
                scope["client"] = (hop, 0)
                break

    @staticmethod
    def _set_host(scope: dict, host: str) -> None:
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"host"] + [(b"host", host.encode("latin-1"))]
