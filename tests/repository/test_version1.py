"""A version 1 repository (loose ``chunks/``, config version 1) opens, its backups
restore, a new backup goes into packs (deduplicated against the loose chunks), the config
becomes version 2, and both backups restore (design.md "Packs", "Version 1 repositories")."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest

from strongroom.engines.sqlite import SqliteEngine
from strongroom.errors import StorageError, UnsupportedFormat
from strongroom.repository.chunks import PackSession
from strongroom.repository.config import RepositoryConfig
from strongroom.repository.keys import KeySource
from strongroom.repository.layout import CHUNKS_PREFIX, CONFIG_KEY, chunk_key
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.check import check_repository
from strongroom.services.restore import run_restore
from strongroom.storage.local import LocalStorage
from strongroom.storage.memory import MemoryStorage
from tests.helpers import make_sqlite_db


def make_version1(repo: Repository, manifest: Manifest) -> None:
    """Turn a repository holding one packed backup into what strongroom wrote before
    packs: each chunk a loose ``chunks/<xx>/<id>`` object, no ``packs/`` nor ``index/``,
    config version 1 (``ChunkStore.store`` still writes the version 1 layout)."""
    for ref in manifest.chunks:
        repo.chunks.store(ref.chunk_id, repo.chunks.load(ref.chunk_id))
    for prefix in ("packs/", "index/"):
        for key in list(repo.storage.list(prefix)):
            repo.storage.delete(key)
    config = RepositoryConfig.from_json(repo.storage.get(CONFIG_KEY))
    repo.storage.put(CONFIG_KEY, dataclasses.replace(config, version=1).to_json())


def _open(storage: LocalStorage | MemoryStorage, tmp_path: Path) -> Repository:
    return Repository.open(storage, KeySource(key_file=tmp_path / "k"))


def test_a_version1_repository_takes_packed_backups_and_restores_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(tmp_path / "cache"))
    storage = LocalStorage(tmp_path / "repo")
    Repository.init(storage, key_file=tmp_path / "k")
    shop = make_sqlite_db(tmp_path / "shop.db", users=3000, orders=9000)
    old = run_backup(_open(storage, tmp_path), SqliteEngine(str(shop))).manifest
    make_version1(_open(storage, tmp_path), old)
    assert json.loads(storage.get(CONFIG_KEY))["version"] == 1
    assert not list(storage.list("packs/")) and not list(storage.list("index/"))
    loose = sorted(storage.list(CHUNKS_PREFIX))
    assert loose == sorted({chunk_key(r.chunk_id) for r in old.chunks})

    repo = _open(storage, tmp_path)  # a version 1 repository opens as it is
    assert repo.config.version == 1
    restored_old = tmp_path / "old.db"
    assert run_restore(repo, old, SqliteEngine(f"sqlite://{restored_old}")).ok

    with sqlite3.connect(shop) as db:
        db.execute("UPDATE users SET email = email || '!' WHERE id % 97 = 0")
    new = run_backup(repo, SqliteEngine(str(shop))).manifest
    assert 0 < new.new_chunk_count < new.chunk_count  # unchanged chunks found loose
    assert json.loads(storage.get(CONFIG_KEY))["version"] == 2
    assert repo.config.version == 2
    assert list(storage.list("packs/")) and list(storage.list("index/"))
    assert sorted(storage.list(CHUNKS_PREFIX)) == loose  # nothing new written loose

    fresh = _open(storage, tmp_path)  # another process: packs and loose chunks both read
    for manifest, name in ((old, "old2.db"), (new, "new.db")):
        assert run_restore(fresh, manifest, SqliteEngine(f"sqlite://{tmp_path / name}")).ok
    with sqlite3.connect(tmp_path / "new.db") as db:
        assert db.execute("SELECT count(*) FROM users WHERE email LIKE '%!'").fetchone()[0] > 0
    report = check_repository(fresh, read_data=True)
    assert report.problems == []
    assert report.stored_chunks == len({r.chunk_id for m in (old, new) for r in m.chunks})


def test_versions_above_2_are_refused_and_1_and_2_are_read(tmp_path: Path) -> None:
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    document = json.loads(storage.get(CONFIG_KEY))
    assert document["version"] == 2  # new repositories are version 2
    for version in (1, 2):
        storage.put(CONFIG_KEY, json.dumps({**document, "version": version}).encode())
        assert _open(storage, tmp_path).config.version == version
    storage.put(CONFIG_KEY, json.dumps({**document, "version": 3}).encode())
    with pytest.raises(UnsupportedFormat, match="version 3 is not supported"):
        _open(storage, tmp_path)


class FailingPacks(MemoryStorage):
    """Memory storage whose pack uploads fail after the first ``good`` ones."""

    def __init__(self, good: int) -> None:
        super().__init__("failing-packs")
        self.good = good
        self.packs = 0

    def put(self, key: str, data: bytes) -> None:
        if key.startswith("packs/"):
            self.packs += 1
            if self.packs > self.good:
                raise StorageError(f"put {key} failed (simulated)")
        super().put(key, data)


def test_a_backup_that_fails_midway_writes_no_index_and_no_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(tmp_path / "cache"))
    storage = FailingPacks(good=2)
    Repository.init(storage, key_file=tmp_path / "k")
    repo = _open(storage, tmp_path)
    store = repo.chunks
    monkeypatch.setattr(store, "pack_writer", lambda: PackSession(store, 64 * 1024))
    shop = make_sqlite_db(tmp_path / "shop.db", users=3000, orders=9000)
    with pytest.raises(StorageError, match="simulated"):
        run_backup(repo, SqliteEngine(str(shop)))
    assert len(list(storage.list("packs/"))) == 2  # left for prune
    assert not list(storage.list("index/"))
    assert not list(storage.list("backups/"))
    storage.good = 10**6  # the next backup works, and restores
    m = run_backup(_open(storage, tmp_path), SqliteEngine(str(shop))).manifest
    assert len(list(storage.list("index/"))) == 1
    assert run_restore(_open(storage, tmp_path), m, SqliteEngine(f"sqlite://{tmp_path}/r.db")).ok
