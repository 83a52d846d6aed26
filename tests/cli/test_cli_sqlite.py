"""The command line as a user runs it, on SQLite and a local repository."""

import json
import re
import stat

import pytest
from blake3 import blake3

from tests.helpers import cli_fails as _fails
from tests.helpers import cli_ok as _ok
from tests.helpers import (
    delete_chunk_pack,
    flip_chunk_byte,
    make_sqlite_db,
    open_test_repo,
    repository_env,
    run_cli,
    sqlite_counts,
)


@pytest.fixture()
def env(tmp_path):
    return repository_env(tmp_path)


def test_full_cycle(tmp_path, env):
    db = make_sqlite_db(tmp_path / "shop.db")
    out = _ok(run_cli("init", env=env))
    assert "key file" in out and "lost" in out
    assert stat.S_IMODE((tmp_path / "repo.key").stat().st_mode) == 0o600

    out = _ok(run_cli("backup", str(db), "--tag", "daily", env=env))
    backup_id = re.search(r"backup (\S+) complete", out).group(1)
    assert "raw size" in out and "new stored" in out and "dedup ratio" in out

    out = _ok(run_cli("backup", env={**env, "DATABASE_URL": f"sqlite://{db}"}))
    assert "nothing new" in out

    listed = json.loads(_ok(run_cli("list", "--json", env=env)))
    assert listed[0]["id"] == backup_id
    assert listed[0]["tags"] == ["daily"] and listed[0]["target"] == "shop"
    assert backup_id in _ok(run_cli("list", "--target", "shop", env=env))
    assert "no backups" in _ok(run_cli("list", "--target", "other", env=env))

    shown = json.loads(_ok(run_cli("show", backup_id, "--json", env=env)))
    assert {t["name"]: t["rows"] for t in shown["tables"]} == sqlite_counts(db)
    assert "orders" in _ok(run_cli("show", backup_id[:-2], env=env))

    assert "checksum matches" in _ok(run_cli("verify", "--all", env=env))
    _ok(run_cli("verify", "latest", env=env))

    restored = tmp_path / "restored.db"
    out = _ok(run_cli("restore", "latest", "--to", str(restored), "--yes", env=env))
    assert "verified" in out
    assert sqlite_counts(restored) == sqlite_counts(db)

    dump = run_cli("cat", backup_id, env=env)
    assert dump.returncode == 0
    assert blake3(dump.stdout).hexdigest() == shown["stream_checksum"]
    (tmp_path / "raw.db").write_bytes(dump.stdout)
    assert sqlite_counts(tmp_path / "raw.db") == sqlite_counts(db)


def test_the_repository_is_readable_without_strongroom_list_needing_no_key(tmp_path, env):
    db = make_sqlite_db(tmp_path / "shop.db")
    _ok(run_cli("init", env=env))
    _ok(run_cli("backup", str(db), env=env))
    no_key = {**env, "STRONGROOM_KEY_FILE": ""}
    out = _ok(run_cli("list", env=no_key))
    assert "shop" in out
    shown = _ok(run_cli("show", "latest", env=no_key))
    assert "encrypted" in shown


def test_passphrase_repository(tmp_path, env):
    db = make_sqlite_db(tmp_path / "shop.db")
    env = {**env, "STRONGROOM_KEY_FILE": "", "STRONGROOM_PASSPHRASE": "a long passphrase"}
    out = _ok(run_cli("init", "--passphrase", env=env))
    assert "passphrase" in out
    assert not (tmp_path / "config").exists()
    _ok(run_cli("backup", str(db), env=env))
    _ok(run_cli("verify", "latest", env=env))
    _fails(
        run_cli("verify", "latest", env={**env, "STRONGROOM_PASSPHRASE": "not the passphrase"}),
        4,
        "wrong passphrase",
    )


def test_no_encryption_warns(tmp_path, env):
    result = run_cli("init", "--no-encryption", env=env)
    assert result.returncode == 0
    assert "NOT encrypted" in result.stderr.decode()


