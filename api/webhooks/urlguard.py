"""Webhook URLs must be http(s) and must not resolve to loopback, private, link-local or other internal
addresses (server-side request forgery), unless STAYLER_WEBHOOK_ALLOW_PRIVATE is set."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


class UrlRefusedError(ValueError):
    """The URL may not receive webhooks; the message says why."""


def _is_internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL that is not http(s), has credentials, or resolves to an internal address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlRefusedError("the URL must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise UrlRefusedError("the URL must not carry credentials")
    if allow_private:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UrlRefusedError("the URL has an invalid port") from None
    try:
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise UrlRefusedError("the URL's host does not resolve") from None
    if not infos or any(_is_internal(str(info[4][0])) for info in infos):
        raise UrlRefusedError("the URL resolves to a loopback, private or link-local address")
