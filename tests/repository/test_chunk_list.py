"""ChunkList: a manifest's chunks in 40 bytes each, behaving as a sequence of ChunkRef."""

import json
import tracemalloc

import pytest

from strongroom.repository.chunk_list import ChunkList, ChunkListBuilder, ChunkRef
from strongroom.repository.manifest import Manifest
from tests.helpers import sample_manifest


def _refs(count):
    return [ChunkRef(f"{i:064x}", 1000 + i) for i in range(count)]


def test_it_is_the_sequence_it_was_built_from():
    refs = _refs(50)
    chunks = ChunkList(refs)
    assert len(chunks) == 50
    assert list(chunks) == refs
    assert chunks == tuple(refs) == chunks[:]  # equal to any sequence of the same refs
    assert chunks[0] == refs[0] and chunks[-1] == refs[-1]
    assert chunks[10:20] == refs[10:20] and chunks[::7] == refs[::7]
    assert list(chunks.ids()) == [r.chunk_id for r in refs]
    assert chunks != refs[:-1] and chunks != list(reversed(refs))
    assert hash(chunks) == hash(ChunkList(refs))
    with pytest.raises(IndexError):
        chunks[50]


@pytest.mark.parametrize("bad", ["A" * 64, "a" * 63, "a" * 62 + " a", "g" * 64, "ab" * 33])
def test_ids_that_would_not_round_trip_are_refused(bad):
    with pytest.raises(ValueError, match="not a chunk id"):
        ChunkListBuilder().append(bad, 1)


def test_a_manifest_holds_its_chunks_compactly():
    """As ChunkRef objects a list of chunks cost ~200 bytes each (~100 MB for a 10 GB
    database at 16 KiB chunks); held as a ChunkList, 40."""
    refs = _refs(20_000)
    document = {"chunks": [[r.chunk_id, r.size] for r in refs]}
    raw = json.dumps(document)
    tracemalloc.start()
    items = json.loads(raw)["chunks"]
    before = tracemalloc.get_traced_memory()[0]
    builder = ChunkListBuilder()
    for chunk_id, size in items:
        builder.append(chunk_id, size)
    chunks = builder.build()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert chunks == refs
    assert held < 60 * len(refs)  # 40 B per chunk and the arrays' slack


def test_manifests_built_from_tuples_compare_and_serialise_as_before(tmp_path):

    refs = tuple(_refs(3))
    manifest = sample_manifest(refs)
    assert isinstance(manifest.chunks, ChunkList)
    assert manifest.chunks == refs
    doc = json.loads(manifest.to_json())
    assert doc["chunks"] == [[r.chunk_id, r.size] for r in refs]
    again = Manifest.from_json(manifest.to_json(), "where", manifest.backup_id)
    assert again == manifest and again.chunks == refs
