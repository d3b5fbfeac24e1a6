"""Webhook URLs must be http(s) and must not resolve to loopback, private, link-local or other internal
addresses (server-side request forgery), unless STAYLER_WEBHOOK_ALLOW_PRIVATE is set.

A name is resolved once and every address it gave is checked; the sender then connects to those
checked addresses only (:mod:`api.webhooks.transport`), so a name that answers differently the second
time (DNS rebinding) cannot steer a delivery inside.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from api.webhooks.resolver import ResolveError, Resolver

_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))
PRIVATE_HINT = "allowed only with STAYLER_WEBHOOK_ALLOW_PRIVATE=true"


class UrlRefusedError(ValueError):
    """The URL may not receive webhooks; the message says why."""


@dataclass(frozen=True)
class Target:
    """A parsed webhook URL: where to connect and what to ask for."""

    scheme: str
    host: str
    port: int
    path: str

    @property
    def host_header(self) -> str:
        """The ``Host`` header: the name (brackets for IPv6), with the port when it is not the default."""
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return name if self.port == default else f"{name}:{self.port}"


def is_internal(address: str) -> bool:
    """Whether an address is anything but a global unicast one (IPv4-mapped IPv6 read as IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def parse_url(url: str) -> Target:
    """The URL's parts; refuses one that is not http(s) with a host, carries credentials or has a bad port."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlRefusedError("the URL must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise UrlRefusedError("the URL must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UrlRefusedError("the URL has an invalid port") from None
    if any(c in url for c in "\r\n\x00 "):
        raise UrlRefusedError("the URL must not contain spaces or control characters")
    try:
        host = parts.hostname.encode("idna").decode("ascii") if not parts.hostname.isascii() else parts.hostname
    except UnicodeError:
        raise UrlRefusedError("the URL's host is not a valid name") from None
    path = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), safe=_PRINTABLE)
    return Target(parts.scheme, host, port, path)


def check_addresses(addresses: list[str], *, allow_private: bool) -> None:
    """Refuse when any address is internal (every one is checked: the sender may use any of them)."""
    if not allow_private and any(is_internal(a) for a in addresses):
        raise UrlRefusedError(f"the URL resolves to a loopback, private or link-local address ({PRIVATE_HINT})")


def resolve_checked(target: Target, resolver: Resolver, *, timeout_s: float, allow_private: bool) -> list[str]:
    """Resolve the target once (bounded by ``timeout_s``) and check every address; returns them."""
    try:
        addresses = resolver.resolve(target.host, target.port, timeout_s)
    except ResolveError as exc:
        raise UrlRefusedError(str(exc)) from None
    check_addresses(addresses, allow_private=allow_private)
    return addresses


async def check_url_async(url: str, resolver: Resolver, *, timeout_s: float, allow_private: bool) -> Target:
    """The API's check at registration: parse, then (unless private addresses are allowed) resolve off the
    event loop and request threads, bounded by ``timeout_s``, and check every address."""
    target = parse_url(url)
    if allow_private:
        return target
    try:
        addresses = await resolver.resolve_async(target.host, target.port, timeout_s)
    except ResolveError as exc:
        raise UrlRefusedError(str(exc)) from None
    check_addresses(addresses, allow_private=False)
    return target
