"""Keep freed memory in the process for reuse (glibc `mallopt`), for data-loader workers.

A worker allocates and frees the same few buffers for every clip: 2 MB of decoded frames for a
340x256 training clip, 8 MB decoded and 14 MB of crops for a 3x4-view test clip. glibc serves
allocations above its mmap threshold with fresh `mmap` pages and returns freed heap above its trim
threshold to the OS, so every clip paid again for zero-filled pages: about 600-1,500 page faults a
clip. With fixed thresholds above those sizes the buffers come back from the heap, and one process
loads 20 % (training) to 30 % (3x4-view test) more pre-processed clips/s here (docs/data.md,
"Throughput"). The cost: glibc keeps up to `trim_threshold` bytes of freed memory at the top of the
heap before it returns them (by default, twice the largest buffer it had mmapped). Not glibc (musl,
macOS): nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h> parameter numbers
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 << 20  # above a 3x4-view test clip's buffers, with room for longer clips
TRIM_THRESHOLD = 128 << 20


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018  (present in glibc only)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


def reuse_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Serve allocations up to `mmap_threshold` bytes from the heap and keep up to `trim_threshold`
    bytes of freed heap; True when glibc accepted both."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold))
