"""Errors raised while reading or writing images.

Every error carries a stable ``error_type`` code (stored in ``conversion_jobs.error_type``) and a
``transient`` flag: bad input never heals by retrying, so none of these are transient.
"""

from __future__ import annotations


class ImageError(Exception):
    """Base class of every image input/output error; the message is readable by a person."""

    error_type: str = "invalid_image"
    transient: bool = False


class UnsupportedFormatError(ImageError):
    """The bytes are an image, or something else, in a format other than JPEG, PNG or WebP."""

    error_type = "unsupported_format"


class ImageDecodeError(ImageError):
    """The bytes claim a supported format but do not decode (truncated, corrupt, empty)."""

    error_type = "invalid_image"


class ImageTooLargeError(ImageError):
    """The image exceeds the configured pixel or byte limit (decompression-bomb guard)."""

    error_type = "image_too_large"
