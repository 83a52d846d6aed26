"""A failed verification names the tables that differ (up to ten, then "and N more"), in
counted words: the restore drill's text (web job box, CLI ``verify --restore``) and the web
restore's. Real SQLite databases; the scratch copy really loses rows after its restore."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from strongroom.engines.base import RestoreOptions
from strongroom.engines.sqlite import SqliteEngine
from strongroom.repository.keys import KeySource
from strongroom.repository.manifest import TableRecord
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.drill import named_tables, tables_differ, verify_by_restore
from strongroom.services.restore import plan_restore, run_restore
from strongroom.storage.memory import MemoryStorage
from strongroom.web.actions.restore import mismatch_message

TABLES = [f"t{n:02d}" for n in range(13)]


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    return Repository.open(storage, KeySource(key_file=tmp_path / "k"))


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    path = tmp_path / "shop.db"
    db = sqlite3.connect(path)
    for name in TABLES:
        db.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, v TEXT)")
        db.executemany(f"INSERT INTO {name} (v) VALUES (?)", [("a",), ("b",), ("c",)])
    db.commit()
    db.close()
    return path


class LossyScratch(SqliteEngine):
    """A scratch SQLite database that loses one row of each of ``lose`` after the restore
    (what a broken dump or a faulty restore would leave)."""

    def __init__(self, url: str, lose: list[str]) -> None:
        super().__init__(url)
        self.lose = lose

    def restore(self, source: Iterable[bytes], **kw: Any) -> None:
        super().restore(source, **kw)
        db = sqlite3.connect(self.path)
        for name in self.lose:
            db.execute(f"DELETE FROM {name} WHERE id = 1")
        db.commit()
        db.close()


def test_names_up_to_ten_then_and_n_more() -> None:
    assert named_tables(["users"]) == "users"
    assert named_tables(["users", "orders"]) == "users, orders"
    assert named_tables(TABLES[:10]) == ", ".join(TABLES[:10])
    assert named_tables(TABLES) == ", ".join(TABLES[:10]) + " and 3 more"
    assert tables_differ(["users"]) == "1 table differs from the backup: users"
    assert tables_differ(["a", "b"]) == "2 tables differ from the backup: a, b"


def test_a_drill_names_every_table_that_differs(repo, shop, tmp_path) -> None:
    manifest = run_backup(repo, SqliteEngine(str(shop))).manifest
    scratch = LossyScratch(str(tmp_path / "scratch.db"), TABLES)
    result = verify_by_restore(repo, manifest, scratch)
    assert not result.ok
    assert result.detail == (
        "13 tables differ from the backup: " + ", ".join(TABLES[:10]) + " and 3 more"
    )
    assert "(s)" not in result.detail
    # the record (clear JSON in the repository) keeps the count, never a table's name
    assert result.record.problem == "13 tables differ from the backup"

    one = verify_by_restore(repo, manifest, LossyScratch(str(tmp_path / "one.db"), ["t07"]))
    assert one.detail == "1 table differs from the backup: t07"
    assert one.record.problem == "1 table differs from the backup"


def test_a_web_restore_mismatch_names_the_tables(repo, shop) -> None:
    manifest = run_backup(repo, SqliteEngine(str(shop))).manifest
    plan = plan_restore(repo, manifest, SqliteEngine(str(shop)), options=RestoreOptions())
    wrong = [
        TableRecord(t.name, t.rows + 1, t.checksum) if t.name in ("t03", "t11") else t
        for t in plan.backup_tables
    ]
    report = run_restore(
        repo, manifest, SqliteEngine(str(shop)), plan=replace(plan, backup_tables=wrong)
    )
    assert not report.ok
    differing = [c.name for c in report.comparisons if not c.matches]
    assert mismatch_message(differing) == (
        "the restored copy differs from the backup in 2 tables (t03, t11); the target is untouched"
    )
    assert mismatch_message(TABLES).startswith(
        "the restored copy differs from the backup in 13 tables (t00, t01,"
    )
    assert " and 3 more); " in mismatch_message(TABLES)
    assert mismatch_message(["t03"]).startswith(
        "the restored copy differs from the backup in 1 table (t03)"
    )
