"""SQLite virtual tables (issue 13): a database holding a virtual table whose module is not
loadable here (what SpatiaLite or sqlean leave in a file opened without them) backs up,
restores and verifies, and the verification says which tables it did not check and why.
FTS5 and R*Tree tables are checked through their shadow tables, never counted twice."""

from __future__ import annotations

import logging
import re
import sqlite3
from pathlib import Path

import pytest

from strongroom.engines import sqlite as sqlite_engine
from strongroom.engines.sqlite import SqliteEngine
from strongroom.engines.sqlite_stats import (
    VIRTUAL_TABLES,
    Survey,
    module_of,
    planned_notes,
    survey,
    table_stats,
)
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.drill import verify_by_restore
from strongroom.services.restore import compare_tables, run_restore
from strongroom.storage.memory import MemoryStorage
from tests.helpers import cli_ok, repository_env, run_cli

UNCHECKED_V = "virtual table v: module nosuchmodule is not available here"
DOCS = [("quick fox", "jumps over the lazy dog"), ("Ünïcode ✓", "fox 😀 again"), ("three", "")]
BOXES = [(1, 0.0, 1.0, 0.0, 1.0), (2, 5.0, 6.0, 5.0, 6.0), (7, -1.0, 0.5, -1.0, 0.5)]
# the ordinary tables of the sample: its own, and the shadow tables of docs (FTS5), box
# (R*Tree) and geo (an FTS5 table whose module the schema now calls "nosuchgeo")
DOCS_SHADOWS = ["docs_config", "docs_content", "docs_data", "docs_docsize", "docs_idx"]
BOX_SHADOWS = ["box_node", "box_parent", "box_rowid"]
GEO_SHADOWS = ["geo_config", "geo_content", "geo_data", "geo_docsize", "geo_idx"]
ORDINARY = sorted(["items", *DOCS_SHADOWS, *BOX_SHADOWS, *GEO_SHADOWS])


@pytest.fixture()
def repo(tmp_path: Path) -> Repository:
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    return Repository.open(storage, KeySource(key_file=tmp_path / "k"))


def _make_db(path: Path, *, unknown: bool = True) -> Path:
    """FTS5 and R*Tree tables with rows; with ``unknown``, also a virtual table ``v`` of a
    module this SQLite lacks, and ``geo`` whose module (it was FTS5) is unknown too: the
    schema rows are written directly, as an extension's CREATE VIRTUAL TABLE leaves them."""
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);"
        "INSERT INTO items (name) VALUES ('one'), ('two ☃');"
        "CREATE VIRTUAL TABLE docs USING fts5(title, body);"
        "CREATE VIRTUAL TABLE box USING rtree(id, x0, x1, y0, y1);"
    )
    db.executemany("INSERT INTO docs VALUES (?, ?)", DOCS)
    db.executemany("INSERT INTO box VALUES (?, ?, ?, ?, ?)", BOXES)
    if unknown:
        db.executescript(
            "CREATE VIRTUAL TABLE geo USING fts5(shape);"
            "INSERT INTO geo VALUES ('POINT(1 2)'), ('POINT(3 4)');"
        )
        db.commit()
        db.execute("PRAGMA writable_schema = ON")
        db.execute(
            "INSERT INTO sqlite_master (type, name, tbl_name, rootpage, sql) VALUES "
            "('table', 'v', 'v', 0, 'CREATE VIRTUAL TABLE v USING nosuchmodule(a, b)')"
        )
        db.execute(
            "UPDATE sqlite_master SET sql = 'CREATE VIRTUAL TABLE geo USING nosuchgeo(shape)' "
            "WHERE name = 'geo'"
        )
        db.execute("PRAGMA writable_schema = OFF")
    db.commit()
    db.close()
    return path


def _dump_bytes(repo: Repository, manifest) -> bytes:
    return b"".join(repo.read_stream(manifest))


def _pages(path: Path) -> list[bytes]:
    data = path.read_bytes()
    size = int.from_bytes(data[16:18], "big")
    size = 65536 if size == 1 else size
    return [data[i : i + size] for i in range(0, len(data), size)]


# What the backup API rewrites in the copy's header: file change counter (24-27), schema
# cookie (40-43), version-valid-for number (92-95).
_REWRITTEN = [(24, 28), (40, 44), (92, 96)]


def _masked_first_page(page: bytes) -> bytes:
    out = bytearray(page)
    for start, end in _REWRITTEN:
        out[start:end] = bytes(end - start)
    return bytes(out)