def test_bad_input_gets_one_line_and_an_exit_code(tmp_path, env):
    db = make_sqlite_db(tmp_path / "shop.db")
    _fails(run_cli("list", env=env), 3, "no strongroom repository")
    _fails(run_cli("backup", str(db), env={**env, "STRONGROOM_REPO": ""}), 2, "--repo")
    _ok(run_cli("init", env=env))
    _fails(run_cli("init", env=env), 3, "already exists")
    _fails(run_cli("backup", env=env), 2, "DATABASE_URL")
    _fails(run_cli("backup", "mongodb://x/y", env=env), 5, "unsupported database URL")
    _fails(run_cli("backup", str(tmp_path / "missing.db"), env=env), 5, "does not exist")
    _ok(run_cli("backup", str(db), env=env))
    _fails(run_cli("show", "20990101T000000Z-00000000", env=env), 3, "no backup")
    _fails(run_cli("restore", "nope", "--to", str(tmp_path / "x.db"), env=env), 3, "no backup")
    _fails(run_cli("restore", "latest", "--to", str(db), env=env), 2, "without confirmation")
    _fails(run_cli("verify", env=env), 2, "--all")

    other = tmp_path / "other"
    _ok(
        run_cli(
            "init",
            env={**env, "STRONGROOM_REPO": str(other), "STRONGROOM_KEY_FILE": str(other) + ".key"},
        )
    )
    _fails(
        run_cli("verify", "latest", env={**env, "STRONGROOM_KEY_FILE": str(other) + ".key"}),
        4,
        "does not open this repository",
    )
    _fails(
        run_cli("verify", "latest", env={**env, "STRONGROOM_KEY_FILE": str(tmp_path / "nokey")}),
        4,
        "does not exist",
    )


def test_a_damaged_chunk_fails_verify_and_is_named(tmp_path, env):
    db = make_sqlite_db(tmp_path / "shop.db")
    _ok(run_cli("init", env=env))
    _ok(run_cli("backup", str(db), env=env))
    repo = open_test_repo(tmp_path)  # chunks live in packs since issue 19
    (manifest,) = repo.list_backups()
    victim = manifest.chunks[-1].chunk_id
    flip_chunk_byte(repo, victim, at=100)  # its blob in its pack
    err = _fails(run_cli("verify", "latest", env=env), 7, victim)
    assert "DAMAGED" in err
    _fails(run_cli("restore", "latest", "--to", str(tmp_path / "r.db"), env=env), 7, victim)
    assert not (tmp_path / "r.db").exists()
    delete_chunk_pack(repo, victim)
    _fails(run_cli("verify", "--all", env=env), 7, "missing")


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs mounted for the repository (needs root, as in CI)."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_at_the_repository_fails_clearly_and_lists_nothing(tmp_path, tiny_disk):
    env = {
        "STRONGROOM_REPO": str(tiny_disk / "repo"),
        "STRONGROOM_KEY_FILE": str(tmp_path / "k"),
    }
    db = make_sqlite_db(tmp_path / "big.db", users=6000, orders=20000)
    _ok(run_cli("init", env=env))
    _fails(run_cli("backup", str(db), env=env), 6, "disk is full")
    assert json.loads(_ok(run_cli("list", "--json", env=env))) == []
    leftovers = [p.name for p in (tiny_disk / "repo").rglob(".tmp-*")]
    assert leftovers == []


def test_single_table_restore_of_a_sqlite_backup_says_what_to_do(tmp_path, env):
    db = make_sqlite_db(tmp_path / "shop.db", users=10, orders=10)
    _ok(run_cli("init", env=env))
    _ok(run_cli("backup", str(db), env=env))
    copy = tmp_path / "copy.db"
    _fails(
        run_cli("restore", "latest", "--to", f"sqlite://{copy}", "--table", "users", env=env),
        2,
        r"--table works with PostgreSQL and MySQL backups; restore a SQLite backup whole",
    )
    assert not copy.exists()
