import io
import random

import pytest

from strongroom.pipeline.chunking import ChunkerParams, iter_chunks

SMALL = ChunkerParams(min_size=4096, avg_size=16384, max_size=65536)


def _data(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def test_chunks_reassemble_to_the_input_and_respect_size_bounds():
    data = _data(2_000_000)
    chunks = list(iter_chunks(io.BytesIO(data), SMALL))
    assert b"".join(chunks) == data
    assert all(len(c) <= SMALL.max_size for c in chunks)
    assert all(len(c) >= SMALL.min_size for c in chunks[:-1])
    assert 20 < len(chunks) < 200


def test_boundaries_are_content_defined_so_an_insert_changes_only_nearby_chunks():
    data = _data(3_000_000, seed=2)
    edited = data[:1_500_000] + b"a few inserted bytes" + data[1_500_000:]
    before = list(iter_chunks(io.BytesIO(data), SMALL))
    after = list(iter_chunks(io.BytesIO(edited), SMALL))
    changed = set(after) - set(before)
    assert 1 <= len(changed) <= 3
    assert sum(len(c) for c in changed) < 0.05 * len(edited)


def test_the_same_stream_cuts_the_same_way_whatever_the_read_sizes():
    data = _data(1_000_000, seed=3)

    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.pos = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            n = min(len(buffer), 7777, len(data) - self.pos)
            buffer[:n] = data[self.pos : self.pos + n]
            self.pos += n
            return n

    assert list(iter_chunks(Trickle(), SMALL)) == list(iter_chunks(io.BytesIO(data), SMALL))


def test_empty_stream_gives_no_chunks():
    assert list(iter_chunks(io.BytesIO(b""), SMALL)) == []


def test_params_round_trip_through_the_config_dict():
    params = ChunkerParams(min_size=1024, avg_size=8192, max_size=32768, seed=5)
    assert ChunkerParams.from_dict(params.to_dict()) == params


def _ends(chunks: list[bytes]) -> list[int]:
    ends, total = [], 0
    for chunk in chunks:
        total += len(chunk)
        ends.append(total)
    return ends


def test_forced_cuts_end_chunks_exactly_there_and_the_rest_cuts_as_a_fresh_stream():
    head, middle, body = _data(77, seed=4), _data(300_000, seed=5), _data(1_500_000, seed=6)
    data = head + middle + body
    cuts = [len(head), len(head) + len(middle)]
    chunks = list(iter_chunks(io.BytesIO(data), SMALL, cuts))
    assert b"".join(chunks) == data
    ends = _ends(chunks)
    assert cuts[0] in ends and cuts[1] in ends  # a 77-byte chunk, below min_size
    assert chunks[0] == head
    after = chunks[ends.index(cuts[1]) + 1 :]
    assert after == list(iter_chunks(io.BytesIO(body), SMALL))
    assert all(len(c) <= SMALL.max_size for c in chunks)


def test_a_changed_header_leaves_every_chunk_after_the_cut_unchanged():
    body = _data(2_000_000, seed=7)
    one = list(iter_chunks(io.BytesIO(b"HEADER-2026-01-01" + body), SMALL, [17]))
    two = list(iter_chunks(io.BytesIO(b"HEADER-2026-01-02" + body), SMALL, [17]))
    assert set(two) - set(one) == {b"HEADER-2026-01-02"}
    # without the cut the first chunk mixes header and data, so it differs too
    plain_one = list(iter_chunks(io.BytesIO(b"HEADER-2026-01-01" + body), SMALL))
    plain_two = list(iter_chunks(io.BytesIO(b"HEADER-2026-01-02" + body), SMALL))
    assert len(set(plain_two) - set(plain_one)) == 1
    assert len(next(iter(set(plain_two) - set(plain_one)))) > 17


def test_cuts_at_or_past_eof_and_cuts_out_of_order():
    data = _data(50_000, seed=8)
    assert b"".join(iter_chunks(io.BytesIO(data), SMALL, [50_000, 60_000])) == data
    assert b"".join(iter_chunks(io.BytesIO(data), SMALL, [70_000])) == data
    assert list(iter_chunks(io.BytesIO(b""), SMALL, [10])) == []
    with pytest.raises(ValueError, match="not after offset"):
        list(iter_chunks(io.BytesIO(data), SMALL, [100, 100]))
    with pytest.raises(ValueError, match="not after offset"):
        list(iter_chunks(io.BytesIO(data), SMALL, [0]))


def test_new_repositories_get_16_kib_chunks_and_old_ones_keep_their_stored_sizes(tmp_path):
    from strongroom.repository.keys import KeySource
    from strongroom.repository.repository import Repository
    from strongroom.storage.memory import MemoryStorage

    new, old = MemoryStorage(), MemoryStorage()
    Repository.init(new, key_file=tmp_path / "new")
    old_sizes = ChunkerParams(min_size=128 * 1024, avg_size=512 * 1024, max_size=2 * 1024 * 1024)
    Repository.init(old, key_file=tmp_path / "old", chunker=old_sizes)
    opened_new = Repository.open(new, KeySource(key_file=tmp_path / "new")).config.chunker
    opened_old = Repository.open(old, KeySource(key_file=tmp_path / "old")).config.chunker
    assert (opened_new.min_size, opened_new.avg_size, opened_new.max_size) == (4096, 16384, 65536)
    assert opened_old == old_sizes