def test_the_sample_is_what_a_missing_extension_looks_like(tmp_path):
    """The test is meaningful: this SQLite cannot read v or geo, and reading every table
    as backups used to fails."""
    path = _make_db(tmp_path / "app.db")
    db = sqlite3.connect(path)
    for name, module in (("v", "nosuchmodule"), ("geo", "nosuchgeo")):
        with pytest.raises(sqlite3.OperationalError, match=f"no such module: {module}"):
            db.execute(f"SELECT count(*) FROM {name}")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    with pytest.raises(sqlite3.OperationalError, match="no such module"):
        [table_stats(db, name) for name in names]
    db.close()


def test_backup_records_ordinary_and_shadow_tables_and_reports_the_virtual_ones(repo, tmp_path):
    path = _make_db(tmp_path / "app.db")
    manifest = run_backup(repo, SqliteEngine(str(path))).manifest
    private = repo.private_section(manifest)

    recorded = {t.name: t for t in private.tables}
    assert sorted(recorded) == ORDINARY  # no virtual table: nothing counted twice
    assert all(t.checksum and t.checksum.startswith("b3sum64:") for t in recorded.values())
    assert recorded["docs_content"].rows == len(DOCS)
    assert recorded["box_rowid"].rows == len(BOXES)
    assert recorded["geo_content"].rows == 2  # an unknown module's tables are checked
    assert recorded["items"].rows == 2

    virtual = {v["name"]: v for v in (private.engine_state or {})[VIRTUAL_TABLES]}
    assert virtual == {
        "box": {"name": "box", "module": "rtree", "shadow_tables": BOX_SHADOWS},
        "docs": {"name": "docs", "module": "fts5", "shadow_tables": DOCS_SHADOWS},
        "geo": {
            "name": "geo",
            "module": "nosuchgeo",
            "shadow_tables": GEO_SHADOWS,
            "not_checked": "module nosuchgeo is not available here",
        },
        "v": {
            "name": "v",
            "module": "nosuchmodule",
            "shadow_tables": [],
            "not_checked": "module nosuchmodule is not available here",
        },
    }


def test_a_change_to_fts_or_rtree_data_is_a_mismatch(repo, tmp_path):
    """The shadow tables carry the virtual tables' content into the comparison."""
    path = _make_db(tmp_path / "app.db")
    recorded = repo.private_section(run_backup(repo, SqliteEngine(str(path))).manifest).tables
    db = sqlite3.connect(path)
    db.execute("UPDATE docs SET body = 'changed' WHERE rowid = 1")
    db.execute("UPDATE box SET x1 = 2.0 WHERE id = 1")
    db.commit()
    db.close()
    differ = {
        c.name
        for c in compare_tables(recorded, SqliteEngine(str(path)).table_stats())
        if not c.matches
    }
    assert {"docs_content", "docs_data", "box_node"} <= differ
    assert differ <= set(DOCS_SHADOWS) | set(BOX_SHADOWS)


def test_restore_verifies_and_the_file_is_the_backup_page_for_page(repo, tmp_path, caplog):
    path = _make_db(tmp_path / "app.db")
    manifest = run_backup(repo, SqliteEngine(str(path))).manifest
    target = tmp_path / "restored.db"

    with caplog.at_level(logging.INFO, logger="strongroom.engines.sqlite"):
        report = run_restore(repo, manifest, SqliteEngine(str(target)))

    assert report.ok and report.swapped, report.comparisons
    assert [c.name for c in report.comparisons] == ORDINARY
    assert all(c.checksum_checked and c.matches for c in report.comparisons)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"not checked: {UNCHECKED_V}" in warnings
    assert any("virtual table geo: module nosuchgeo" in w for w in warnings)
    assert not any("virtual table docs" in w or "virtual table box" in w for w in warnings)

    # the restored file is the dump, byte for byte; the dump is the source page for page
    # (the backup API rewrites three counters of the header)
    assert target.read_bytes() == _dump_bytes(repo, manifest)
    source, restored = _pages(path), _pages(target)
    assert len(source) == len(restored) > 1
    assert source[1:] == restored[1:]
    assert _masked_first_page(source[0]) == _masked_first_page(restored[0])

    db = sqlite3.connect(target)
    assert db.execute(
        "SELECT rowid FROM docs WHERE docs MATCH 'fox' ORDER BY rowid"
    ).fetchall() == [
        (1,),
        (2,),
    ]
    assert db.execute("SELECT id FROM box WHERE x0 >= 4 AND x1 <= 7").fetchall() == [(2,)]
    with pytest.raises(sqlite3.OperationalError, match="no such module: nosuchmodule"):
        db.execute("SELECT * FROM v")
    db.close()


