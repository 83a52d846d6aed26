"""Small helpers shared by the tests (no fakes of databases: real SQLite files)."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
STRONGROOM = [sys.executable, "-m", "strongroom.cli.app"]


def make_sqlite_db(path: Path, users: int = 2000, orders: int = 6000, seed: int = 7) -> Path:
    """A small shop database with random-looking (not repetitive) content; grows if present."""
    rng = random.Random(seed)
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, email TEXT, bio TEXT);"
        "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, user_id INT, total REAL,"
        " note TEXT);"
    )
    start = db.execute("SELECT coalesce(max(id), 0) FROM users").fetchone()[0]
    db.executemany(
        "INSERT INTO users VALUES (?, ?, ?)",
        [
            (start + i, f"u{start + i}@example.com", rng.randbytes(rng.randint(20, 300)).hex())
            for i in range(1, users + 1)
        ],
    )
    db.executemany(
        "INSERT INTO orders (user_id, total, note) VALUES (?, ?, ?)",
        [
            (rng.randint(1, start + users), rng.random() * 500, rng.randbytes(24).hex())
            for _ in range(orders)
        ],
    )
    db.commit()
    db.close()
    return path


def sqlite_counts(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: db.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
    finally:
        db.close()


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    """Run the real command line in a subprocess, as a user would."""
    full_env = dict(os.environ)
    full_env.pop("STRONGROOM_REPO", None)
    full_env.pop("STRONGROOM_KEY_FILE", None)
    full_env.pop("STRONGROOM_PASSPHRASE", None)
    full_env.pop("DATABASE_URL", None)
    full_env.update(env or {})
    return subprocess.run(
        [*STRONGROOM, *args],
        env=full_env,
        input=stdin,
        capture_output=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        check=False,
    )


def cli_ok(result: subprocess.CompletedProcess[bytes]) -> str:
    """Assert a CLI run succeeded; return its stdout."""
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    return result.stdout.decode()


def cli_fails(result: subprocess.CompletedProcess[bytes], code: int, pattern: str) -> str:
    """Assert a CLI run failed with ``code`` and exactly one ``error:`` line matching
    ``pattern``, without a traceback; return its stderr."""
    import re

    err = result.stderr.decode()
    assert result.returncode == code, (result.returncode, err, result.stdout.decode())
    assert re.search(pattern, err), err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err
    return err


def repository_env(tmp_path: Path) -> dict[str, str]:
    """A local repository and key file under ``tmp_path``, as environment variables."""
    return {
        "STRONGROOM_REPO": str(tmp_path / "repo"),
        "STRONGROOM_KEY_FILE": str(tmp_path / "repo.key"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "STRONGROOM_CACHE_DIR": str(tmp_path / "cache"),  # the index cache (issue 19)
    }


def run_cli_alone(
    *args: str, env: dict[str, str] | None = None, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The real CLI in ``cwd`` with none of strongroom's or the scripts' variables
    (``settings_sources.ENVIRONMENT_VARIABLES``) but ``env``; ``$HOME`` is ``cwd`` so
    default key files stay there. Text output."""
    from strongroom.services.settings_sources import ENVIRONMENT_VARIABLES

    clean = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT_VARIABLES}
    clean["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])
    clean["HOME"] = str(cwd)
    clean.pop("XDG_CONFIG_HOME", None)
    clean.update(env or {})
    return subprocess.run(
        [*STRONGROOM, *args],
        env=clean,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def text_ok(result: subprocess.CompletedProcess[str]) -> str:
    """Assert a text-mode CLI run succeeded; return its stdout."""
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def owned_database(server: Any, password: str, prefix: str, rows: int) -> tuple[str, str]:
    """A new login role ``<prefix>_<hex>`` with ``password`` (any characters) owning a new
    database with table ``t`` of ``rows`` rows; returns (role, database). ``server`` is a
    ``strongroom_servers.postgres.PgServer``."""
    import uuid

    from psycopg import sql

    role = f"{prefix}_{uuid.uuid4().hex[:8]}"
    db = f"{prefix}_{uuid.uuid4().hex[:12]}"
    server.create_database(db)
    with server.connect() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        conn.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(db), sql.Identifier(role)
            )
        )
    with server.connect(db) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute(
            sql.SQL("INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, {}) g").format(
                sql.Literal(rows)
            )
        )
    return role, db


