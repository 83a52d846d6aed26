"""Table checksums of MySQL tables in any mix of character sets (issue 13: a latin1 table
with a TEXT column, MySQL's pre-8.0 default, failed every backup with ERROR 1270)."""

from __future__ import annotations

from strongroom.engines.mysql import MysqlEngine
from strongroom.engines.mysql.stats import CHECKSUM_PREFIX
from tests.fixtures.mariadb import MariaDbServer


def _fill(server: MariaDbServer, name: str) -> None:
    server.execute(
        name,
        [
            "CREATE TABLE legacy (id INT PRIMARY KEY, note TEXT, label VARCHAR(20))"
            " CHARACTER SET latin1",
            "INSERT INTO legacy VALUES (1, 'café crème', 'Zoë'), (2, NULL, ''), (3, 'x', NULL)",
            "CREATE TABLE mixed (id INT PRIMARY KEY, a VARCHAR(10) CHARACTER SET latin1,"
            " b VARCHAR(10) CHARACTER SET utf8mb4, c VARBINARY(10), d TEXT CHARACTER SET"
            " utf8mb4, e CHAR(3) CHARACTER SET ascii)",
            "INSERT INTO mixed VALUES (1, 'é', '中文', x'00ff', 'ü', 'abc'),"
            " (2, NULL, NULL, NULL, NULL, NULL)",
        ],
    )


def test_checksums_of_latin1_and_mixed_tables_restore_equal(mariadb_server, mysql_db):
    name = mysql_db.rsplit("/", 1)[1]
    _fill(mariadb_server, name)
    source = MysqlEngine(mysql_db)
    stats = {s.name: s for s in source.table_stats()}
    assert set(stats) == {"legacy", "mixed"}
    assert all(s.checksum and s.checksum.startswith(CHECKSUM_PREFIX) for s in stats.values())
    assert stats["legacy"].rows == 3 and stats["mixed"].rows == 2

    with source.dump() as running:
        data = running.stream.read()
        result = running.finish()
    assert {t.name: t.checksum for t in result.tables} == {n: s.checksum for n, s in stats.items()}
    copy = f"{name}_copy"
    try:
        target = MysqlEngine(mariadb_server.url(copy))
        target.restore([data])
        assert {s.name: s for s in target.table_stats()} == stats
        # a changed byte in a latin1 TEXT value changes the checksum
        mariadb_server.query(copy, "UPDATE legacy SET note = 'cafe crème' WHERE id = 1")
        changed = {s.name: s for s in target.table_stats()}
        assert changed["legacy"].checksum != stats["legacy"].checksum
        assert changed["mixed"] == stats["mixed"]
    finally:
        mariadb_server.drop_database(copy)
