"""A manifest's chunk list is written and read in blocks, without a Python object per
chunk (manifest_chunks.py); any other spelling of the JSON still parses as before."""

import json
import os
import random
import tracemalloc

import pytest
from blake3 import blake3

from strongroom.errors import ManifestDamaged
from strongroom.repository.chunk_list import ChunkList, ChunkRef
from strongroom.repository.manifest import Manifest, chunk_order_digest
from strongroom.repository.manifest_chunks import split_chunks
from tests.helpers import sample_manifest

MAX = 2**63
ID = "ab" * 32


def _refs(count, seed=1):
    rng = random.Random(seed)
    sizes = [0, 1, 9, 10, 16_384, 123_456, MAX - 1]
    return [ChunkRef(rng.randbytes(32).hex(), rng.choice(sizes)) for _ in range(count)]


def _manifest(refs, created_by="me@host"):
    return sample_manifest(
        refs,
        tags=("chunks",),
        created_by=created_by,
        raw_size=len(refs),
        private_sealed={"encoding": "plain", "data": {"chunks": [[ID, 1]]}},
    )


def _json_as_before(manifest):
    """What to_json wrote before the list was spliced in (json.dumps of lists)."""
    doc = json.loads(manifest.to_json())
    doc["chunks"] = [[r.chunk_id, r.size] for r in manifest.chunks]
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


@pytest.mark.parametrize("count", [0, 1, 2, 4095, 4096, 4097, 9000])
def test_written_and_read_in_blocks_as_before(count):
    refs = _refs(count)
    manifest = _manifest(refs)
    raw = manifest.to_json()
    assert raw == _json_as_before(manifest)  # the same bytes as json.dumps gave
    again = Manifest.from_json(raw, "where", manifest.backup_id)
    assert again == manifest and again.chunks == refs
    assert split_chunks(raw.decode(), MAX) is not None  # the block reader took it


@pytest.mark.parametrize(
    "created_by",
    ['"chunks":[', '","chunks":[["' + ID + '",1]],"x":"', "\\", '\\"chunks\\":[]'],
)
def test_field_text_that_looks_like_the_list_is_only_text(created_by):
    manifest = _manifest(_refs(3), created_by=created_by)
    again = Manifest.from_json(manifest.to_json(), "where")
    assert again.created_by == created_by and again.chunks == manifest.chunks


def test_the_chunk_order_digest_is_the_one_of_the_whole_listing():
    refs = _refs(5000)
    key = os.urandom(32)
    listing = "".join(f"{r.chunk_id} {r.size}\n" for r in refs)
    whole = blake3(("strongroom-chunk-order-v1\n" + listing).encode(), key=key).hexdigest()
    assert chunk_order_digest(lambda: blake3(key=key), refs) == whole
    assert chunk_order_digest(lambda: blake3(key=key), ChunkList(refs)) == whole
    assert chunk_order_digest(lambda: blake3(key=key), refs[::-1]) != whole


def _spelled(raw, old, new):
    assert old in raw
    return raw.replace(old, new, 1)


def test_other_spellings_parse_as_the_full_parser_does():
    """Spaces, a second "chunks" key, a BOM: not the compact form, so json reads them."""
    refs = _refs(3)
    raw = _manifest(refs).to_json()
    spaced = _spelled(raw, b'"chunks":[[', b'"chunks" : [ [')
    assert split_chunks(spaced.decode(), MAX) is None
    assert Manifest.from_json(spaced, "where").chunks == refs
    first = b'"chunks":[["' + ID.encode() + b'",7]],'
    doubled = _spelled(raw, b'{"format"', b"{" + first + b'"format"')
    assert Manifest.from_json(doubled, "where").chunks == refs  # json keeps the last
    assert Manifest.from_json(b"\xef\xbb\xbf" + raw, "where").chunks == refs


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (b"]]", b"],]]", "not valid JSON"),
        (b'"chunks":[["', b'"chunks":[["A', "not a chunk id"),
        (b'"chunks":[[', b'"chunks":[[1,2],[', "not a chunk id"),
        (b"]]", b'],["' + ID.encode() + b'",9223372036854775808]]', "no valid size"),
        (b"]]", b'],["' + ID.encode() + b'",01]]', "not valid JSON"),
        (b'"chunks":[[', b'"chunks":7,"listed":[[', "'chunks'"),
        (b"\n", b"x\n", "not valid JSON"),
    ],
)
def test_damage_in_the_list_is_named_as_before(old, new, reason):
    raw = _spelled(_manifest(_refs(3)).to_json(), old, new)
    with pytest.raises(ManifestDamaged, match=reason):
        Manifest.from_json(raw, "where")


def _traced_peak(work):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = work()
        return result, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_reading_and_writing_cost_about_the_json_not_an_object_per_chunk():
    """50,000 chunks (1 GB of dump at 16 KiB): json.loads made a list, a str and an int
    of each (peak 5.8x the JSON's size; to_json 5x); in blocks, the text, its copy without
    the list and the 40-byte-per-chunk list (measured 1.8x); written into one buffer (1.4x)."""
    manifest = _manifest(_refs(50_000))
    raw, write_peak = _traced_peak(manifest.to_json)
    again, read_peak = _traced_peak(lambda: Manifest.from_json(raw, "where"))
    assert again == manifest
    assert read_peak < 3 * len(raw), (read_peak, len(raw))
    assert write_peak < 2 * len(raw), (write_peak, len(raw))
