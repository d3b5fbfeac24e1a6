"""Uploads through HTTP: validated as the producer does, the bad-image corpus, and body limits."""

from __future__ import annotations

import socket
import uuid

import pytest

from modelkit.samples import make_person, to_bytes
from tests.api.conftest import problem_type
from tests.reliability.corpus import MAX_BYTES, build_corpus

CORPUS = build_corpus()


def test_upload_returns_the_image(api) -> None:
    owner = api.owner()
    data = to_bytes(make_person(96, 128, seed=2).image)
    response = owner.upload(data, "user", file_name="../../etc/passwd", tags=["a", "b"], metadata={"k": 1})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["width"] == 96 and body["height"] == 128 and body["mime_type"] == "image/jpeg"
    assert body["file_size"] == len(data) and body["type"] == "user" and body["is_public"] is False
    uuid.UUID(body["id"])


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_the_bad_image_corpus_through_http(api, case) -> None:
    owner = api.owner()
    response = owner.upload(case.data, "cloth" if case.kind == "cloth" else "user", file_name=case.file_name)
    if case.accept:
        assert response.status_code == 201, (case.name, response.text)
        return
    assert response.status_code in (413, 415, 422), (case.name, response.text)
    name = problem_type(response)
    assert name in case.refuse_codes or (name == "payload_too_large" and "image_too_large" in case.refuse_codes), \
        (case.name, name)
    assert "Traceback" not in response.text and str(api.storage.root) not in response.text


def test_an_oversized_declared_body_is_refused_unread(api) -> None:
    owner = api.owner()
    limit = api.settings.api_max_upload_bytes
    body = b"x" * (limit + 1)
    response = owner.client().post("/v1/images", content=body,
                                   headers={"content-type": "multipart/form-data; boundary=zzz"})
    assert response.status_code == 413 and problem_type(response) == "payload_too_large"

    # A raw request that declares a huge body and sends none of it: the answer comes at once.
    port = int(api.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=zzz\r\n"
                     b"Content-Length: 10000000000\r\n\r\n")
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413")


def test_an_oversized_chunked_body_is_refused_while_streaming(api) -> None:
    owner = api.owner()
    sent = 0

    def chunks():
        nonlocal sent
        boundary = b"--zzz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\n"
        yield boundary
        for _ in range(200):
            sent += 64 * 1024
            yield b"\xff" * (64 * 1024)

    response = owner.client().post("/v1/images", content=chunks(),
                                   headers={"content-type": "multipart/form-data; boundary=zzz"})
    assert response.status_code == 413 and problem_type(response) == "payload_too_large"


def test_an_image_over_the_image_limit_is_image_too_large(make_api) -> None:
    api = make_api(max_image_bytes=20_000, api_max_upload_bytes=MAX_BYTES)
    owner = api.owner()
    data = to_bytes(make_person(400, 600, seed=3).image)
    assert len(data) > 20_000
    response = owner.upload(data)
    assert response.status_code == 413 and problem_type(response) == "image_too_large"


def test_bad_form_fields(api) -> None:
    owner = api.owner()
    data = to_bytes(make_person(96, 128, seed=2).image)
    bad_meta = owner.client().post("/v1/images", files={"file": ("a.jpg", data)},
                                   data={"type": "user", "metadata": "[1, 2]"})
    assert bad_meta.status_code == 422 and problem_type(bad_meta) == "validation_error"
    bad_type = owner.client().post("/v1/images", files={"file": ("a.jpg", data)}, data={"type": "result"})
    assert bad_type.status_code == 422 and problem_type(bad_type) == "validation_error"
    no_file = owner.client().post("/v1/images", data={"type": "user"})
    assert no_file.status_code == 422
    album = owner.client().post("/v1/images", files={"file": ("a.jpg", data)},
                                data={"type": "user", "album_id": str(uuid.uuid4())})
    assert album.status_code == 404 and problem_type(album) == "not_found"
