"""Deduplication against a real PostgreSQL: new bytes track the changed data."""

import time

from strongroom.engines.postgresql import PostgresEngine
from strongroom.pipeline.chunking import ChunkerParams
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.storage.memory import MemoryStorage
from tests.engines.postgresql.dump_shape import users_shape_database

FILL = """
SELECT setseed({seed});
INSERT INTO users (email, bio)
  SELECT 'u' || g || '@example.com', md5(random()::text) || ' ' || md5(random()::text)
  FROM generate_series({first}, {last}) g;
INSERT INTO events (user_id, payload)
  SELECT 1 + (random() * {last})::int, md5(random()::text) || md5(random()::text)
  FROM generate_series({first}, {last}) g;
"""


def test_one_percent_more_rows_stores_a_few_percent_new(pg_server, pg_db, tmp_path):
    dbname = pg_db.rsplit("/", 1)[1]
    pg_server.psql(
        dbname,
        "CREATE TABLE users (id serial PRIMARY KEY, email text, bio text);"
        "CREATE TABLE events (id bigserial PRIMARY KEY, user_id int, payload text);",
    )
    pg_server.psql(dbname, FILL.format(seed=0.1, first=1, last=100_000))
    storage = MemoryStorage()
    small_chunks = ChunkerParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024)
    Repository.init(storage, key_file=tmp_path / "k", chunker=small_chunks)
    repo = Repository.open(storage, KeySource(key_file=tmp_path / "k"))

    first = run_backup(repo, PostgresEngine(pg_db)).manifest
    pg_server.psql(dbname, FILL.format(seed=0.2, first=100_001, last=101_000))  # +1 %
    second = run_backup(repo, PostgresEngine(pg_db))
    share = second.new_plain_bytes / second.manifest.raw_size
    print(f"+1 % rows -> {share:.2%} new data, {second.manifest.new_chunk_count} new chunks")
    assert 0.005 < share < 0.03
    assert second.manifest.stored_new_bytes < 0.03 * first.stored_new_bytes


def _shaped_repo(pg_server, pg_db, tmp_path, chunker=None):
    dbname = pg_db.rsplit("/", 1)[1]
    users_shape_database(pg_server, dbname)
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k", chunker=chunker)
    return dbname, Repository.open(storage, KeySource(key_file=tmp_path / "k"))


def test_a_second_backup_of_an_unchanged_database_stores_only_the_header(
    pg_server, pg_db, tmp_path
):
    _, repo = _shaped_repo(pg_server, pg_db, tmp_path)  # the default chunker
    first = run_backup(repo, PostgresEngine(pg_db)).manifest
    assert 1.5 * 2**20 < first.raw_size < 2.5 * 2**20  # the 1.8 MiB database
    time.sleep(1.1)  # a new creation time in the dump's header
    second = run_backup(repo, PostgresEngine(pg_db))
    share = second.new_plain_bytes / second.manifest.raw_size
    print(f"unchanged database: {second.new_plain_bytes} bytes new, {share:.3%} of the dump")
    assert second.manifest.new_chunk_count == 1  # the archive header: time, name, versions
    assert second.new_plain_bytes < 200
    assert share <= 0.02  # the target (was 24 %)
    new_ref = next(r for r in second.manifest.chunks if r not in first.chunks)
    assert new_ref == second.manifest.chunks[0]
    assert second.manifest.chunks[1:] == first.chunks[1:]


def test_a_changed_row_changes_only_the_chunks_near_it(pg_server, pg_db, tmp_path):
    small = ChunkerParams(min_size=4 * 1024, avg_size=16 * 1024, max_size=64 * 1024)
    dbname, repo = _shaped_repo(pg_server, pg_db, tmp_path, chunker=small)
    first = run_backup(repo, PostgresEngine(pg_db)).manifest
    pg_server.psql(dbname, """UPDATE "OrderLines" SET "Note" = 'changed' WHERE "Id" = 8000""")
    time.sleep(1.1)  # a new creation time in the dump's header
    second = run_backup(repo, PostgresEngine(pg_db))
    new = [r for r in second.manifest.chunks if r not in first.chunks]
    print(f"one changed row: {len(new)} new chunks of {len(second.manifest.chunks)}")
    assert new[0] == second.manifest.chunks[0]  # the header
    # The row's new version is written elsewhere in the table (pg_dump copies rows in
    # physical order): the chunks where it was and where it went, at most two each.
    changed_at = [i for i, r in enumerate(second.manifest.chunks) if r in new[1:]]
    assert 1 <= len(changed_at) <= 4
    assert sum(r.size for r in new[1:]) <= 4 * small.max_size
    runs = [i for i in changed_at if i - 1 not in changed_at]
    assert len(runs) <= 2 and all(i + 2 not in changed_at for i in runs)
    # every other chunk is the first backup's, in the same order
    kept = [r for r in second.manifest.chunks[1:] if r not in new]
    assert kept == [r for r in first.chunks[1:] if r in set(kept)]
    assert len(kept) >= len(first.chunks) - 1 - 4
