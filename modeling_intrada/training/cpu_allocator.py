"""Keep freed memory inside the process on CPU (glibc malloc), so an iteration does not page-fault.

On Linux, glibc serves large blocks with `mmap` and trims the top of the heap when enough is free: every
block handed back goes to the operating system, and the next iteration touches fresh pages. For a
DeepLab-v2 training step on a CPU that is 30,000 to 120,000 minor page faults per iteration, depending on
the heap's history, and 10 to 25 % of the iteration's time (`benchmarks/README.md`). Two `mallopt` calls,
no mmap for large blocks and no trimming, keep freed memory for reuse: the process stays at its peak
resident size, which is what a training process reaches anyway.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_LARGEST_INT = 2**31 - 1


def keep_freed_memory() -> bool:
    """Tell glibc malloc to keep freed memory in the process: no mmap for large blocks, no heap trimming.

    Applies to the calling process from now on (and to processes it forks later). The mathematics of
    training is unaffected; only where memory comes from changes.

    Returns:
        True if the settings were applied; False where the C library is not glibc (macOS, Windows, musl),
        which is left as it is.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only  # noqa: B018
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, _LARGEST_INT) == 1
