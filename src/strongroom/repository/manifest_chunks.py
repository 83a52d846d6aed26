"""Read a manifest's chunk list without a Python object per chunk.

A manifest's JSON lists every chunk of its backup as ``["<64 hex id>",<size>]``: ~50,000
entries per GB of raw dump at the 16 KiB default. ``json.loads`` makes a list, a ``str``
and an ``int`` of each (~250 bytes per chunk, ~130 MB for a 10 GB database, at once) before
the manifest keeps them as a 40-bytes-per-chunk :class:`ChunkList`; and ``list``, the web
UI and every restore read manifests.

:func:`split_chunks` walks the document's top level with ``json``'s own decoder, takes the
``chunks`` value only when it is in the compact form strongroom writes
(``Manifest.to_json``: no spaces, lowercase hex ids, sizes without leading zeros), and reads
it in blocks straight into a ``ChunkList``. Anything else -- other spacing, a duplicate
``chunks`` key, text that is not UTF-8, a document ``json`` would refuse -- gives ``None``,
and the caller parses the whole document as before (the same result or the same error).
"""

from __future__ import annotations

import json
import re

from strongroom.repository.chunk_list import ChunkList, ChunkListBuilder

_SPACE_CHARS = " \t\n\r"
_ENTRY = r'\["[0-9a-f]{64}",(?:0|[1-9][0-9]{0,18})\]'
#: up to 4,096 entries joined by commas (a regex over the whole array kept ~250 bytes of
#: matcher state per entry)
_BLOCK = re.compile(rf"{_ENTRY}(?:,{_ENTRY}){{0,4095}}")
_PARTS = re.compile(r'\["([0-9a-f]{64})",([0-9]+)\]')


def split_chunks(text: str, max_size: int) -> tuple[str, ChunkList] | None:
    """``text`` (a manifest's JSON) with its top-level ``chunks`` value replaced by ``[]``,
    and that value as a ``ChunkList``; ``None`` when the document or its ``chunks`` value
    is not in the form this reads (see the module docstring). Sizes of ``max_size`` or more
    also give ``None`` (the full parser names the entry)."""
    found = _chunks_span(text, max_size)
    if found is None:
        return None
    (start, end), chunks = found
    return text[:start] + "[]" + text[end:], chunks


def _chunks_span(text: str, max_size: int) -> tuple[tuple[int, int], ChunkList] | None:
    """Where the top-level ``chunks`` value lies in ``text``, and the list, when it is in
    the compact form."""
    decoder = json.JSONDecoder()
    chunks: ChunkList | None = None
    at = _skip(text, 0)
    if text[at : at + 1] != "{":
        return None
    at = _skip(text, at + 1)
    span: tuple[int, int] | None = None
    try:
        while text[at : at + 1] == '"':
            key, at = decoder.raw_decode(text, at)  # a JSON string: the key
            at = _skip(text, at)
            if text[at : at + 1] != ":":
                return None
            at = _skip(text, at + 1)
            if key == "chunks":
                read = _read_compact(text, at, max_size)
                if chunks is not None or read is None:
                    return None  # a second "chunks" (json keeps the last) or another form
                chunks, end = read
                span = (at, end)
                at = end
            else:
                _value, at = decoder.raw_decode(text, at)
            at = _skip(text, at)
            if text[at : at + 1] == ",":
                at = _skip(text, at + 1)
                continue
            if text[at : at + 1] != "}":
                return None
            at = _skip(text, at + 1)
            if at != len(text) or span is None or chunks is None:
                return None
            return span, chunks
    except (ValueError, RecursionError):  # not JSON: the full parser says so
        return None
    return None


def _skip(text: str, at: int) -> int:
    """Past the JSON whitespace at ``at``."""
    while at < len(text) and text[at] in _SPACE_CHARS:
        at += 1
    return at


def _read_compact(text: str, at: int, max_size: int) -> tuple[ChunkList, int] | None:
    """The compact array at ``at`` (``[`` there) and the index past it; ``None`` when it
    is not one, or holds a size of ``max_size`` or more."""
    if text[at : at + 1] != "[":
        return None
    builder = ChunkListBuilder()
    at += 1
    if text[at : at + 1] == "]":
        return builder.build(), at + 1
    while True:
        block = _BLOCK.match(text, at)
        if block is None:
            return None
        for found in _PARTS.finditer(text, at, block.end()):
            size = int(found.group(2))
            if size >= max_size:
                return None
            builder.append(found.group(1), size)
        at = block.end()
        if text[at : at + 1] == "]":
            return builder.build(), at + 1
        if text[at : at + 1] != ",":
            return None
        at += 1
