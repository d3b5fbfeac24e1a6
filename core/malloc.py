"""Keep freed memory for reuse instead of handing it back to the OS and faulting it in again.

glibc's malloc gives each thread but the main one an arena of its own, made of heaps of at most
64 MiB that are unmapped once entirely free, returns memory once more than the trim threshold lies
free at an arena's top, and moves its thresholds as it goes. A conversion allocates and frees some
20 MB of images and tensors on a Dramatiq worker thread, so a worker faulted about 5,000 fresh pages
back in per conversion (5,200-5,500 in a loop of the runner on a second thread, 50-70 ms per image
against 50 ms without; 1,900-5,000 per conversion in ``stayler bench latency``), depending on that
history. Pinning the thresholds alone did not stop it (the second thread's heaps were still freed
whole); one arena with pinned thresholds did, in every run (0 faults per image).

So a worker process uses the main arena for every thread (``M_ARENA_MAX`` 1: its big allocations
are few, and Python's small objects have their own allocator), allocations below
``mmap_threshold`` come from it, and up to ``trim_threshold`` of free memory stays at its top: the
process settles at its working set. Buffers larger than ``mmap_threshold`` (a 40-megapixel upload)
still get their own mapping, returned on free.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
#: glibc refuses an mmap threshold above half its largest arena heap (64 MiB on 64-bit systems).
MAX_MMAP_THRESHOLD = 32 * 2**20


def keep_freed_memory(trim_threshold: int, mmap_threshold: int = MAX_MMAP_THRESHOLD) -> bool:
    """One malloc arena and pinned trim and mmap thresholds (bytes) for this process; False where
    there is no glibc. Call it before the process starts its threads (their arenas are chosen at
    their first allocation). ``trim_threshold`` 0 leaves glibc's defaults alone.
    """
    if trim_threshold <= 0:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(M_ARENA_MAX, 1))
    applied = bool(mallopt(M_MMAP_THRESHOLD, min(mmap_threshold, MAX_MMAP_THRESHOLD, trim_threshold))) and applied
    applied = bool(mallopt(M_TRIM_THRESHOLD, min(trim_threshold, 2**31 - 1))) and applied
    if not applied:
        log.warning("could not set malloc's arenas and thresholds; freed memory goes back to the OS as glibc decides")
    return applied
