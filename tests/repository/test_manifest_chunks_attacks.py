"""Attacks on the manifest reader's fast path (manifest_chunks.py): for any input,
``Manifest.from_json`` gives what the plain ``json.loads`` path gives (the same manifest, or
the same kind of error: ManifestDamaged / UnsupportedFormat). The reference is the same
function with ``_split_chunks`` patched to answer ``None`` (the fallback)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom.errors import ManifestDamaged, UnsupportedFormat
from strongroom.repository import manifest as manifest_module
from strongroom.repository.chunk_list import ChunkRef
from strongroom.repository.manifest import Manifest
from tests.helpers import sample_manifest

ID = "ab" * 32
MAX = 2**63


def _manifest(refs: list[ChunkRef]) -> Manifest:
    return sample_manifest(
        refs,
        engine="sqlite",
        engine_version="3",
        tool_version="3",
        dump_format="sqlite-backup",
        tags=("t",),
        raw_size=len(refs),
        stored_new_bytes=1,
    )


def _outcome(read: Callable[[bytes], Manifest], raw: bytes) -> object:
    """What reading ``raw`` gives: the manifest's fields (chunks as plain pairs), or the
    kind of error."""
    try:
        found = read(raw)
    except (ManifestDamaged, UnsupportedFormat) as exc:
        return type(exc).__name__
    fields = dict(vars(found))
    fields["chunks"] = [(r.chunk_id, r.size) for r in found.chunks]
    return fields


def _reference(raw: bytes) -> object:
    saved = manifest_module._split_chunks
    manifest_module._split_chunks = lambda _raw: None
    try:
        return _outcome(lambda r: Manifest.from_json(r, "m"), raw)
    finally:
        manifest_module._split_chunks = saved


def _same(raw: bytes) -> None:
    fast = _outcome(lambda r: Manifest.from_json(r, "m"), raw)
    assert fast == _reference(raw), raw[:300]


GOOD = _manifest([ChunkRef(ID, 5), ChunkRef("cd" * 32, 0)]).to_json().decode()
HEAD, _, TAIL = GOOD.partition(f'"chunks":[["{ID}",5],["{"cd" * 32}",0]]')
assert TAIL, "the written form changed: update HEAD/TAIL"


def _with_chunks(value: str, head: str = HEAD, tail: str = TAIL) -> bytes:
    return (head + '"chunks":' + value + tail).encode()


CHUNK_VALUES = [
    "[]",
    f'[["{ID}",5]]',
    f'[ ["{ID}",5]]',
    f'[["{ID}", 5]]',
    f'[["{ID}",5] ]',
    f'[["{ID}",\t5]]',
    f'[["{ID}",05]]',
    f'[["{ID}",-1]]',
    f'[["{ID}",-0]]',
    f'[["{ID}",1.0]]',
    f'[["{ID}",1e3]]',
    f'[["{ID}",1E3]]',
    f'[["{ID}",NaN]]',
    f'[["{ID}",Infinity]]',
    f'[["{ID}",-Infinity]]',
    f'[["{ID}",true]]',
    f'[["{ID}",null]]',
    f'[["{ID}",{MAX - 1}]]',
    f'[["{ID}",{MAX}]]',
    f'[["{ID}",{MAX * 10}]]',
    f'[["{ID}",{"9" * 19}]]',
    f'[["{ID}",{"1" * 5000}]]',
    f'[["{ID.upper()}",5]]',
    f'[["{ID[:63]}",5]]',
    f'[["{ID}a",5]]',
    f'[["\\u0061{ID[1:]}",5]]',
    f'[["{ID}",5,6]]',
    f'[["{ID}"]]',
    f'[["{ID}",5],]',
    f'[["{ID}",5]',
    f'[[5,"{ID}"]]',
    f'{{"{ID}":5}}',
    '"chunks"',
    "null",
    f'[["{ID}",5],["{ID}",5]]',
]


@pytest.mark.parametrize("value", CHUNK_VALUES)
def test_odd_chunk_lists_read_as_json_loads_reads_them(value: str) -> None:
    _same(_with_chunks(value))


@pytest.mark.parametrize(
    "raw",
    [
        GOOD.encode(),
        b"\xef\xbb\xbf" + GOOD.encode(),  # a BOM: json.loads of bytes skips it
        GOOD.encode() + b"x",  # trailing garbage
        GOOD.encode() + b"\n\n \t\r",
        b" \n" + GOOD.encode(),
        GOOD.encode() + b"{}",
        GOOD.encode()[:-5],  # cut
        GOOD.encode().replace(b'"chunks"', b'"\\u0063hunks"'),
        GOOD.encode().replace(b'"chunks"', b'"\\u0063hunks":[],"chunks"'),
        GOOD.encode().replace(b'"chunks"', b'"chunks":[],"chunks"'),
        GOOD.encode().replace(b'"chunks"', b'"chunks":7,"chunks"'),
        GOOD.encode().replace(b'"chunks":[[', b'"chunks":[["x",1]],"\\u0063hunks":[['),
        GOOD.encode().replace(b'"chunks"', b'"x":{"chunks":[]},"chunks"'),
        GOOD.encode().replace(
            b'"chunks"', b'"x":' + b"[" * 100_000 + b"]" * 100_000 + b',"chunks"'
        ),
        GOOD.encode().replace(b'"chunks"', b'"x":' + b"[" * 500 + b"]" * 500 + b',"chunks"'),
        GOOD.encode().replace(b'"chunks"', b'"x":NaN,"chunks"'),
        GOOD.encode().replace(b'"chunks"', b'"x":"\\ud800","chunks"'),  # lone surrogate escape
        GOOD.encode().replace(b'"chunks"', b'"x":"\xed\xa0\x80","chunks"'),  # UTF-8 surrogate
        GOOD.encode().replace(b'"chunks"', b'"x":"\xff","chunks"'),  # not UTF-8
        GOOD.encode().replace(b'"chunks"', b'"x":1,,"chunks"'),
        GOOD.encode().replace(b'"chunks"', b'"x" 1,"chunks"'),
        GOOD.encode().replace(b'"chunks"', b'"x":1 "chunks"'),
        GOOD.encode().replace(b'"chunks"', b'"x":' + b"1" * 5000 + b',"chunks"'),
        GOOD.encode().replace(b'"chunks"', b'"x":1x,"chunks"'),
        GOOD.encode().replace(b'"chunks"', b'1:1,"chunks"'),
        GOOD.encode().replace(b'"chunks"', b'"chunks"\n:'),
        GOOD.encode().replace(b'"chunks":', b'"chunks" :\n'),
        GOOD.encode().replace(b'"raw_size":', b'"raw_size":"x","raw_size":'),
        GOOD.encode().replace(b'"raw_size":2', b'"raw_size":2.0'),
        GOOD.encode().replace(b'"raw_size":2', b'"raw_size":2,"raw_size":-1'),
        GOOD.encode().replace(b'"version":', b'"version":9,"version":'),
        GOOD.encode().replace(b'"version":', b'"v":0,"version":9,"\\u0076ersion":'),
        GOOD.encode().replace(b'"format":', b'"format":1,"format":'),
        GOOD.encode().replace(b"}\n", b",}\n"),
        GOOD.encode().replace(b"{", b"[", 1),
        GOOD.encode("utf-16"),
        GOOD.encode("utf-32-le"),
        GOOD.encode().replace(b"}\n", b"}\x00"),
        GOOD.encode().replace(b"}\n", b"}\x0c"),  # a form feed: not JSON whitespace
        GOOD.encode().replace(b"}\n", b"}\xc2\xa0"),  # no-break space: not JSON whitespace
        b"{}",
        b"",
        b"[]",
        b'{"chunks":[]}',
        b'{"chunks":[]',
    ],
)
def test_odd_documents_read_as_json_loads_reads_them(raw: bytes) -> None:
    _same(raw)


@pytest.mark.parametrize("count", [4095, 4096, 4097, 8192, 8193])
def test_block_boundaries_with_one_odd_entry(count: int) -> None:
    rng = random.Random(count)
    entries = [f'["{rng.randbytes(32).hex()}",{rng.randrange(100_000)}]' for _ in range(count)]
    _same(_with_chunks("[" + ",".join(entries) + "]"))
    for at in (0, 4095, 4096, count - 1):
        if at >= count:
            continue
        for odd in (
            entries[at].replace(",", ", "),
            entries[at][:-1] + "0]" if not entries[at].endswith(",0]") else entries[at],
            entries[at].replace('",', '",0'),
            entries[at].upper(),
            entries[at] + ",",
        ):
            spoiled = [*entries[:at], odd, *entries[at + 1 :]]
            _same(_with_chunks("[" + ",".join(spoiled) + "]"))


_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
_hexes = st.sampled_from([ID, "cd" * 32, ID.upper(), ID[:63], ID + "0", "0" * 64])
_sizes = st.one_of(
    st.integers(min_value=-2, max_value=2**64),
    st.sampled_from([MAX - 1, MAX, 0, 1]),
    st.floats(min_value=0, max_value=10),
)
_entry = st.one_of(st.tuples(_hexes, _sizes).map(list), _json_values)
_space = st.sampled_from(["", "", "", " ", "\n", "\t", "\r", "\x0c", "\u00a0"])


def _spell(value: object, space: str, compact: bool) -> str:
    if compact:
        return json.dumps(value, separators=(",", ":"))
    return json.dumps(value, separators=(space + "," + space, space + ":" + space))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chunks=st.one_of(st.lists(_entry, max_size=6), _json_values),
    extra=st.dictionaries(
        st.sampled_from(["chunks", "x", "raw_size", "version", "id", "\u0063"]),
        _json_values,
        max_size=3,
    ),
    where=st.sampled_from(["before", "after", "none"]),
    compact=st.booleans(),
    space=_space,
    lead=_space,
    trail=_space,
    escape_key=st.booleans(),
)
def test_random_documents_read_as_json_loads_reads_them(
    chunks: object,
    extra: dict[str, object],
    where: str,
    compact: bool,
    space: str,
    lead: str,
    trail: str,
    escape_key: bool,
) -> None:
    doc = json.loads(GOOD)
    doc["chunks"] = chunks
    body = _spell(doc, space, compact)
    if escape_key:
        body = body.replace('"chunks"', '"\\u0063hunks"', 1)
    if where != "none" and extra:
        text = _spell(extra, space, compact)[1:-1]
        body = "{" + text + "," + body[1:] if where == "before" else body[:-1] + "," + text + "}"
    _same((lead + body + trail).encode())


def test_the_comparison_sees_the_fast_path_and_a_wrong_answer_from_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The attacks above compare two different paths: the written form takes the fast
    one, and a fast path that read one size wrong would fail them."""
    assert manifest_module._split_chunks(GOOD.encode()) is not None
    real = manifest_module._split_chunks

    def off_by_one(raw: bytes) -> object:
        found = real(raw)
        if found is None:
            return None
        rest, chunks = found
        return rest, type(chunks)(ChunkRef(r.chunk_id, r.size + 1) for r in chunks)

    monkeypatch.setattr(manifest_module, "_split_chunks", off_by_one)
    with pytest.raises(AssertionError):
        _same(GOOD.encode())


_texts = st.lists(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
    | st.sampled_from(
        ['"', "\\", '"chunks":[', f'["{ID}",5]', "]", "}", "\ufeff", "\u2028", "\x00"]
    ),
    max_size=5,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(created_by=_texts, tags=st.lists(_texts, max_size=3), count=st.integers(0, 40))
def test_written_manifests_with_hostile_text_fields_read_back_the_same(
    created_by: str, tags: list[str], count: int
) -> None:
    """Text fields that spell a chunk list, quotes, backslashes, a BOM, NUL: the written
    form takes the fast path and reads back what was written, as json.loads reads it."""
    rng = random.Random(count)
    refs = [ChunkRef(rng.randbytes(32).hex(), rng.randrange(MAX)) for _ in range(count)]
    written = _manifest(refs)
    written = type(written)(**{**vars(written), "created_by": created_by, "tags": tuple(tags)})
    raw = written.to_json()
    assert manifest_module._split_chunks(raw) is not None
    read = Manifest.from_json(raw, "m")
    assert read.created_by == created_by and read.tags == tuple(tags)
    assert [(r.chunk_id, r.size) for r in read.chunks] == [(r.chunk_id, r.size) for r in refs]
    _same(raw)
