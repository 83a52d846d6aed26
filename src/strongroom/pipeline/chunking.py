"""Content-defined chunking (FastCDC 2020) of a raw dump stream, with forced cuts.

A stream's producer may know where its parts begin (a PostgreSQL custom-format dump: the
archive header, the TOC, the table data; ``engines/postgresql/dump_layout.py``). It passes
those offsets as *forced cuts*: a chunk always ends exactly there, and content-defined
chunking starts afresh after each one, as if a new stream began. So a part that changes on
every run (a header holding the dump's time) is a chunk of its own, and the part after it
is cut exactly as in the previous backup. Forced cuts only move chunk boundaries: the chunks
still concatenate to the stream, byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from pyfastcdc.cy import FastCDC

# What FastCDC 2020 (pyfastcdc) accepts; the repository config is checked against these
# before anything is cut, so a damaged config says which field is wrong.
MIN_SIZE_RANGE = (64, 1024 * 1024)
AVG_SIZE_RANGE = (256, 4 * 1024 * 1024)
MAX_SIZE_RANGE = (1024, 16 * 1024 * 1024)
NORMALIZED_CHUNKING_RANGE = (0, 3)
SEED_RANGE = (0, 2**63 - 1)


class ChunkerParamsInvalid(ValueError):
    """A chunker parameter is missing, not a whole number, or out of its range; the
    message names the field (``chunker.min_size``) and the allowed range."""


@dataclass(frozen=True)
class ChunkerParams:
    """FastCDC parameters (bytes); stored in the repository config so every backup cuts
    alike. The defaults are what ``init`` writes into a new repository: 16 KiB average,
    FastCDC's min = avg/4 and max = avg*4 (chosen from ``bench/results/chunk-size.md``:
    8.85 % new after a day of churn, the only power of two under the 10 % target;
    docs/design.md "Parameters and measurements"). Existing repositories keep theirs."""

    min_size: int = 4 * 1024
    avg_size: int = 16 * 1024
    max_size: int = 64 * 1024
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

    def validate(self) -> ChunkerParams:
        """Return ``self``; raise ``ChunkerParamsInvalid`` naming the field and its range
        when FastCDC would refuse (or misread) these parameters."""
        for name, value, (low, high) in (
            ("min_size", self.min_size, MIN_SIZE_RANGE),
            ("avg_size", self.avg_size, AVG_SIZE_RANGE),
            ("max_size", self.max_size, MAX_SIZE_RANGE),
            ("normalized_chunking", self.normalized_chunking, NORMALIZED_CHUNKING_RANGE),
            ("seed", self.seed, SEED_RANGE),
        ):
            if not low <= value <= high:
                raise ChunkerParamsInvalid(
                    f"chunker.{name} is {value}, outside the allowed range {low} to {high}"
                )
        if not self.min_size <= self.avg_size <= self.max_size:
            raise ChunkerParamsInvalid(
                f"chunker.avg_size is {self.avg_size}, outside the allowed range "
                f"chunker.min_size ({self.min_size}) to chunker.max_size ({self.max_size})"
            )
        return self

    @classmethod
    def from_dict(cls, data: object) -> ChunkerParams:
        """Read and validate the config's ``chunker`` object (``ChunkerParamsInvalid``)."""
        if not isinstance(data, dict):
            raise ChunkerParamsInvalid("chunker is not an object")
        if data.get("algorithm", "fastcdc-2020") != "fastcdc-2020":
            raise ChunkerParamsInvalid(
                f"chunker.algorithm {str(data.get('algorithm'))[:40]!r} is not fastcdc-2020"
            )

        def number(name: str, default: int | None = None) -> int:
            value = data.get(name, default)
            if value is None:
                raise ChunkerParamsInvalid(f"chunker.{name} is missing")
            if isinstance(value, bool) or not isinstance(value, int):
                raise ChunkerParamsInvalid(f"chunker.{name} is not a whole number")
            return value

        return cls(
            min_size=number("min_size"),
            avg_size=number("avg_size"),
            max_size=number("max_size"),
            normalized_chunking=number("normalized_chunking", 1),
            seed=number("seed", 0),
        ).validate()


class ByteSource(Protocol):
    """What the chunker reads: ``read(n)`` returns up to ``n`` bytes, ``b""`` at EOF."""

    def read(self, n: int, /) -> bytes: ...


class _Bounded:
    """Reads at most ``limit`` bytes of ``source``; counts what it read."""

    def __init__(self, source: ByteSource, limit: int) -> None:
        self._source = source
        self._limit = limit
        self.count = 0

    def readinto(self, buffer: memoryview) -> int:
        want = min(len(buffer), self._limit - self.count)
        if want <= 0:
            return 0
        data = self._source.read(want)
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)


def iter_chunks(
    stream: ByteSource | BinaryIO, params: ChunkerParams, cuts: Iterable[int] = ()
) -> Iterator[bytes]:
    """Yield the content-defined chunks of ``stream`` until EOF (each an independent copy).

    ``cuts``: forced cut points, byte offsets from the start of the stream, strictly
    increasing and > 0. A chunk ends exactly at each (even one shorter than
    ``params.min_size``), and chunking restarts there. A cut at or past EOF is ignored.
    Raises ``ValueError`` for a cut that is not above the previous one (a producer's bug).
    """
    cutter = FastCDC(
        params.avg_size,
        min_size=params.min_size,
        max_size=params.max_size,
        normalized_chunking=params.normalized_chunking,
        seed=params.seed,
    )
    position = 0
    for cut in cuts:
        if cut <= position:
            raise ValueError(f"forced cut {cut} is not after offset {position}")
        part = _Bounded(stream, cut - position)
        for chunk in cutter.cut_stream(part):
            yield bytes(chunk.data)
        position += part.count
        if position < cut:  # EOF before the cut
            return
    for chunk in cutter.cut_stream(stream):
        yield bytes(chunk.data)
