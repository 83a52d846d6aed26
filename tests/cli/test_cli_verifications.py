"""Issue 14, point 8, on the command line: every verification is recorded with its kind
(``verify``/``verify --all`` a read check, ``verify --restore`` a restore drill), ``list``
shows them, and only a passed drill makes a backup "verified good" (what ``forget``
keeps)."""

from __future__ import annotations

import json

from strongroom.engines import open_engine
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.storage.local import LocalStorage
from tests.helpers import cli_ok, make_sqlite_db, repository_env, run_cli


def test_verify_all_records_read_checks_and_only_a_drill_makes_a_backup_good(tmp_path):
    env = repository_env(tmp_path)
    db = make_sqlite_db(tmp_path / "shop.db", users=100, orders=100)
    # the set-up in-process (the commands under test run as a user runs them)
    Repository.init(LocalStorage(tmp_path / "repo"), key_file=tmp_path / "repo.key")
    repo = Repository.open(LocalStorage(tmp_path / "repo"), KeySource(tmp_path / "repo.key"))
    older, newer = (run_backup(repo, open_engine(str(db))).manifest.backup_id for _ in range(2))

    out = cli_ok(run_cli("verify", "--all", env=env))
    assert "recorded 2 read check(s)" in out
    table = cli_ok(run_cli("list", env=env))  # the VERIFIED column
    assert "never" not in table and table.count("read ok") == 2 and "good:" not in table

    cli_ok(run_cli("verify", older, "--restore", env=env))  # a drill (SQLite: a temp file)
    cli_ok(run_cli("verify", older, env=env))  # a newer read check does not undo it
    listed = {b["id"]: b for b in json.loads(cli_ok(run_cli("list", "--json", env=env)))}
    assert listed[older]["verified_good"] is True
    assert listed[older]["last_verification"]["kind"] == "read"
    assert listed[older]["last_restore_drill"]["kind"] == "restore"
    assert listed[older]["last_restore_drill"]["ok"] is True
    assert listed[newer]["verified_good"] is False  # read-checked only
    assert listed[newer]["last_verification"]["kind"] == "read"
    assert listed[newer]["last_verification"]["ok"] is True
    assert listed[newer]["last_restore_drill"] is None

    decided = json.loads(
        cli_ok(run_cli("forget", "--keep-last", "1", "--dry-run", "--json", env=env))
    )
    reasons = {e["id"]: e["reasons"] for e in decided["backups"] if e["action"] == "keep"}
    assert reasons == {older: ["newest verified good"], newer: ["last 1 of 1"]}
