"""Fewer glibc malloc arenas for the processes that run thread pools over the data.

glibc gives threads that contend for the allocator arenas of their own (up to 8 per
core) and returns little of their freed memory to the system, so a backup's or
restore's worker threads, each allocating and freeing 16 KiB chunks, 16 MiB packs and
zstd frames, left memory spread over many arenas: measured with the benchmark
(``bench/measure_memory.py``, 1 GB of raw text values, 2 cores, 2026-12-01) a backup
peaked at ~209 MB RSS and a restore at ~210 MB, and 154 / 183 MB with
``MALLOC_ARENA_MAX=2``. :func:`limit_arenas` sets that limit from inside the process
(``mallopt(M_ARENA_MAX, 2)``, glibc's documented equivalent of the variable); it must run
before the worker threads start. Elsewhere (musl, macOS) it does nothing.

It also fixes glibc's mmap threshold at 1 MiB (``mallopt(M_MMAP_THRESHOLD)``). By default
the threshold rises to the size of the largest mmapped block freed (up to 32 MiB), so
after the first 16 MiB pack was freed, later packs came from the arenas and their freed
space stayed in the process: a first backup of a 10 GB database (one table of 1 MiB text
values, 525,355 chunks, 2026-12-01) peaked at 259-289 MB RSS, and at 192 MB with the
threshold fixed (``MALLOC_MMAP_THRESHOLD_=1048576``; system CPU +5.6 s of 131 s, each
pack's pages are fresh).
"""

from __future__ import annotations

import ctypes
import logging
import threading

log = logging.getLogger("strongroom")

M_ARENA_MAX = -8  # glibc malloc.h
M_MMAP_THRESHOLD = -3  # glibc malloc.h
ARENAS = 2
MMAP_THRESHOLD = 1024 * 1024  # bytes: blocks this large are mmapped, and unmapped when freed

_lock = threading.Lock()
_done = False


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Limit this process to ``arenas`` malloc arenas and fix the mmap threshold at
    ``MMAP_THRESHOLD`` (once; later calls do nothing). Returns whether glibc accepted
    both. Never raises."""
    global _done
    with _lock:
        if _done:
            return False
        _done = True
        try:
            # the process's own symbols: libc is loaded (find_library would run ldconfig)
            mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
            if mallopt is None:
                return False
            arenas_set = mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(arenas))
            threshold_set = mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(MMAP_THRESHOLD))
            return bool(arenas_set) and bool(threshold_set)
        except OSError:
            log.debug("mallopt is not available: malloc arenas not limited", exc_info=True)
            return False
