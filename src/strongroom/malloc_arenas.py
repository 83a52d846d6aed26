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
"""

from __future__ import annotations

import ctypes
import logging
import threading

log = logging.getLogger("strongroom")

M_ARENA_MAX = -8  # glibc malloc.h
ARENAS = 2

_lock = threading.Lock()
_done = False


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Limit this process to ``arenas`` malloc arenas (once; later calls do nothing).
    Returns whether glibc accepted it. Never raises."""
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
            return bool(mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(arenas)))
        except OSError:
            log.debug("mallopt is not available: malloc arenas not limited", exc_info=True)
            return False
