"""stayler.client against the real API (a uvicorn server) and the real webhook sender: upload, submit
with an idempotency key and retries, wait, download, cancel's 409, and a delivered webhook verified."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from modelkit.samples import make_garment, make_person, to_bytes
from stayler.client import ApiError, StaylerClient, WebhookVerificationError, verify_webhook
from tests.api.conftest import ApiEnv
from tests.api.test_webhooks import Receiver, receiver, run_sender, wait_until  # noqa: F401  (fixtures)


class FlakyTransport(httpx.HTTPTransport):
    """Drops the first ``failures`` requests after sending them: the answer is lost, the effect is not."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.sent += 1
        if self.failures > 0:
            self.failures -= 1
            response.close()
            raise httpx.ReadError("connection reset after the request was sent", request=request)
        return response


def _images(client: StaylerClient, tmp_path: Path) -> tuple[str, str]:
    person = tmp_path / "person.jpg"
    person.write_bytes(to_bytes(make_person(192, 256, seed=3).image))
    return (client.upload_image(person, "user")["id"],
            client.upload_image(to_bytes(make_garment(96, 96)), "cloth", file_name="tee.jpg")["id"])


def test_submit_wait_download_and_cancel(api: ApiEnv, tmp_path: Path) -> None:
    owner = api.owner()
    with StaylerClient(api.base_url, owner.keys["producer"], backoff_s=0.01) as client:
        person, garment = _images(client, tmp_path)
        first = client.submit(person, garment, idempotency_key="order-1001", style_name="casual")
        assert first["status"] == "pending"
        assert client.submit(person, garment, idempotency_key="order-1001", style_name="casual")["id"] == first["id"]
        still = client.wait(first["id"], timeout=0.5)
        assert still["status"] == "pending"
        api.complete(first["id"])
        done = client.wait(first["id"], timeout=30)
        assert done["status"] == "completed" and done["result"]["image_id"]
        assert client.download(first["id"])[:2] == b"\xff\xd8"  # a JPEG
        with pytest.raises(ApiError) as refused:
            client.cancel(first["id"])
        assert refused.value.status == 409 and refused.value.code == "invalid_status_transition"
        other = client.submit(person, garment)
        assert client.cancel(other["id"])["status"] == "cancelled"
    with StaylerClient(api.base_url, "sk_stayler_not-a-key") as stranger, pytest.raises(ApiError) as denied:
        stranger.get(first["id"])
    assert denied.value.status == 401 and denied.value.code == "unauthorized"


def test_a_lost_answer_is_retried_with_the_same_key_and_makes_one_conversion(api: ApiEnv, tmp_path: Path) -> None:
    owner = api.owner()
    with StaylerClient(api.base_url, owner.keys["producer"]) as setup:
        person, garment = _images(setup, tmp_path)
    transport = FlakyTransport(failures=2)
    with StaylerClient(api.base_url, owner.keys["producer"], transport=transport, backoff_s=0.01) as client:
        created = client.submit(person, garment, style_name="casual")
    assert transport.sent == 3
    with owner.client("read") as reader:
        listed = reader.get("/v1/conversions").json()["items"]
    assert [c["id"] for c in listed] == [created["id"]]


def test_a_delivered_webhook_verifies_and_a_tampered_one_does_not(api: ApiEnv, receiver: Receiver,  # noqa: F811
                                                                   run_sender, tmp_path: Path) -> None:  # noqa: F811
    owner = api.owner()
    with StaylerClient(api.base_url, owner.keys["operator"]) as client:
        endpoint = client.add_webhook(receiver.url)
        run_sender(api)
        person, garment = _images(client, tmp_path)
        conversion = client.submit(person, garment)
        api.complete(conversion["id"])
    [message] = wait_until(receiver.delivered)
    event = verify_webhook(endpoint["secret"], message["headers"], message["body"])
    assert event["type"] == "conversion.completed" and event["data"]["id"] == conversion["id"]
    with pytest.raises(WebhookVerificationError, match="no signature"):
        verify_webhook(endpoint["secret"], message["headers"], message["body"].replace(b"completed", b"failed"))
    stale = int(message["headers"]["webhook-timestamp"]) + 3600
    with pytest.raises(WebhookVerificationError, match="timestamp"):
        verify_webhook(endpoint["secret"], message["headers"], message["body"], now=stale)
    assert json.loads(message["body"])["data"]["status"] == "completed"
