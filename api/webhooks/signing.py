"""Standard Webhooks signatures: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
#: A receiver refuses messages whose timestamp is further than this from its clock (replays).
TOLERANCE_S = 300


def new_secret() -> bytes:
    """A fresh signing key."""
    return secrets.token_bytes(SECRET_BYTES)


def format_secret(key: bytes) -> str:
    """The secret as shown to the endpoint's owner: ``whsec_`` + base64 of the key."""
    return SECRET_PREFIX + base64.b64encode(key).decode()


def parse_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_…`` secret."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one message."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(key: bytes, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers (and the content type) of one delivery attempt."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sign(key, msg_id, ts, body),
            "content-type": "application/json"}


def verify(secret: str, header_values: dict[str, str], body: bytes, now: float | None = None) -> bool:
    """A receiver's check: a fresh timestamp and one matching ``v1`` signature (constant-time compare)."""
    msg_id = header_values.get("webhook-id")
    ts_text = header_values.get("webhook-timestamp", "")
    signatures = header_values.get("webhook-signature", "")
    if not msg_id or not ts_text.isdigit():
        return False
    ts = int(ts_text)
    if abs((time.time() if now is None else now) - ts) > TOLERANCE_S:
        return False
    expected = sign(parse_secret(secret), msg_id, ts, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures.split())