def test_restore_over_the_live_file_takes_a_safety_backup_of_it(repo, tmp_path):
    path = _make_db(tmp_path / "app.db")
    manifest = run_backup(repo, SqliteEngine(str(path))).manifest
    db = sqlite3.connect(path)
    db.execute("INSERT INTO docs VALUES ('later', 'row')")
    db.commit()
    db.close()
    report = run_restore(repo, manifest, SqliteEngine(str(path)))
    assert report.ok and report.swapped and report.safety_backup_id
    assert path.read_bytes() == _dump_bytes(repo, manifest)


def test_a_drill_passes_and_logs_what_it_did_not_check(repo, tmp_path, caplog):
    path = _make_db(tmp_path / "app.db")
    manifest = run_backup(repo, SqliteEngine(str(path))).manifest
    scratch = SqliteEngine(str(tmp_path / "scratch.db"))
    with caplog.at_level(logging.WARNING, logger="strongroom.engines.sqlite"):
        result = verify_by_restore(repo, manifest, scratch)
    assert result.ok, result.detail
    assert result.record.tables_checked == len(ORDINARY)
    assert f"not checked: {UNCHECKED_V}" in [r.getMessage() for r in caplog.records]
    assert UNCHECKED_V in scratch.unchecked
    assert not scratch.path.exists()


def test_table_stats_keeps_what_it_did_not_check(tmp_path):
    engine = SqliteEngine(str(_make_db(tmp_path / "app.db")))
    assert [t.name for t in engine.table_stats()] == ORDINARY
    assert engine.unchecked == (
        "virtual table geo: module nosuchgeo is not available here",
        UNCHECKED_V,
    )


def test_a_database_with_only_loadable_virtual_tables_leaves_nothing_unchecked(tmp_path):
    engine = SqliteEngine(str(_make_db(tmp_path / "app.db", unknown=False)))
    assert [t.name for t in engine.table_stats()] == sorted(["items", *DOCS_SHADOWS, *BOX_SHADOWS])
    assert engine.unchecked == ()


def test_a_table_that_only_shares_the_prefix_is_not_called_a_shadow_table(tmp_path):
    """With the module loaded SQLite knows which tables are its shadow tables (PRAGMA
    table_list); a table of the application named like one is checked, not attributed."""
    path = _make_db(tmp_path / "app.db", unknown=False)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE docs_archive (title TEXT)")
    db.commit()
    found = survey(db)
    db.close()
    assert "docs_archive" in [t.name for t in found.tables]
    docs = next(v for v in found.virtual if v.name == "docs")
    if sqlite3.sqlite_version_info >= (3, 37):
        assert list(docs.shadow_tables) == DOCS_SHADOWS
    assert docs.note().startswith("virtual table docs (fts5): checked through its tables")


def test_a_module_that_keeps_no_tables_in_the_file_is_reported_not_read(tmp_path):
    path = tmp_path / "stat.db"
    db = sqlite3.connect(path)
    try:
        db.execute("CREATE VIRTUAL TABLE pages USING dbstat")
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no dbstat")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    found = survey(db)
    db.close()
    assert [t.name for t in found.tables] == ["t"]
    assert found.unchecked == [
        "virtual table pages: module dbstat keeps no tables in the database file "
        "(its rows are computed or stored elsewhere)"
    ]


def test_a_module_that_cannot_open_its_table_is_reported(tmp_path):
    """Loaded, but its CREATE VIRTUAL TABLE has an option this version does not know (a
    file made by a newer SQLite): not checked, the error said; its tables still are."""
    path = tmp_path / "newer.db"
    db = sqlite3.connect(path)
    db.execute("CREATE VIRTUAL TABLE notes USING fts5(a)")
    db.execute("INSERT INTO notes VALUES ('x')")
    db.commit()
    db.execute("PRAGMA writable_schema = ON")
    db.execute(
        "UPDATE sqlite_master SET sql = 'CREATE VIRTUAL TABLE notes USING fts5(a, future=1)' "
        "WHERE name = 'notes'"
    )
    db.commit()
    db.close()
    engine = SqliteEngine(str(path))
    assert "notes_content" in [t.name for t in engine.table_stats()]
    assert len(engine.unchecked) == 1
    assert re.fullmatch(
        r"virtual table notes: module fts5 cannot open it here \(.*future.*\)",
        engine.unchecked[0],
    )


