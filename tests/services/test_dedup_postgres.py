"""Deduplication against a real PostgreSQL: new bytes track the changed data."""

from strongroom.engines.postgresql import PostgresEngine
from strongroom.pipeline.chunking import ChunkerParams
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.storage.memory import MemoryStorage

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
