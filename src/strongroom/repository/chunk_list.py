"""A backup's ordered list of chunks, held compactly: 40 bytes per chunk in memory.

A manifest lists every chunk of its backup in stream order (``[id, size]`` pairs in its
JSON). At the 16 KiB default chunk size that is ~50,000 chunks per GB of raw dump; as
``ChunkRef`` objects (an id ``str`` of 113 bytes, an ``int``, the object) a list cost
~200 bytes per chunk, ~100 MB for a 10 GB database -- and ``list`` loads every manifest.
:class:`ChunkList` keeps the 32 raw bytes of each id in one ``bytearray`` and the sizes
in an ``array('Q')``, and makes a :class:`ChunkRef` only when one is read. It is an
immutable ``Sequence[ChunkRef]``; it compares equal to any sequence of the same refs.
"""

from __future__ import annotations

import io
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, overload

ID_BYTES = 32


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk of the raw stream, in order: its keyed-hash name and plaintext size."""

    chunk_id: str
    size: int


class ChunkList(Sequence[ChunkRef]):
    """An immutable, compact list of ``ChunkRef`` (see the module docstring).

    Built from refs (``ChunkList(refs)``) or appended to by :class:`ChunkListBuilder`.
    Raises ``ValueError`` for an id that is not 64 hex characters and ``OverflowError``
    for a size outside 0 to 2**64 - 1 (the manifest parser checks both before)."""

    __slots__ = ("_ids", "_sizes")

    def __init__(self, refs: Iterable[ChunkRef] = ()) -> None:
        if isinstance(refs, ChunkList):
            self._ids: bytes | bytearray = refs._ids
            self._sizes: array[int] = refs._sizes
            return
        builder = ChunkListBuilder()
        for ref in refs:
            builder.append(ref.chunk_id, ref.size)
        self._ids, self._sizes = builder.ids, builder.sizes

    @classmethod
    def _of(cls, ids: bytes | bytearray, sizes: array[int]) -> ChunkList:
        made = cls.__new__(cls)
        made._ids, made._sizes = ids, sizes
        return made

    def __len__(self) -> int:
        return len(self._sizes)

    @overload
    def __getitem__(self, index: int) -> ChunkRef: ...

    @overload
    def __getitem__(self, index: slice) -> ChunkList: ...

    def __getitem__(self, index: int | slice) -> ChunkRef | ChunkList:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return ChunkList._of(
                    self._ids[start * ID_BYTES : stop * ID_BYTES], self._sizes[start:stop]
                )
            return ChunkList(self[i] for i in range(start, stop, step))
        size = self._sizes[index]  # IndexError, negative indexes as a list
        position = index if index >= 0 else len(self) + index
        raw = self._ids[position * ID_BYTES : (position + 1) * ID_BYTES]
        return ChunkRef(raw.hex(), size)

    def __iter__(self) -> Iterator[ChunkRef]:
        ids = memoryview(self._ids)
        for position, size in enumerate(self._sizes):
            yield ChunkRef(ids[position * ID_BYTES : (position + 1) * ID_BYTES].hex(), size)

    def text_blocks(self, entry: bytes, block: int = 4096) -> Iterator[bytes]:
        """The list as text, ``block`` chunks per piece: each chunk as ``entry % (id as
        64 hex bytes, size)`` (e.g. ``b'["%s",%d],'``). For the manifest's JSON and the
        chunk-order digest without a Python object per chunk (a 10 GB backup has ~500,000
        chunks: ~250 bytes each as ``[str, int]`` lists)."""
        ids = memoryview(self._ids)
        for first in range(0, len(self._sizes), block):
            last = min(first + block, len(self._sizes))
            hexed = ids[first * ID_BYTES : last * ID_BYTES].hex().encode()
            yield b"".join(
                entry % (hexed[i * 2 * ID_BYTES : (i + 1) * 2 * ID_BYTES], size)
                for i, size in enumerate(self._sizes[first:last])
            )

    def write_json_array(self, out: BinaryIO) -> None:
        """Write the manifest's ``chunks`` value, ``[["<id>",<size>],...]`` (compact JSON),
        to ``out`` in blocks."""
        out.write(b"[")
        first = True
        for piece in self.text_blocks(b',["%s",%d]'):
            out.write(piece[1:] if first else piece)
            first = False
        out.write(b"]")

    def json_array(self) -> bytes:
        """The manifest's ``chunks`` value as bytes (``write_json_array``)."""
        out = io.BytesIO()
        self.write_json_array(out)
        return out.getvalue()

    def ids(self) -> Iterator[str]:
        """The chunk ids, in order."""
        ids = memoryview(self._ids)
        for position in range(len(self._sizes)):
            yield ids[position * ID_BYTES : (position + 1) * ID_BYTES].hex()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChunkList):
            return self._ids == other._ids and self._sizes == other._sizes
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))  # as the tuple of the same refs, which it equals

    def __repr__(self) -> str:
        return f"ChunkList({len(self)} chunks)"


class ChunkListBuilder:
    """Appends chunks in order; :meth:`build` makes the ``ChunkList`` without a copy."""

    __slots__ = ("ids", "sizes")

    def __init__(self) -> None:
        self.ids = bytearray()
        self.sizes: array[int] = array("Q")

    def append(self, chunk_id: str, size: int) -> None:
        try:
            raw = bytes.fromhex(chunk_id)
        except ValueError:
            raw = b""
        if len(raw) != ID_BYTES or raw.hex() != chunk_id:  # lowercase, no spaces: round-trips
            raise ValueError(f"{chunk_id[:80]!r} is not a chunk id (64 lowercase hex)")
        self.sizes.append(size)  # OverflowError/TypeError before the id is added
        self.ids += raw

    def __len__(self) -> int:
        return len(self.sizes)

    def build(self) -> ChunkList:
        """The list; the builder must not be appended to afterwards."""
        return ChunkList._of(self.ids, self.sizes)
