"""Fuzzing the image decoding path (Hypothesis): whatever the bytes, ``decode_image`` returns an
upright RGB array or raises an ``ImageError`` with a stable ``error_type``; nothing else escapes,
and a bounded pixel limit bounds the memory it allocates.

The slow run (``make test-slow``) tries thousands of inputs for a bounded time; the quick one runs
in the default suite.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from imaging import ImageError, decode_image
from worker.errors import ERROR_TYPES

MAX_PIXELS = 4_000_000


def _seed(fmt: str, mode: str) -> bytes:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, size=(24, 16, 4), dtype=np.uint8)
    img = Image.fromarray(arr, "RGBA").convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


SEEDS = [_seed("JPEG", "RGB"), _seed("JPEG", "CMYK"), _seed("JPEG", "L"), _seed("PNG", "RGBA"), _seed("PNG", "P"),
         _seed("PNG", "LA"), _seed("WEBP", "RGB"), _seed("WEBP", "RGBA")]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid image with a few bytes flipped, cut, duplicated or inserted."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i:i + draw(st.integers(1, 64))]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "dup":
            data[i:i] = data[i:i + draw(st.integers(1, 64))]
    return bytes(data)


INPUTS = st.one_of(mutated(), st.binary(max_size=512),
                   st.builds(lambda head, tail: head + tail, st.sampled_from([s[:32] for s in SEEDS]),
                             st.binary(max_size=256)))


def check(data: bytes) -> None:
    try:
        img = decode_image(data, max_pixels=MAX_PIXELS, max_bytes=1_000_000)
    except ImageError as exc:
        assert exc.error_type in ERROR_TYPES and not exc.transient
        assert str(exc)
        return
    assert img.rgb.dtype == np.uint8 and img.rgb.ndim == 3 and img.rgb.shape[2] == 3
    assert img.width * img.height <= MAX_PIXELS
    assert img.alpha is None or img.alpha.shape == img.rgb.shape[:2]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(INPUTS)
def test_decode_never_raises_anything_but_image_errors_quick(data: bytes) -> None:
    check(data)


@pytest.mark.slow
@settings(max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(INPUTS)
def test_decode_never_raises_anything_but_image_errors_fuzz(data: bytes) -> None:
    check(data)
