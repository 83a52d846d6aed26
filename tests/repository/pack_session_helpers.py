"""Shared by the pack session attack modules: a local repository with tiny packs (an
index object every 2 packs, batches of 4 chunks), and the checks every attack ends with."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from strongroom.engines.sqlite import SqliteEngine
from strongroom.repository import pack_session
from strongroom.repository.keys import KeySource
from strongroom.repository.pack_session import PackSession
from strongroom.repository.repository import Repository
from strongroom.services import backup
from strongroom.services.check import check_repository
from strongroom.services.prune import prune
from strongroom.services.restore import run_restore
from strongroom.services.verify import verify_backup
from strongroom.storage.local import LocalStorage

PACK_BYTES = 8 * 1024


def _open(storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repository:
    repo = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    store = repo.chunks
    monkeypatch.setattr(store, "pack_writer", lambda: PackSession(store, PACK_BYTES))
    return repo


def tiny_pack_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStorage:
    """A new local repository; an index object every 2 packs, batches of 4 chunks (each
    test module's ``storage`` fixture)."""
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(pack_session, "INDEX_MAX_PACKS", 2)
    monkeypatch.setattr(backup, "BATCH_CHUNKS", 4)
    local = LocalStorage(tmp_path / "repo")
    Repository.init(local, key_file=tmp_path / "k")
    return local


def _entries(repo: Repository) -> list[str]:
    repo.chunks.refresh_index()
    index = repo.chunks.index
    return [loc.chunk_id for pack_id, *_ in index.packs() for loc in index.pack_entries(pack_id)]


def _rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        users = db.execute("SELECT * FROM users ORDER BY id").fetchall()
        orders = db.execute("SELECT count(*) FROM orders").fetchall()
    return [*users, *orders]


def _restores(repo: Repository, manifest, source: Path, into: Path) -> None:
    assert run_restore(repo, manifest, SqliteEngine(f"sqlite://{into}")).ok
    assert _rows(into) == _rows(source)


def _all_well(repo: Repository, kept: list, twice_ok: set[str] | None = None) -> None:
    """Prune, then check --read-data, and every kept backup verifies; no chunk stored
    twice, except those of ``twice_ok`` (chunks two backups running at once both stored:
    prune keeps one live copy, the other stays as garbage in a pack it keeps)."""
    prune(repo)
    report = check_repository(repo, read_data=True)
    assert report.problems == []
    for manifest in kept:
        verify_backup(repo, manifest)
    stored = _entries(repo)
    twice = {c for c, n in Counter(stored).items() if n > 1} - (twice_ok or set())
    assert not twice, f"{len(twice)} chunk(s) stored in two packs"


def _files(directory: Path) -> int:
    return sum(1 for p in directory.rglob("*") if p.is_file()) if directory.exists() else 0