def chunk_blob(repo: Any, chunk_id: str) -> tuple[str, int, int]:
    """``(pack object key, offset, length)`` of a packed chunk's blob (issue 19: backups
    store chunks in packs); fails the test when the index does not list the chunk."""
    found = repo.chunks.locate(chunk_id)
    assert found is not None, f"chunk {chunk_id} is not in a pack"
    return f"packs/{found.pack_id[:2]}/{found.pack_id}", found.offset, found.length


def flip_chunk_byte(repo: Any, chunk_id: str, at: int = -3) -> None:
    """Flip one stored byte of a packed chunk's blob (``at``: index within the blob)."""
    key, offset, length = chunk_blob(repo, chunk_id)
    data = bytearray(repo.storage.get(key))
    data[offset + (at % length)] ^= 0xFF
    repo.storage.put(key, bytes(data))


def delete_chunk_pack(repo: Any, chunk_id: str) -> set[str]:
    """Delete the pack that holds ``chunk_id``; return the ids of every chunk it held."""
    key, _, _ = chunk_blob(repo, chunk_id)
    held = {e.chunk_id for e in repo.chunks.index.pack_entries(key.rsplit("/", 1)[-1])}
    repo.storage.delete(key)
    return held


class LooseWrites:
    """A stand-in for ``ChunkStore.pack_writer()`` that stores each new chunk as a
    version 1 loose object ``chunks/<xx>/<id>`` (what backups wrote before issue 19), for
    tests of what still works on loose chunks only (prune, until it handles packs)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def store(self, chunk_id: str, plaintext: bytes, *, fast: bool = False) -> int:
        return int(self._store.store(chunk_id, plaintext, fast=fast))

    def flush(self) -> list[str]:
        return []

    def abort(self) -> None:
        pass


def write_loose_chunks(repo: Any) -> Any:
    """Make ``repo``'s backups write loose chunks (``LooseWrites``); returns ``repo``."""
    store = repo.chunks
    store.pack_writer = lambda: LooseWrites(store)
    return repo


def unpack_to_loose(repo: Any) -> None:
    """Rewrite every packed chunk of ``repo`` as a version 1 loose object and delete
    ``packs/`` and ``index/``: for tests that need one file per chunk (a FIFO in place of
    a chunk), which the loose layout, still read, gives."""
    for chunk_id in list(repo.chunks.index.chunk_ids()):
        repo.chunks.store(chunk_id, repo.chunks.load(chunk_id))
    for prefix in ("packs/", "index/"):
        for key in list(repo.storage.list(prefix)):
            repo.storage.delete(key)


def open_test_repo(root: Path) -> Any:
    """The local repository of ``repository_env(root)``, its index cache where the CLI
    keeps it for that environment."""
    from strongroom.repository.keys import KeySource
    from strongroom.repository.repository import Repository
    from strongroom.storage.local import LocalStorage

    old = os.environ.get("STRONGROOM_CACHE_DIR")
    os.environ["STRONGROOM_CACHE_DIR"] = str(root / "cache")
    try:
        repo = Repository.open(LocalStorage(root / "repo"), KeySource(root / "repo.key"))
        repo.chunks.refresh_index()  # the cache is opened while the variable is set
        return repo
    finally:
        if old is None:
            del os.environ["STRONGROOM_CACHE_DIR"]
        else:
            os.environ["STRONGROOM_CACHE_DIR"] = old


def sample_manifest(chunks: Any, **fields: Any) -> Any:
    """A complete manifest listing ``chunks`` (``ChunkRef`` objects), plain private
    section; ``fields`` override any other field (engine, tags, raw_size ...)."""
    from strongroom.repository.manifest import STATUS_COMPLETE, Manifest

    values: dict[str, Any] = {
        "backup_id": "20261201T000000Z-0000abcd",
        "target": "shop",
        "engine": "postgresql",
        "engine_version": "15",
        "tool_version": "15",
        "dump_format": "pg_dump-custom",
        "started_at": "2026-12-01T00:00:00Z",
        "finished_at": "2026-12-01T00:00:01Z",
        "duration_seconds": 1.0,
        "tags": (),
        "status": STATUS_COMPLETE,
        "created_by": "me@host",
        "raw_size": sum(ref.size for ref in chunks),
        "stored_new_bytes": 10,
        "new_chunk_count": len(chunks),
        "stream_checksum": "0" * 64,
        "chunks": chunks,
        "private_sealed": {"encoding": "plain", "data": {}},
    }
    values.update(fields)
    return Manifest(**values)
