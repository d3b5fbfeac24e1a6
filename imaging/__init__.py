"""Image decode, validation, encode and thumbnail helpers shared by the producer and the runner.

This package must not import onnxruntime or onnx: the producer (and any process that forks
workers) imports it.
"""

from imaging.decode import DEFAULT_MAX_PIXELS, MIME_TYPES, SUPPORTED_FORMATS, DecodedImage, decode_image, sniff_format
from imaging.encode import ENCODE_MIME, encode_image, make_thumbnail, normalise_format
from imaging.errors import ImageDecodeError, ImageError, ImageTooLargeError, UnsupportedFormatError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ENCODE_MIME",
    "MIME_TYPES",
    "SUPPORTED_FORMATS",
    "DecodedImage",
    "ImageDecodeError",
    "ImageError",
    "ImageTooLargeError",
    "UnsupportedFormatError",
    "decode_image",
    "encode_image",
    "make_thumbnail",
    "normalise_format",
    "sniff_format",
]
