"""Per-key token bucket for conversion creation, shared by every API process through Redis.

Each key has a bucket of ``api_rate_burst`` tokens refilled at ``api_rate_per_s``; creating a
conversion takes one. The bucket lives in Redis (one hash per key, updated by one Lua script, timed by
Redis' own clock), so every API process draws from the same bucket. When Redis cannot be reached
the process falls back to a bucket of its own with the same limits and says so once in its log: each
process then admits up to the limit, so a fleet of P processes admits at most P times it while Redis
is down, and no request fails because Redis is. Answers carry the IETF ``RateLimit-Policy`` and
``RateLimit`` headers; a refusal is 429 ``rate_limited`` with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Response

from api.keys import Principal
from api.problems import Problem
from core.settings import Settings

if TYPE_CHECKING:
    from api.context import ApiContext

log = logging.getLogger(__name__)

POLICY = "conversions"

# KEYS[1] bucket; ARGV rate/s, burst, cost. Returns {allowed, tokens left (x1000), ms until a token}.
_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local allowed = 0
if tokens >= cost then tokens = tokens - cost; allowed = 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
local wait = 0
if tokens < cost then wait = math.ceil((cost - tokens) / rate * 1000) end
return {allowed, math.floor(tokens * 1000), wait}
"""


@dataclass(frozen=True)
class Decision:
    """One draw from a bucket."""

    allowed: bool
    remaining: int
    retry_after_s: float
    burst: int
    rate_per_s: float

    def headers(self) -> dict[str, str]:
        """``RateLimit-Policy`` / ``RateLimit`` (and ``Retry-After`` on a refusal)."""
        window = max(1, math.ceil(self.burst / self.rate_per_s))
        full_in = max(0, math.ceil((self.burst - self.remaining) / self.rate_per_s))
        out = {"RateLimit-Policy": f'"{POLICY}";q={self.burst};w={window}',
               "RateLimit": f'"{POLICY}";r={self.remaining};t={full_in}'}
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return out


class _LocalBucket:
    """The same bucket in this process only (Redis unreachable)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[uuid.UUID, tuple[float, float]] = {}

    def take(self, key_id: uuid.UUID, rate: float, burst: int) -> tuple[bool, float, float]:
        now = time.monotonic()
        with self._lock:
            tokens, ts = self._buckets.get(key_id, (float(burst), now))
            tokens = min(float(burst), tokens + (now - ts) * rate)
            allowed = tokens >= 1
            if allowed:
                tokens -= 1
            self._buckets[key_id] = (tokens, now)
            if len(self._buckets) > 100_000:  # bound: forget the oldest half
                for k in sorted(self._buckets, key=lambda k: self._buckets[k][1])[:50_000]:
                    del self._buckets[k]
        return allowed, tokens, 0.0 if tokens >= 1 else (1 - tokens) / rate


class RateLimiter:
    """Token buckets per API key; ``rate_per_s == 0`` turns limiting off."""

    def __init__(self, redis_url: str | None, *, rate_per_s: float, burst: int, prefix: str = "stayler:ratelimit:",
                 client: Any = None) -> None:
        """Use Redis at ``redis_url`` (or ``client``); without either, each process has its own buckets."""
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.prefix = prefix
        self._client = client
        if client is None and redis_url:
            import redis

            self._client = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script = self._client.register_script(_SCRIPT) if self._client is not None else None
        self._local = _LocalBucket()
        self._degraded = False

    @property
    def enabled(self) -> bool:
        """Whether any limit applies."""
        return self.rate_per_s > 0

    def take(self, key_id: uuid.UUID) -> Decision:
        """Take one token from the key's bucket (blocking I/O: call from a worker thread)."""
        if self._script is not None:
            try:
                allowed, milli, wait_ms = self._script(keys=[f"{self.prefix}{key_id}"],
                                                       args=[self.rate_per_s, self.burst, 1])
                if self._degraded:
                    log.warning("rate limiter: Redis is back; buckets are shared again")
                    self._degraded = False
                return Decision(bool(allowed), int(milli) // 1000, int(wait_ms) / 1000, self.burst, self.rate_per_s)
            except Exception as exc:  # any Redis failure degrades to the local bucket
                if not self._degraded:
                    log.warning("rate limiter: Redis unreachable, limiting per process until it is back",
                                extra={"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})
                    self._degraded = True
        allowed_local, tokens, wait_s = self._local.take(key_id, self.rate_per_s, self.burst)
        return Decision(allowed_local, int(tokens), wait_s, self.burst, self.rate_per_s)

    @property
    def degraded(self) -> bool:
        """True while Redis is unreachable and buckets are per process."""
        return self._degraded


def rate_limiter(settings: Settings) -> RateLimiter | None:
    """The API's limiter from the settings (None when ``api_rate_per_s`` is 0)."""
    if settings.api_rate_per_s <= 0:
        return None
    return RateLimiter(settings.redis_url, rate_per_s=settings.api_rate_per_s, burst=settings.api_rate_burst)


async def limit_rate(ctx: ApiContext, principal: Principal, response: Response) -> None:
    """Take a token for ``principal``'s key: headers on ``response``, or 429 ``rate_limited``."""
    limiter = ctx.limiter
    if limiter is None:
        return
    decision = await asyncio.to_thread(limiter.take, principal.key_id)
    headers = decision.headers()
    if not decision.allowed:
        raise Problem("rate_limited", f"this key may create {limiter.rate_per_s:g} conversions/s "
                      f"(bursts of {limiter.burst}); retry in {headers['Retry-After']} s", headers=headers)
    for name, value in headers.items():
        response.headers[name] = value
