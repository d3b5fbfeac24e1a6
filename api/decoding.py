"""A bound on the image decodes one API process runs at once.

Each decode may take up to ``STAYLER_MAX_DECODE_BYTES`` (checked from the header, ``imaging.budget``)
plus the upload's bytes, so the process's memory for uploads is at most
``STAYLER_API_MAX_CONCURRENT_DECODES`` × (that budget + ``STAYLER_MAX_IMAGE_BYTES``), however many
uploads arrive: the others wait here, their bodies still in their spool files.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class DecodeGate:
    """At most ``limit`` uploads read into memory and decoded at once in this process."""

    def __init__(self, limit: int) -> None:
        """A gate admitting ``limit`` at a time."""
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)
        self.active = 0
        #: Most decodes seen running at once (for tests and the boundary bench).
        self.peak = 0

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Wait for a slot and hold it for the block."""
        async with self._slots:
            self.active += 1
            self.peak = max(self.peak, self.active)
            try:
                yield
            finally:
                self.active -= 1
