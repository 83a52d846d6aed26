"""zstd compression of chunks. Compressor objects are per thread (they are not thread-safe)."""

from __future__ import annotations

import threading

import zstandard

# Adaptive: a chunk is compressed at the repository's level when the workers keep up
# with the dump, at its fast level when chunks queue up (like ``zstd --adapt``). New
# repositories use level 1 for both (issue 19): on 16 KiB chunks of the benchmark's dump
# (206 MB, 2026-12-01) level 1 gave ratio 2.711 for 1.30 CPU-s, level 3 2.706 for 1.52,
# level 4 2.754 for 2.83, level 6 2.823 for 5.25 -- 4x the CPU for 4 % less stored, and on
# 2 cores that CPU is taken from pg_dump and its server (design.md, "The floor on 2
# cores"). Repositories created with level 6 keep it (their config records it).
DEFAULT_LEVEL = 1
FAST_LEVEL = 1
_MAX_CHUNK_OUTPUT = 64 * 1024 * 1024


class ChunkCompressor:
    """Compress and decompress single chunks as standard zstd frames (``zstd -d`` reads them)."""

    def __init__(self, level: int = DEFAULT_LEVEL, fast_level: int = FAST_LEVEL) -> None:
        self.level = level
        self.fast_level = min(fast_level, level)
        self._local = threading.local()

    def _compressor(self, level: int) -> zstandard.ZstdCompressor:
        cache: dict[int, zstandard.ZstdCompressor] | None = getattr(self._local, "c", None)
        if cache is None:
            cache = self._local.c = {}
        compressor = cache.get(level)
        if compressor is None:
            compressor = cache[level] = zstandard.ZstdCompressor(
                level=level, write_content_size=True
            )
        return compressor

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        decompressor: zstandard.ZstdDecompressor | None = getattr(self._local, "d", None)
        if decompressor is None:
            decompressor = zstandard.ZstdDecompressor()
            self._local.d = decompressor
        return decompressor

    def compress(self, data: bytes, *, fast: bool = False) -> bytes:
        """One zstd frame, at the fast level when ``fast`` (the pipeline is backed up)."""
        return self._compressor(self.fast_level if fast else self.level).compress(data)

    def decompress(self, data: bytes) -> bytes:
        """Decompress one frame; raises ``zstandard.ZstdError`` on damaged input."""
        return self._decompressor().decompress(data, max_output_size=_MAX_CHUNK_OUTPUT)
