"""Row 2 of issue 19: a decode-memory budget checked from the image header before decoding, and a bound on
the decodes one API process runs at once, so 20 concurrent worst-case uploads keep it under 512 MiB."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from PIL import Image

from bench.boundary import api_process, bomb_png16, edge_rgba_png, peak_rss_mib, upload_all
from core.settings import Settings
from imaging import ImageTooLargeError, decode_image
from imaging.budget import MODE_BYTES, bytes_per_pixel, decode_cost
from modelkit.samples import make_person, to_bytes
from tests.api.conftest import ApiEnv, problem_type

BUDGET = Settings().max_decode_bytes


def test_the_16_bit_png_bomb_is_refused_from_its_header_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = bomb_png16()
    assert len(data) < 120_000  # a ~90 KB file inside every byte and pixel limit
    loads: list[str] = []
    real_load = Image.Image.load

    def counted(self: Image.Image) -> object:
        loads.append(self.mode)
        return real_load(self)

    monkeypatch.setattr(Image.Image, "load", counted)
    with pytest.raises(ImageTooLargeError, match="decoding it needs about"):
        decode_image(data, max_pixels=40_000_000, max_decode_bytes=BUDGET)
    assert loads == []  # refused before a pixel was decoded


def test_every_mode_has_a_cost_and_the_wide_modes_cost_more() -> None:
    for mode in ("1", "L", "P", "LA", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I;16B", "I", "F"):
        assert mode in MODE_BYTES and bytes_per_pixel(mode) > MODE_BYTES[mode]
    assert bytes_per_pixel("I;16") > bytes_per_pixel("L") and bytes_per_pixel("F") > bytes_per_pixel("RGB")
    assert bytes_per_pixel("some future mode") >= max(bytes_per_pixel(m) for m in MODE_BYTES)
    assert decode_cost(6000, 6000, "I;16") > BUDGET  # the bomb is over the default budget


def test_an_image_at_the_budget_decodes_and_one_just_over_is_refused() -> None:
    edge = edge_rgba_png(BUDGET)
    decoded = decode_image(edge, max_pixels=40_000_000, max_decode_bytes=BUDGET)
    assert decoded.has_alpha
    with pytest.raises(ImageTooLargeError):
        decode_image(edge, max_pixels=40_000_000, max_decode_bytes=decode_cost(decoded.width, decoded.height,
                                                                               "RGBA") - 1)


def test_the_api_refuses_the_bomb_with_image_too_large(api: ApiEnv) -> None:
    owner = api.owner()
    response = owner.upload(bomb_png16(), "user", file_name="bomb.png")
    assert response.status_code == 413 and problem_type(response) == "image_too_large", response.text
    assert "MiB" in response.json()["detail"]


def test_decodes_per_process_are_bounded(make_api: Callable[..., ApiEnv]) -> None:
    api = make_api(api_max_concurrent_decodes=2)
    owner = api.owner()
    data = to_bytes(make_person(480, 640, seed=3).image)
    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(owner.upload(data, "user").status_code))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    gate = api.server.app.state.ctx.decodes
    assert codes == [201] * 8
    assert 1 <= gate.peak <= 2 and gate.active == 0


@pytest.mark.slow
def test_twenty_concurrent_worst_case_uploads_keep_the_real_api_under_512_mib(db_url: str, tmp_path: Path) -> None:
    from api.keys import create_key
    from producer.accounts import create_user

    with psycopg.connect(db_url, autocommit=True) as conn:
        _, key = create_key(conn, scope="producer", user_id=create_user(conn))
    bodies = [edge_rgba_png(BUDGET)] * 10 + [bomb_png16()] * 10
    with api_process(db_url, tmp_path) as (base, proc):
        codes = asyncio.run(upload_all(base, key, bodies))
        peak = peak_rss_mib(proc.pid)
    assert sorted(codes) == [201] * 10 + [413] * 10
    assert peak < 512, f"peak RSS {peak:.0f} MiB"
