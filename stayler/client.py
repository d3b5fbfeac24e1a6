"""A small typed Python client of the Stayler HTTP API (docs/api.md), for upstream services.

It needs only ``httpx`` and the standard library, and imports nothing else of this project, so it
can be copied into a service as one file::

    from stayler.client import StaylerClient, verify_webhook

    with StaylerClient("http://127.0.0.1:8080", key) as api:
        person = api.upload_image("person.jpg", "user")["id"]
        garment = api.upload_image("tee.png", "cloth")["id"]
        conversion = api.submit(person, garment, idempotency_key="order-1001", style_name="casual")
        done = api.wait(conversion["id"], timeout=120)
        if done["status"] == "completed":
            Path("result.jpg").write_bytes(api.download(done["id"]))

``submit`` sends an ``Idempotency-Key`` (one is made when none is given) and retries connection
errors, 5xx answers and ``idempotency_key_in_use`` with the same key, so a retry never makes a
second conversion. ``verify_webhook`` checks a Standard Webhooks signature before the body is used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import httpx

TERMINAL = frozenset({"completed", "failed", "cancelled"})
#: The longest ``?wait=`` the API accepts; longer waits are made of several requests.
MAX_WAIT_S = 60.0
PROBLEM_PREFIX = "urn:stayler:problem:"


class ApiError(Exception):
    """The API refused a request: an RFC 9457 problem with a stable ``code`` (its type without the prefix)."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        """Keep the status and the problem document; the message is its title and detail."""
        self.status = status
        self.problem = dict(problem)
        self.code = str(problem.get("type", "")).removeprefix(PROBLEM_PREFIX) or f"http_{status}"
        detail = problem.get("detail")
        super().__init__(f"{status} {self.code}: {problem.get('title', '')}" + (f" ({detail})" if detail else ""))


class WebhookVerificationError(Exception):
    """A webhook whose signature, timestamp or body cannot be trusted."""


class StaylerClient:
    """One API key's view of the API. Use as a context manager, or call :meth:`close`."""

    def __init__(self, base_url: str, key: str, *, timeout_s: float = 30.0, retries: int = 3,
                 backoff_s: float = 0.5, transport: httpx.BaseTransport | None = None) -> None:
        """``retries``: further tries of a request that may be repeated safely, ``backoff_s`` doubling between."""
        self.retries = retries
        self.backoff_s = backoff_s
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport,
                                  headers={"Authorization": f"Bearer {key}"})

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def upload_image(self, image: str | Path | bytes, image_type: Literal["user", "cloth"], *,
                     file_name: str | None = None, public: bool = False) -> dict[str, Any]:
        """Upload a person photo (``user``) or a garment (``cloth``); returns the image record."""
        if isinstance(image, bytes):
            data, name = image, file_name or "image"
        else:
            path = Path(image)
            data, name = path.read_bytes(), file_name or path.name
        fields = {"type": image_type, **({"is_public": "true"} if public else {})}
        return self._json("POST", "/v1/images", files={"file": (name, data)}, data=fields)

    def submit(self, user_image_id: str, cloth_image_id: str, *, idempotency_key: str | None = None,
               style_name: str | None = None, priority: int = 0, conversion_type: str = "free",
               metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Create a conversion (202); a repeat with the same key returns the same conversion."""
        body: dict[str, Any] = {"user_image_id": user_image_id, "cloth_image_id": cloth_image_id,
                                "priority": priority, "conversion_type": conversion_type}
        if style_name is not None:
            body["style_name"] = style_name
        if metadata is not None:
            body["metadata"] = dict(metadata)
        key = idempotency_key or f"stayler-client-{uuid.uuid4()}"
        return self._json("POST", "/v1/conversions", json=body, headers={"Idempotency-Key": key}, idempotent=True)

    def get(self, conversion_id: str) -> dict[str, Any]:
        """The conversion as it is now."""
        return self._json("GET", f"/v1/conversions/{conversion_id}", idempotent=True)

    def wait(self, conversion_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """The conversion once it has ended, or as it is when ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            wait = max(0.0, min(remaining, MAX_WAIT_S))
            conversion = self._json("GET", f"/v1/conversions/{conversion_id}", params={"wait": f"{wait:.1f}"},
                                    idempotent=True, extra_timeout=wait)
            if conversion["status"] in TERMINAL or remaining <= 0:
                return conversion

    def cancel(self, conversion_id: str) -> dict[str, Any]:
        """Cancel it; an :class:`ApiError` ``invalid_status_transition`` (409) when it had already ended."""
        return self._json("POST", f"/v1/conversions/{conversion_id}/cancel", idempotent=True)

    def download(self, conversion_id: str, which: Literal["result", "thumbnail"] = "result") -> bytes:
        """The result image's (or its thumbnail's) bytes, following a presigned redirect."""
        response = self._send("GET", f"/v1/conversions/{conversion_id}/{which}", idempotent=True,
                              follow_redirects=True)
        return response.content

    def add_webhook(self, url: str, events: list[str] | None = None) -> dict[str, Any]:
        """Add an endpoint (needs an operator-scope key); the answer carries its ``secret`` once."""
        body: dict[str, Any] = {"url": url, **({"events": events} if events else {})}
        return self._json("POST", "/v1/webhooks", json=body)

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, path, **kwargs)
        result: dict[str, Any] = response.json()
        return result

    def _send(self, method: str, path: str, *, idempotent: bool = False, extra_timeout: float = 0.0,
              headers: Mapping[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        attempts = 1 + (self.retries if idempotent else 0)
        timeout = self._http.timeout.read + extra_timeout if self._http.timeout.read is not None else None
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._http.request(method, path, headers=headers, timeout=timeout, **kwargs)
            except httpx.TransportError:
                if last:
                    raise
                self._pause(attempt, None)
                continue
            if response.is_success:
                return response
            problem = _problem(response)
            retryable = response.status_code >= 500 or problem.get("type") == PROBLEM_PREFIX + "idempotency_key_in_use"
            if not retryable or last:
                raise ApiError(response.status_code, problem)
            self._pause(attempt, response.headers.get("Retry-After"))
        raise AssertionError("unreachable")  # pragma: no cover

    def _pause(self, attempt: int, retry_after: str | None) -> None:
        try:
            delay = float(retry_after) if retry_after else self.backoff_s * 2 ** attempt
        except ValueError:
            delay = self.backoff_s * 2 ** attempt
        time.sleep(min(delay, 30.0))


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {"type": f"http_{response.status_code}", "title": response.reason_phrase, "status": response.status_code}


def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes, *, tolerance_s: float = 300.0,
                   now: float | None = None) -> dict[str, Any]:
    """The webhook's JSON payload once its Standard Webhooks signature and timestamp check out.

    ``headers`` may use any letter case. Raises :class:`WebhookVerificationError` otherwise; never
    parse the body before this returns.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id, timestamp, signatures = lower["webhook-id"], lower["webhook-timestamp"], lower["webhook-signature"]
        sent_at = int(timestamp)
    except (KeyError, ValueError):
        raise WebhookVerificationError("missing or malformed webhook-id/-timestamp/-signature headers") from None
    if abs((time.time() if now is None else now) - sent_at) > tolerance_s:
        raise WebhookVerificationError("the timestamp is too old or too far ahead (a replay?)")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError:
        raise WebhookVerificationError("the secret is not a whsec_ base64 secret") from None
    mac = hmac.new(key, f"{msg_id}.{sent_at}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    if not any(hmac.compare_digest(expected, sig) for sig in signatures.split()):
        raise WebhookVerificationError("no signature matches")
    payload: dict[str, Any] = json.loads(body)
    return payload
