"""Content-defined chunking (FastCDC 2020) of a raw dump stream."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pyfastcdc.cy import FastCDC


@dataclass(frozen=True)
class ChunkerParams:
    """FastCDC parameters; stored in the repository config so every backup cuts alike."""

    min_size: int = 128 * 1024
    avg_size: int = 512 * 1024
    max_size: int = 2 * 1024 * 1024
    normalized_chunking: int = 1
    seed: int = 0

    def to_dict(self) -> dict[str, int | str]:
        return {
            "algorithm": "fastcdc-2020",
            "min_size": self.min_size,
            "avg_size": self.avg_size,
            "max_size": self.max_size,
            "normalized_chunking": self.normalized_chunking,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, int | str]) -> ChunkerParams:
        return cls(
            min_size=int(data["min_size"]),
            avg_size=int(data["avg_size"]),
            max_size=int(data["max_size"]),
            normalized_chunking=int(data.get("normalized_chunking", 1)),
            seed=int(data.get("seed", 0)),
        )


def iter_chunks(stream: BinaryIO, params: ChunkerParams) -> Iterator[bytes]:
    """Yield the content-defined chunks of ``stream`` until EOF (each an independent copy)."""
    cutter = FastCDC(
        params.avg_size,
        min_size=params.min_size,
        max_size=params.max_size,
        normalized_chunking=params.normalized_chunking,
        seed=params.seed,
    )
    for chunk in cutter.cut_stream(stream):
        yield bytes(chunk.data)
