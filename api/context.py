"""What every request handler shares: settings, the database pool, storage, the completion hub, metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from api.db import Database
from api.decoding import DecodeGate
from api.metrics import ApiMetrics
from api.ratelimit import RateLimiter
from api.waiters import WaiterLimits
from api.waiting import CompletionHub
from core.settings import Settings
from producer import Waker
from producer.images import ImageLimits
from storage import Storage


@dataclass
class ApiContext:
    """The process-wide parts of the API."""

    settings: Settings
    db: Database
    storage: Storage
    hub: CompletionHub
    metrics: ApiMetrics
    limits: ImageLimits
    #: Wakes a worker right after a conversion is committed (None without a Redis URL).
    waker: Waker | None = None
    #: Per-key token buckets for conversion creation (None: no rate limit).
    limiter: RateLimiter | None = None
    #: Bounds the image decodes this process runs at once (STAYLER_API_MAX_CONCURRENT_DECODES).
    decodes: DecodeGate = field(default_factory=lambda: DecodeGate(2))
    #: Caps ``?wait=`` requests per process and per key (STAYLER_API_MAX_WAITERS, _PER_KEY).
    waiters: WaiterLimits = field(default_factory=lambda: WaiterLimits(1000, 50))


def get_context(request: Request) -> ApiContext:
    """The API context of the app serving ``request``."""
    ctx: ApiContext = request.app.state.ctx
    return ctx
