"""A Redis client for a Sentinel-managed master, from one URL.

``redis+sentinel://[:password@]host:port[,host:port…]/master-name[/db]`` names the Sentinels (any
subset is enough to find the others' answer), the monitored master's name and the database. The
password, if any, is the master's; ``?sentinel_password=…`` sets the Sentinels' own. The client
asks the Sentinels for the master on every new connection, and treats a master that turned
read-only (a demoted master after a failover) as a lost connection, so commands retried through a
master switch land on the promoted replica.

Redis Cluster is not supported: Dramatiq's Lua scripts touch keys of several hash slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

SCHEMES = ("redis+sentinel",)

#: Retries of a connect, and of a command (each reconnecting): ~4 s of connects (50 ms doubling to a
#: 0.5 s cap) per command attempt, so a command waits out a failover of up to ~40 s before it fails.
RETRIES = 10


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names."""

    sentinels: list[tuple[str, int]]
    master: str
    db: int = 0
    password: str | None = None
    sentinel_password: str | None = None


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names a Sentinel-managed Redis."""
    return urlsplit(url).scheme in SCHEMES


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse a ``redis+sentinel://`` URL; ``ValueError`` naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"not a redis+sentinel:// URL: {url!r}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    password = unquote(userinfo.partition(":")[2]) if userinfo else None
    sentinels: list[tuple[str, int]] = []
    for item in filter(None, hosts.split(",")):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "26379")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not sentinels or not path:
        raise ValueError("a Sentinel URL is redis+sentinel://host:port[,host:port]/master-name[/db]")
    db = int(path[1]) if len(path) > 1 else 0
    query = parse_qs(parts.query)
    return SentinelTarget(sentinels, unquote(path[0]), db, password or None,
                          query.get("sentinel_password", [None])[0])


class _MasterConnection(SentinelManagedConnection):
    """Asks the Sentinels for the master on every reconnect.

    redis-py (8.1) reconnects a connection whose command failed through ``connect_check_health``
    with the address it had, bypassing the Sentinel lookup in ``connect``: a client blocked in BLPOP
    when its master died kept dialling the dead address until its retries ran out (~15 s here).
    """

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        """Connect through the Sentinels first when the socket is gone, then send."""
        if not getattr(self, "_sock", None):
            self.connect()
        super().send_packed_command(command, check_health)


def sentinel_client(url: str, *, socket_timeout: float = 5.0) -> redis.Redis:
    """A client of the current master that follows failovers (retrying commands through them)."""
    target = parse_sentinel_url(url)
    sentinel = Sentinel(target.sentinels, socket_timeout=1.0,
                        sentinel_kwargs={"password": target.sentinel_password, "socket_timeout": 1.0})
    backoff = ExponentialBackoff(cap=0.5, base=0.05)
    return sentinel.master_for(
        target.master, db=target.db, password=target.password, socket_timeout=socket_timeout,
        socket_connect_timeout=1.0, retry=Retry(backoff, retries=RETRIES),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError], connection_class=_MasterConnection)
