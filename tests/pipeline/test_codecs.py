import os
import shutil
import subprocess

import pytest

from strongroom.pipeline.compression import ChunkCompressor
from strongroom.pipeline.encryption import (
    AgeSealer,
    DecryptionFailed,
    PlainSealer,
    new_identity,
    passphrase_open,
    passphrase_seal,
)
from strongroom.pipeline.hashing import ChunkNamer


def test_keyed_names_depend_on_the_key_and_content():
    a, b = ChunkNamer(b"k" * 32), ChunkNamer(b"j" * 32)
    assert a.name(b"data") == a.name(b"data")
    assert a.name(b"data") != b.name(b"data")
    assert a.name(b"data") != a.name(b"datb")
    assert len(a.name(b"")) == 64
    with pytest.raises(ValueError):
        ChunkNamer(b"short")


def test_compression_round_trip_and_damage_detected():
    compressor = ChunkCompressor(level=3)
    data = os.urandom(1000) * 50
    packed = compressor.compress(data)
    assert len(packed) < len(data) / 10
    assert compressor.decompress(packed) == data
    import zstandard

    with pytest.raises(zstandard.ZstdError):
        compressor.decompress(packed[:-5] + b"xxxxx")


def test_age_sealer_round_trip_and_wrong_identity_refused():
    identity, recipient = new_identity()
    other, _ = new_identity()
    sealed = AgeSealer([recipient], None).seal(b"secret rows")
    assert b"secret rows" not in sealed
    assert AgeSealer([recipient], identity).open(sealed) == b"secret rows"
    with pytest.raises(DecryptionFailed):
        AgeSealer([recipient], other).open(sealed)
    assert PlainSealer().open(PlainSealer().seal(b"x")) == b"x"


def test_passphrase_wrapping():
    wrapped = passphrase_seal(b"AGE-SECRET-KEY-1...", "correct horse")
    assert passphrase_open(wrapped, "correct horse") == b"AGE-SECRET-KEY-1..."
    with pytest.raises(DecryptionFailed):
        passphrase_open(wrapped, "wrong horse")


@pytest.mark.skipif(not (shutil.which("age") and shutil.which("zstd")), reason="needs age, zstd")
def test_a_chunk_decrypts_with_the_stock_age_and_zstd_tools(tmp_path):
    identity, recipient = new_identity()
    key = tmp_path / "key"
    key.write_text(f"# a comment line, as in strongroom key files\n{identity}\n")
    data = os.urandom(5000) + b"hello " * 1000
    blob = AgeSealer([recipient], None).seal(ChunkCompressor().compress(data))
    (tmp_path / "chunk").write_bytes(blob)
    out = subprocess.run(
        f"age -d -i {key} {tmp_path / 'chunk'} | zstd -d",
        shell=True,
        capture_output=True,
        check=True,
    ).stdout
    assert out == data
