"""Process-wide memory settings for long runs (applied by the jobs that run the backbone).

glibc's malloc, left to its defaults, holds on to freed memory in a pipeline like ours: the
backbone's activations (tens of MB each) and TV-L1's work arrays are allocated and freed once per
chunk from two threads, glibc raises its mmap threshold after the first large free (up to 32 MB),
so later tensors come from per-thread heap arenas that fragment and are rarely returned to the
system. Peak RSS then creeps up with the video's length. Two settings stop that:

- ``M_MMAP_THRESHOLD`` fixed at 16 MiB: every large buffer (the backbone's activations) is its
  own mapping, returned to the system when freed (fixing the threshold also turns off glibc's
  dynamic raise);
- ``M_ARENA_MAX`` 2: two heap arenas for the smaller allocations of all threads.

Measured (BENCHMARKS.md, ``tal detect`` on a 60 s clip, two runs each): glibc's defaults 41-44 s
and 1603-1627 MB peak; a 1 MiB threshold 52-58 s and 1441-1443 MB (TV-L1's 1.6 MB temporaries
then each cost an mmap and page faults); 16 MiB 44-46 s and 1479-1501 MB.

``tal extract`` (long batches of long videos, two streams) then lowers the threshold to
``EXTRACT_MMAP_THRESHOLD`` (4 MiB): its peak stays flatter over the length than at 16 MiB (and
than at 1 MiB), and TV-L1's ~1.6 MB work arrays stay on the heap instead of costing an mmap and
page faults each (the 1 vs 10 min figures of the three thresholds: BENCHMARKS.md, "Extraction").
``tal detect`` keeps 16 MiB (speed first).

Environment variables the user set (``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_``) win. A
library user who embeds :class:`~tal_pipeline.features.FeatureExtractor` can call
:func:`tune_malloc` too; nothing here runs on import.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)
M_ARENA_MAX = -8
EXTRACT_MMAP_THRESHOLD = 4 << 20  # bytes: what ``tal extract`` uses (module docstring)


@functools.lru_cache(maxsize=1)
def _glibc_mallopt():
    """glibc's ``mallopt``, or None. Looked up once per process: ``platform.libc_ver`` reads the
    interpreter's binary, and ``ctypes.util.find_library`` would run ``ldconfig -p`` every call;
    glibc's soname is fixed, so the library is opened by it."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None


def tune_malloc(mmap_threshold: int = 16 << 20, arenas: int = 2) -> bool:
    """Apply the settings above on glibc; returns True if both were applied (False elsewhere)."""
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    ok = True
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        ok &= bool(mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)))
    if "MALLOC_ARENA_MAX" not in os.environ:
        ok &= bool(mallopt(M_ARENA_MAX, int(arenas)))
    log.debug("malloc tuned: mmap threshold %d, arenas %d (%s)", mmap_threshold, arenas, ok)
    return ok


def peak_rss_kib() -> int:
    """This process's own peak resident set size, KiB: ``VmHWM`` of ``/proc/self/status``.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: on Linux, ``exec`` keeps the high-water mark of the
    address space it replaces, and Python's ``subprocess`` starts children with ``vfork``, whose
    address space is the parent's, so a child's ``ru_maxrss`` (and ``wait4``'s) is at least its
    parent's peak (a child of a 3 GB process reads 3 GB for ``/bin/true``). ``VmHWM`` belongs to
    the process's own address space. Falls back to ``ru_maxrss`` where there is no ``/proc``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])  # "VmHWM:  123456 kB"
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
