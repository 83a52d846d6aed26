"""Attacks on de665ff (the recheck of the index cache after a failed chunk read logs at
INFO): a restore of real damage is ONE ``error:`` line on stderr and nothing else (no
WARNING of the recheck) for SQLite, PostgreSQL and MySQL targets, each through the real
command line with a true shared cache (built by the backup) in place; a cache that truly
fails (its path is a folder, its folder cannot be made, its file is not a database)
still warns, and the damage is still the one error line. The tests run as root here, so
"unreadable" and "read-only" are made with paths, not modes."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.cli.test_signals import env, run  # noqa: F401 (the fixture)
from tests.helpers import make_sqlite_db

pytestmark = pytest.mark.slow


def _cached(given: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**given, "STRONGROOM_CACHE_DIR": str(tmp_path / "cache")}


def _damage_every_pack(repo: Path) -> None:
    packs = [p for p in (repo / "packs").rglob("*") if p.is_file()]
    assert packs
    for pack in packs:  # whichever blob is read first fails
        data = bytearray(pack.read_bytes())
        data[len(data) // 2] ^= 0x10
        pack.write_bytes(bytes(data))


def _one_error_line_only(code: int, err: str) -> str:
    assert code == 7, (code, err)
    assert "WARNING" not in err, err
    assert "rechecked" not in err, err  # the INFO line is not shown without -v
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


def test_sqlite_restore_of_real_damage_is_one_line(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
) -> None:
    given = _cached(env, tmp_path)
    db = make_sqlite_db(tmp_path / "app.db", users=2000, orders=6000)
    code, _, err = run("backup", str(db), env=given)
    assert code == 0, err
    assert (tmp_path / "cache").exists()  # a true shared cache is in place
    _damage_every_pack(tmp_path / "repo")
    code, _, err = run("restore", "latest", "--to", str(tmp_path / "out.db"), env=given)
    line = _one_error_line_only(code, err)
    assert "damaged" in line or "missing" in line, line
    code, _, err = run("restore", "latest", "--to", str(db), "--yes", env=given)
    line = _one_error_line_only(code, err)
    assert "untouched" in line, line
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (6000,)


def test_postgres_restore_of_real_damage_is_one_line(
    pg_server,  # type: ignore[no-untyped-def]
    pg_db: str,
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
) -> None:
    given = _cached(env, tmp_path)
    name = pg_db.rsplit("/", 1)[1]
    pg_server.psql(
        name,
        "CREATE TABLE t (id int PRIMARY KEY, v text);"
        "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g;",
    )
    code, _, err = run("backup", pg_db, env=given)
    assert code == 0, err
    _damage_every_pack(tmp_path / "repo")
    pg_server.psql(name, "DELETE FROM t WHERE id > 10")
    restore = ("restore", "latest", "--to", pg_db, "--yes", "--no-safety-backup")
    code, _, err = run(*restore, env=given)
    line = _one_error_line_only(code, err)
    assert "untouched" in line, line
    with pg_server.connect(name) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (10,)


def test_mysql_restore_of_real_damage_is_one_line(
    mariadb_server,  # type: ignore[no-untyped-def]
    mysql_db: str,
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
) -> None:
    given = _cached(env, tmp_path)
    name = mysql_db.rsplit("/", 1)[1]
    rows = ",".join(f"({i}, '{'x' * 40}{i}')" for i in range(1, 3001))
    mariadb_server.execute(
        name,
        ["CREATE TABLE t (id INT PRIMARY KEY, v TEXT)", f"INSERT INTO t VALUES {rows}"],
    )
    code, _, err = run("backup", mysql_db, env=given)
    assert code == 0, err
    _damage_every_pack(tmp_path / "repo")
    restore = ("restore", "latest", "--to", mysql_db, "--yes", "--no-safety-backup")
    code, _, err = run(*restore, env=given)
    line = _one_error_line_only(code, err)
    assert "untouched" in line, line
    assert mariadb_server.password not in err


@pytest.mark.parametrize("broken", ["folder", "no-folder", "not-a-database"])
def test_a_cache_that_truly_fails_still_warns_beside_the_one_error(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
    broken: str,
) -> None:
    given = _cached(env, tmp_path)
    db = make_sqlite_db(tmp_path / "app.db", users=2000, orders=6000)
    code, _, err = run("backup", str(db), env=given)
    assert code == 0, err
    _damage_every_pack(tmp_path / "repo")
    cache = tmp_path / "cache"
    (file,) = [p for p in cache.rglob("*") if p.is_file() and p.suffix in (".db", ".sqlite")]
    for side in cache.rglob("*-*"):
        if side.is_file() and side.name.startswith(file.name):
            side.unlink()  # -wal, -shm
    if broken == "folder":
        file.unlink()
        file.mkdir()
    elif broken == "no-folder":
        shutil.rmtree(cache)
        cache.write_text("a file where the cache folder should be\n")
    else:
        file.write_bytes(b"this is not an SQLite database" * 100)
    code, _, err = run("restore", "latest", "--to", str(tmp_path / "out.db"), env=given)
    assert code == 7, (code, err)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    assert "is rechecked" not in err, err  # the recheck stays out of sight (INFO)
    if broken == "not-a-database":  # rebuilt in place: one warning, the file is good again
        assert "is unreadable: rebuilding it" in err, err
        assert err.count("WARNING") == 1, err
    else:  # said (a folder where the file should be: "unreadable", then "cannot be used")
        assert "WARNING" in err and "for this run" in err, err