def test_a_backup_from_before_virtual_tables_were_reported_still_verifies(
    repo, tmp_path, monkeypatch
):
    """Those backups recorded the FTS5 table itself (no engine state): a restore reads it
    again to compare, instead of calling it missing."""
    path = _make_db(tmp_path / "app.db", unknown=False)

    class OldSurvey(Survey):
        def state(self):
            return None

    def old_survey(connection):
        found = survey(connection, read_virtual=True)
        return OldSurvey(found.tables, [])

    monkeypatch.setattr(sqlite_engine, "survey", old_survey)
    old = run_backup(repo, SqliteEngine(str(path))).manifest
    monkeypatch.undo()
    recorded = repo.private_section(old)
    assert recorded.engine_state is None
    assert {"docs", "box"} <= {t.name for t in recorded.tables}
    # without reading them the restored copy would lack docs and box
    assert not all(
        c.matches for c in compare_tables(recorded.tables, SqliteEngine(str(path)).table_stats())
    )

    report = run_restore(repo, old, SqliteEngine(str(tmp_path / "restored.db")))
    assert report.ok, [c for c in report.comparisons if not c.matches]
    assert {"docs", "box"} <= {c.name for c in report.comparisons if c.checksum_checked}

    new = run_backup(repo, SqliteEngine(str(path))).manifest
    report = run_restore(repo, new, SqliteEngine(str(tmp_path / "restored2.db")))
    assert report.ok and not {"docs", "box"} & {c.name for c in report.comparisons}


def test_the_plan_names_what_will_not_be_checked_here(monkeypatch):
    state = {
        VIRTUAL_TABLES: [
            {"name": "docs", "module": "fts5", "shadow_tables": DOCS_SHADOWS},
            {"name": "v", "module": "nosuchmodule", "shadow_tables": [],
             "not_checked": "module nosuchmodule is not available here"},
            # taken where the module was missing; this SQLite has it
            {"name": "box", "module": "rtree", "shadow_tables": BOX_SHADOWS,
             "not_checked": "module rtree is not available here"},
        ]
    }  # fmt: skip
    assert planned_notes(state) == [f"not checked: {UNCHECKED_V}"]
    assert planned_notes(None) == [] and planned_notes({}) == []
    monkeypatch.setattr("strongroom.engines.sqlite_stats.available_modules", lambda: None)
    assert planned_notes(state) == [
        f"not checked: {UNCHECKED_V}",
        "not checked: virtual table box: module rtree is not available here",
    ]


@pytest.mark.parametrize(
    ("sql", "module"),
    [
        ("CREATE VIRTUAL TABLE v USING nosuchmodule(a, b)", "nosuchmodule"),
        ('CREATE VIRTUAL TABLE "we""ird" using fts5(a)', "fts5"),
        ('CREATE VIRTUAL TABLE [br] USING "rtree"(id,a,b)', "rtree"),
        ("CREATE VIRTUAL TABLE x /* c */ using\n  fts5 (a)", "fts5"),
        ("CREATE VIRTUAL TABLE main.y USING spatialindex", "spatialindex"),
        ("CREATE VIRTUAL TABLE `z` USING `vec0`(embedding float[4])", "vec0"),
        ("CREATE VIRTUAL TABLE", None),
    ],
)
def test_the_module_name_is_read_from_the_schema(sql, module):
    assert module_of(sql) == module


# --- the same through the command line ---------------------------------------------------


def test_cli_backup_verify_drill_and_restore(tmp_path):
    env = repository_env(tmp_path)
    path = _make_db(tmp_path / "app.db")
    cli_ok(run_cli("init", env=env))

    backup = run_cli("backup", str(path), env=env)
    out = cli_ok(backup)
    assert re.search(r"backup \S+ complete", out)
    assert backup.stderr.decode() == ""  # nothing alarming

    assert "checksum matches" in cli_ok(run_cli("verify", "latest", env=env))

    drill = run_cli("verify", "latest", "--restore", env=env)
    out, err = cli_ok(drill), drill.stderr.decode()
    assert re.search(rf"ok .*: restored in .*{len(ORDINARY)} tables and 0 checks pass", out)
    assert f"not checked: {UNCHECKED_V}" in err and "Traceback" not in err

    target = tmp_path / "restored.db"
    dry = cli_ok(run_cli("restore", "latest", "--to", str(target), "--dry-run", env=env))
    assert f"not checked: {UNCHECKED_V}" in dry and not target.exists()
    restore = run_cli("restore", "latest", "--to", str(target), "--yes", env=env)
    out, err = cli_ok(restore), restore.stderr.decode()
    assert f"not checked: {UNCHECKED_V}" in out  # the plan
    assert f"not checked: {UNCHECKED_V}" in err  # the verification
    assert f"restore complete and verified: {len(ORDINARY)} tables match" in out
    assert "Traceback" not in err
    assert target.read_bytes() == cli_cat(env)

    replace = run_cli("restore", "latest", "--to", str(path), "--yes", env=env)
    assert "safety backup" in cli_ok(replace)


def cli_cat(env: dict[str, str]) -> bytes:
    result = run_cli("cat", "latest", env=env)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout
