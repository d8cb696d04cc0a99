"""glibc's malloc held in the state a long run settles into, so that a few timed epochs measure what
hundreds would.

Why: glibc hands out large blocks with ``mmap`` and returns freed heap tops to the system, and it
raises both thresholds only as blocks are freed. Until it has, the large temporaries of every step
(the dense gradients of the embedding tables, several MB each) are fresh pages that the kernel
faults in and zeroes. How long that lasts differs between processes. Measured with RecBole 1.2.1's
BPR on Toys, one thread: its first 5 to 10 epochs took 0.62-0.78 s and the later ones 0.42-0.47 s,
so ``peer_recbole.py --quick`` (5 epochs) put the package at 2.95x RecBole while the full mode
(up to 200 epochs) gave 1.98x. With both thresholds fixed as here, every epoch of RecBole's from the
second on took 0.45-0.50 s, and the package's epochs were unchanged (0.21-0.25 s).

Fixing one threshold alone is worse than leaving both alone: glibc then stops adapting the other
(measured 1.0-1.2 s per epoch for both libraries), so both are always set together.
"""

from __future__ import annotations

import ctypes
import ctypes.util

MMAP_THRESHOLD = 256 * 2**20  # blocks below this come from the heap, not from fresh mmap pages
TRIM_THRESHOLD = 2**30  # free memory at the top of the heap is kept up to this much

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def environment() -> dict[str, str]:
    """Variables that give a child process (glibc) the same settings from its start."""
    return {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}


def settle_here() -> bool:
    """Apply the settings to this process; False where the C library is not glibc or refuses them."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
