"""A reader that read the index before a prune repacked (issue 19): restore and verify
take no lock, so a long-lived process (the web service, the daemon, a restore started
before the prune) must still find the chunks the prune moved."""

import contextlib
import sqlite3

from strongroom.engines.sqlite import SqliteEngine
from strongroom.pipeline.chunking import ChunkerParams
from strongroom.repository.keys import KeySource
from strongroom.repository.layout import manifest_key
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.prune import prune
from strongroom.services.verify import verify_backup
from strongroom.storage.memory import MemoryStorage
from tests.helpers import make_sqlite_db

SMALL_CHUNKS = ChunkerParams(min_size=4096, avg_size=16384, max_size=65536)


def test_a_reader_synced_before_a_repack_still_reads_every_kept_backup(tmp_path, monkeypatch):
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(tmp_path / "reader"))
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k", chunker=SMALL_CHUNKS)
    reader = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    shop = make_sqlite_db(tmp_path / "Shop.db", users=1500, orders=4000)
    first = run_backup(reader, SqliteEngine(str(shop)), target="Shop").manifest
    with contextlib.closing(sqlite3.connect(shop)) as conn:
        conn.execute("DELETE FROM orders WHERE id > 1000")
        conn.execute("DELETE FROM users WHERE id > 400")
        conn.commit()
        conn.execute("VACUUM")
    second = run_backup(reader, SqliteEngine(str(shop)), target="Shop").manifest
    assert verify_backup(reader, second).ok  # its cache knows every pack now
    storage.delete(manifest_key(first.backup_id))
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(tmp_path / "another-host"))
    pruner = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    assert prune(pruner).packs_repacked == 1  # the chunks second shares with first moved
    # the stale cache reads index/ again (one reader thread: with several, a lookup
    # during another thread's sync can miss, see the report of issue 19's prune work)
    for ref in second.chunks:
        assert len(reader.chunks.load(ref.chunk_id)) == ref.size
