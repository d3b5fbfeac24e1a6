"""Producers: register images and create, cancel and inspect conversions.

Everything goes through the SQL functions (``create_conversion()`` and its siblings), so this
Python API, the CLI and a service calling plain SQL obey the same rules.
"""

from producer.conversions import cancel, status, submit
from producer.errors import ProducerError
from producer.images import ImageRecord, register_image
from producer.wait import wait
from producer.wake import Waker

__all__ = ["ImageRecord", "ProducerError", "Waker", "cancel", "register_image", "status", "submit", "wait"]
