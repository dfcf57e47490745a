"""What the daemon does once its first wave of dials is over.

After the first interval the long-lived objects are made (channels, workers,
certificates) and the dial wave's transients (handshake buffers, collected
chains, first replies) are freed. Two things keep costing after that, and
settle_after_first_wave() ends both:

* the cyclic GC walks every long-lived object in each full collection:
  gc.freeze() moves them out of its sight (steady CPU 12-20 % lower at 5,000
  agents, bench.fleet);
* glibc keeps the freed pages of the wave in its heaps: malloc_trim(0) gives
  them back (about 16 KiB per agent at 2,000 agents; without it 10,000 agents
  held ~1.3 GiB, bench/README.md, issue 22). Where there is no glibc, nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

__all__ = ["settle_after_first_wave"]


def settle_after_first_wave() -> int:
    """Freeze the objects alive now out of the GC's sight and return freed
    heap pages to the OS; returns how many objects were frozen.

    >>> settle_after_first_wave() >= 0  # doctest: +SKIP
    True
    """
    gc.collect()
    gc.freeze()
    _malloc_trim()
    return gc.get_freeze_count()


def _malloc_trim() -> None:
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
