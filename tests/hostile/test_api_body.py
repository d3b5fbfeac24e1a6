"""Row 8 of issue 19: the key is checked before a body is read, a body has a deadline, and the bytes one
process holds for bodies are capped; row 10: forwarded headers only from trusted proxies, and the public
base URL decides result URLs and the console cookie's Secure flag."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from tests.api.conftest import ApiEnv


def _send_head(api: ApiEnv, head: str, body: bytes = b"") -> socket.socket:
    parts = urlsplit(api.base_url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=15)
    sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    return sock


def _answer(sock: socket.socket) -> tuple[int, str]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), (head + b"\n" + rest).decode("latin-1")


def _upload_head(api: ApiEnv, length: int, key: str | None) -> str:
    auth = f"Authorization: Bearer {key}\n" if key else ""
    return (f"POST /v1/images HTTP/1.1\nHost: {urlsplit(api.base_url).netloc}\n{auth}"
            f"Content-Type: multipart/form-data; boundary=xyz\nContent-Length: {length}\n")


def test_an_upload_without_a_key_is_refused_before_its_body_is_read(api: ApiEnv) -> None:
    length = api.settings.api_max_upload_bytes - 1
    sock = _send_head(api, _upload_head(api, length, None))  # the body is never sent
    status, text = _answer(sock)
    assert status == 401 and "unauthorized" in text
    owner = api.owner()
    sock = _send_head(api, _upload_head(api, length, owner.keys["read"]))
    status, text = _answer(sock)
    assert status == 403 and "forbidden" in text
    sock = _send_head(api, _upload_head(api, length, "sk_not_a_key"))
    assert _answer(sock)[0] == 401


def test_a_body_that_does_not_arrive_in_time_is_408(make_api: Callable[..., ApiEnv]) -> None:
    api = make_api(api_body_timeout_s=1.0)
    owner = api.owner()
    sock = _send_head(api, _upload_head(api, 10_000, owner.keys["producer"]), b"--xyz\r\n")  # then it stalls
    started = time.monotonic()
    status, text = _answer(sock)
    # The API's own body deadline answered (a 408 problem; the socket's own 15 s timeout would close
    # the connection without one), and not before the deadline: a lower bound only, no ceiling.
    assert status == 408 and "request_timeout" in text
    assert time.monotonic() - started >= 1.0
    head = (f"POST /v1/conversions HTTP/1.1\nHost: x\nAuthorization: Bearer {owner.keys['producer']}\n"
            "Content-Type: application/json\nContent-Length: 500\n")
    status, text = _answer(_send_head(api, head, b'{"user_image_id": '))
    assert status == 408 and "request_timeout" in text


def test_bodies_over_the_process_spool_cap_are_503_with_retry_after(make_api: Callable[..., ApiEnv]) -> None:
    api = make_api(api_max_spooled_bytes=100_000)
    owner = api.owner()
    part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
    held = _send_head(api, _upload_head(api, 90_000, owner.keys["producer"]), part + b"x" * 60_000)  # sending
    time.sleep(0.5)
    status, text = _answer(_send_head(api, _upload_head(api, 50_000, owner.keys["producer"])))
    assert status == 503 and "server_busy" in text and "retry-after: 2" in text.lower()
    held.close()
    # Once the held body is gone the bytes are free again.
    deadline = time.monotonic() + 10
    while api.server.app.state.ctx and time.monotonic() < deadline:
        response = owner.upload(b"\xff\xd8\xff not really a jpeg", "user")
        if response.status_code != 503:
            break
        time.sleep(0.1)
    assert response.status_code in (415, 422), response.text


def test_forwarded_headers_count_only_from_trusted_proxies(make_api: Callable[..., ApiEnv]) -> None:
    spoof = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example", "X-Forwarded-For": "6.6.6.6"}
    untrusted = make_api()
    owner = untrusted.owner()
    cid = owner.conversion()["id"]
    untrusted.complete(cid)
    url = owner.client("read").get(f"/v1/conversions/{cid}", headers=spoof).json()["result"]["url"]
    assert url.startswith(untrusted.base_url + "/v1/")
    trusted = make_api(api_trusted_proxies="127.0.0.0/8")
    owner = trusted.owner()
    cid = owner.conversion()["id"]
    trusted.complete(cid)
    url = owner.client("read").get(f"/v1/conversions/{cid}", headers=spoof).json()["result"]["url"]
    assert url.startswith("https://evil.example/v1/")


def test_the_public_base_url_decides_result_urls_and_the_secure_cookie(make_api: Callable[..., ApiEnv]) -> None:
    from tests.console.conftest import console_key

    api = make_api(api_public_base_url="https://api.example.com")
    owner = api.owner()
    cid = owner.conversion()["id"]
    api.complete(cid)
    url = owner.client("read").get(f"/v1/conversions/{cid}").json()["result"]["url"]
    assert url == f"https://api.example.com/v1/conversions/{cid}/result"
    _key_id, key = console_key(api.db_url, "operator")
    with api.anonymous() as client:
        response = client.post("/console/login", data={"key": key})
    assert response.status_code == 303
    assert "secure" in response.headers["set-cookie"].lower()
