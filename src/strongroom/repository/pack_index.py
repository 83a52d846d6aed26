"""Index objects and the local SQLite index cache (docs/design.md "Packs").

**Index object** ``index/<first two hex>/<index id>``: ``seal(zstd(JSON))`` (the
repository's ``Sealer``: age when encrypted, the zstd frame as is otherwise), the index id
the keyed BLAKE3 of its bytes. JSON::

    {"format": "strongroom-index", "version": 1,
     "packs": [{"id": <pack id>, "size": <bytes>, "key": <base64 pack key | null>,
                "chunks": <base64 of the pack's 44-byte header entries>}],
     "supersedes": [<index id>, ...]}

- :func:`write_index_objects` (packs -> index objects, ``INDEX_MAX_PACKS`` per object),
  :func:`encode_index` / :func:`decode_index` (bytes <-> :class:`IndexObject`),
  :func:`read_index_object` (get + decode).

**Cache** (:class:`IndexCache`): the union of every index object, in SQLite at
``cache_path(repository id)``; one row per (chunk, pack listing) of 6 small columns
(about 110 bytes of disk per chunk with its B-trees, measured in
``tests/repository/test_pack_index.py``). Lookups go to SQLite (page cache
capped at 16 MiB), never to an in-memory set of ids. ``sync()`` lists ``index/``,
loads the objects not yet cached, then drops the ones gone. A backup's listing of
version 1 loose chunks (``replace_loose``) goes to a private SQLite database of the
process, so the "known" check needs no set of ids either. Thread-safe (one connection
behind a lock); several processes share the file (WAL, short transactions, a busy
timeout, and a private cache as the fallback: never "database is locked").

Queries for prune/check/stats: ``locations`` (every copy of a chunk), ``contains``,
``chunk_ids`` (streamed), ``packs``, ``pack_entries``, ``index_ids``, ``superseded_ids``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from strongroom.errors import ObjectNotFound
from strongroom.pipeline.encryption import Sealer
from strongroom.repository.cache_files import CACHE_ENV as CACHE_ENV
from strongroom.repository.cache_files import CACHE_FILE as CACHE_FILE
from strongroom.repository.cache_files import CacheUnusable as CacheUnusable
from strongroom.repository.cache_files import cache_path as cache_path
from strongroom.repository.cache_files import is_locked, temp_cache_dir
from strongroom.repository.index_objects import (
    INDEX_FORMAT,
    INDEX_MAX_PACKS,
    INDEX_PREFIX,
    INDEX_VERSION,
    IndexDamaged,
    IndexedPack,
    IndexObject,
    decode_index,
    encode_index,
    index_id_of_key,
    index_key,
    list_index_ids,
    read_index_object,
    write_index_objects,
)
from strongroom.repository.layout import is_chunk_id
from strongroom.repository.packs import ENTRY
from strongroom.storage.base import Storage

log = logging.getLogger("strongroom.repository")
_T = TypeVar("_T")


def _fetch_all(query: str, params: list[bytes], db: sqlite3.Connection) -> list[Any]:
    return db.execute(query, params).fetchall()


CACHE_SCHEMA = "2"
CACHE_PAGE_BYTES = (
    16 * 1024 * 1024
)  # SQLite page cache cap per connection (the OS caches the file too)
# ids per query of ``known_among`` (two parameters each: far below SQLite's 32,766 limit)
KNOWN_QUERY_IDS = 256
CACHE_BUSY_TIMEOUT = 60.0  # seconds a write waits for another process's (short) one

# --- the local cache ----------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS index_objects (
    num INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, supersedes TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS packs (
    num INTEGER PRIMARY KEY, pack_id BLOB NOT NULL, index_num INTEGER NOT NULL,
    size INTEGER NOT NULL, key BLOB, UNIQUE (pack_id, index_num));
CREATE INDEX IF NOT EXISTS packs_by_index ON packs (index_num);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id BLOB NOT NULL, pack_num INTEGER NOT NULL,
    offset INTEGER NOT NULL, length INTEGER NOT NULL, raw_length INTEGER NOT NULL,
    position INTEGER NOT NULL, PRIMARY KEY (chunk_id, pack_num)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_pack ON chunks (pack_num);
CREATE TABLE IF NOT EXISTS loose (chunk_id BLOB PRIMARY KEY) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class ChunkLocation:
    """Where one copy of a chunk is: pack, pack key (``None`` unencrypted), the blob's
    ``offset``/``length`` in bytes within the pack object, the plaintext ``raw_length``
    and the blob's ``position`` (its nonce)."""

    chunk_id: str
    pack_id: str
    key: bytes | None
    offset: int
    length: int
    raw_length: int
    position: int


class IndexCache:
    """The SQLite copy of every index object (see the module docstring).

    ``path`` is the cache file (``cache_path``); ``storage`` and ``sealer`` read index
    objects. A cache file that does not open is deleted and rebuilt. Any SQLite error
    later on (another process holding a write lock longer than ``CACHE_BUSY_TIMEOUT``,
    a read-only or damaged file, a full disk) switches this process to a private cache
    in a temporary folder, rebuilt from ``index/`` (said once in the log); the shared
    file is deleted first when it is damaged. Transactions on the shared file are short
    (one index object each); the listing of loose chunks (``replace_loose``) lives in a
    private database attached to the connection, so nothing a backup lists blocks other
    processes. Every method may raise ``StorageError`` (listing, reading index objects;
    ``CacheUnusable`` when no cache at all can be written) besides the documented ones.
    """

    def __init__(
        self,
        path: Path,
        storage: Storage,
        sealer: Sealer,
        name: Callable[[bytes], str] | None = None,
    ) -> None:
        self.path = path
        self._storage = storage
        self._sealer = sealer
        self._name = name  # the keyed hash: an index object's bytes must match its name
        self._lock = threading.RLock()
        self._private = False  # switched to a temporary cache of this process
        self._packs_listed = False  # replace_loose listed packs/ (``known``)
        self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return self._private_db(f"its folder cannot be made ({exc.strerror})")
        for attempt in range(2):
            db: sqlite3.Connection | None = None
            try:
                db = self._open(self.path)
                with contextlib.suppress(OSError):
                    os.chmod(self.path, 0o600)  # it holds pack keys
                return db
            except sqlite3.DatabaseError as exc:
                if db is not None:
                    db.close()
                if attempt or is_locked(exc) or "readonly" in str(exc).replace(" ", ""):
                    return self._private_db(str(exc))
                log.warning("index cache %s is unreadable: rebuilding it", self.path)
                self._remove_files(self.path)
            except OSError as exc:  # e.g. the path is a folder
                return self._private_db(str(exc))
        raise AssertionError("unreachable")

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=CACHE_BUSY_TIMEOUT, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL").fetchall()
            db.execute(f"PRAGMA cache_size=-{CACHE_PAGE_BYTES // 1024}")
            # the loose listing: private to this connection (deleted when it closes)
            db.execute("ATTACH DATABASE '' AS private")
            for table in ("loose_listing (chunk_id", "packs_present (pack_id"):
                db.execute(f"CREATE TABLE private.{table} BLOB PRIMARY KEY) WITHOUT ROWID")
            made = db.execute(
                "SELECT 1 FROM main.sqlite_master WHERE type='table' AND name='meta'"
            ).fetchone()
            if made is None:
                db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM main.meta WHERE name='schema'").fetchone()
            if row is None:
                with db:
                    db.execute(
                        "INSERT OR IGNORE INTO main.meta VALUES ('schema', ?)", (CACHE_SCHEMA,)
                    )
            elif row[0] != CACHE_SCHEMA:
                raise sqlite3.DatabaseError("cache of another schema")
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _remove_files(path: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                Path(f"{path}{suffix}").unlink()

    def _private_db(self, reason: str, *, unusable: bool = True) -> sqlite3.Connection:
        """A fresh cache in a temporary folder of this process (empty: the caller syncs).
        ``unusable``: the shared file failed (a warning); else it is only rechecked (an
        info line: real damage must stay one error line for the user)."""
        if self._private:
            raise CacheUnusable(f"the index cache cannot be used: {reason}")
        self._private = True
        temp = temp_cache_dir()
        log.log(
            logging.WARNING if unusable else logging.INFO,
            "index cache %s %s (%s): using a private one in %s for this run",
            self.path,
            "cannot be used" if unusable else "is rechecked",
            reason[:200],
            temp,
        )
        try:
            return self._open(Path(temp) / CACHE_FILE)
        except sqlite3.DatabaseError as exc:
            raise CacheUnusable(f"the index cache cannot be used: {exc}") from exc

    def _fall_back(self, exc: sqlite3.DatabaseError) -> None:
        """Switch to a private cache after ``exc`` (lock held by the caller)."""
        if self._private:
            raise CacheUnusable(f"the index cache cannot be used: {exc}") from exc
        damaged = not is_locked(exc) and "readonly" not in str(exc).replace(" ", "")
        self._switch_private(str(exc), remove_shared=damaged)

    def _switch_private(self, reason: str, *, remove_shared: bool, unusable: bool = True) -> None:
        """Copy the loose listing into a private cache, reload every index object into
        it, and use it from now on (lock held by the caller); ``remove_shared`` deletes
        the shared file, so that the next run rebuilds it."""
        old = self._db
        self._db = self._private_db(reason, unusable=unusable)
        for table in ("loose_listing", "packs_present"):
            with contextlib.suppress(sqlite3.DatabaseError):
                rows = old.execute(f"SELECT * FROM private.{table}")
                with self._db:
                    self._db.executemany(f"INSERT OR IGNORE INTO private.{table} VALUES (?)", rows)
        with contextlib.suppress(sqlite3.DatabaseError):
            old.close()
        if remove_shared:  # the next run rebuilds it
            self._remove_files(self.path)
        self._load(list_index_ids(self._storage), set())

    def reload_privately(self, reason: str) -> bool:
        """Distrust the shared cache: rebuild a private one from ``index/`` for the rest
        of this process (the shared file may hold rows that SQLite does not see as
        damaged but that are wrong: a bug, a hand edit). False when this process uses a
        private cache already. Raises ``StorageError`` (reading index objects)."""
        with self._lock:
            if self._private:
                return False
            self._switch_private(reason, remove_shared=False, unusable=False)
            return True

    def remove_shared(self) -> None:
        """Delete the shared cache file (after ``reload_privately`` found it wrong): the
        next run rebuilds it from ``index/``."""
        self._remove_files(self.path)

    def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """``fn(connection)`` under the lock; on an SQLite error, once more on a private
        cache (``_fall_back``)."""
        with self._lock:
            try:
                return fn(self._db)
            except sqlite3.DatabaseError as exc:
                self._fall_back(exc)
            try:
                return fn(self._db)
            except sqlite3.DatabaseError as exc:
                raise CacheUnusable(f"the index cache cannot be used: {exc}") from exc

    def close(self) -> None:
        """Close the connection (the file stays)."""
        with self._lock:
            self._db.close()

    # --- keeping in step with index/ ------------------------------------------------
    def sync(self) -> tuple[int, int]:
        """List ``index/``; load the objects not cached, then drop the cached ones gone
        (in that order: a reader in another thread never misses a chunk that moved from
        an old index object to a new one). Returns ``(loaded, dropped)``. A damaged index
        object is skipped with a warning (``check`` reports it); its chunks then count as
        unknown."""
        listed = list_index_ids(self._storage)
        cached = self.index_ids()
        return self._load(listed, cached)

    def _load(self, listed: set[str], cached: set[str]) -> tuple[int, int]:
        loaded = 0
        for index_id in sorted(listed - cached):
            try:
                index = read_index_object(self._storage, index_id, self._sealer, self._name)
            except ObjectNotFound:
                continue  # deleted since the listing (prune)
            except IndexDamaged as exc:
                log.warning("%s", exc.message)
                continue
            self.add(index_id, index)
            loaded += 1
        gone = cached - listed
        for index_id in sorted(gone):  # one short transaction each

            def forget(db: sqlite3.Connection, index_id: str = index_id) -> None:
                with db:
                    self._forget(db, index_id)

            self._run(forget)
        return loaded, len(gone)

    @staticmethod
    def _forget(db: sqlite3.Connection, index_id: str) -> None:
        row = db.execute("SELECT num FROM index_objects WHERE id=?", (index_id,)).fetchone()
        if row is None:
            return
        db.execute(
            "DELETE FROM chunks WHERE pack_num IN (SELECT num FROM packs WHERE index_num=?)",
            (row[0],),
        )
        db.execute("DELETE FROM packs WHERE index_num=?", (row[0],))
        db.execute("DELETE FROM index_objects WHERE num=?", (row[0],))

    def add(self, index_id: str, index: IndexObject, *, stored_now: bool = False) -> None:
        """Record one index object (a no-op when already cached: another process or
        this one loaded it meanwhile). One transaction. ``stored_now``: this process has
        just stored its packs, so once ``replace_loose`` has listed ``packs/``, ``known``
        counts them present too (a backup's packs, indexed while it runs)."""

        def insert(db: sqlite3.Connection) -> None:
            with db:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO index_objects (id, supersedes) VALUES (?, ?)",
                    (index_id, ",".join(index.supersedes)),
                )
                if not cursor.rowcount:
                    return
                index_num = cursor.lastrowid
                for pack in index.packs:
                    cursor = db.execute(
                        "INSERT OR IGNORE INTO packs (pack_id, index_num, size, key) "
                        "VALUES (?, ?, ?, ?)",
                        (bytes.fromhex(pack.pack_id), index_num, pack.size, pack.key),
                    )
                    if not cursor.rowcount:
                        continue  # listed twice in one index object: the first counts
                    pack_num = cursor.lastrowid
                    db.executemany(
                        "INSERT OR IGNORE INTO chunks VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            (raw_id, pack_num, offset, length, raw_length, position)
                            for position, (raw_id, offset, length, raw_length) in enumerate(
                                ENTRY.iter_unpack(pack.chunks)
                            )
                        ),
                    )

        self._run(insert)
        if stored_now and self._packs_listed:
            present = [(bytes.fromhex(pack.pack_id),) for pack in index.packs]

            def mark(db: sqlite3.Connection) -> None:
                with db:
                    db.executemany(
                        "INSERT OR IGNORE INTO private.packs_present VALUES (?)", present
                    )

            self._run(mark)

    def replace_loose(self, chunk_ids: Iterable[str]) -> int:
        """Replace this process's listing of version 1 loose chunks (``chunks/``) with
        ``chunk_ids`` (streamed into a private SQLite database in batches, not kept in
        memory, and never a transaction on the shared cache file); return how many. Lists
        ``packs/`` too: from then on ``known`` counts only chunks in packs that exist (a
        backup writes a chunk again rather than point at a lost pack)."""

        def clear(db: sqlite3.Connection) -> None:
            with db:
                db.execute("DELETE FROM private.loose_listing")

        self._run(clear)
        count = 0
        batch: list[tuple[bytes]] = []

        def insert(db: sqlite3.Connection) -> None:
            with db:
                db.executemany("INSERT OR IGNORE INTO private.loose_listing VALUES (?)", batch)

        for chunk_id in chunk_ids:
            batch.append((bytes.fromhex(chunk_id),))
            count += 1
            if len(batch) >= 10_000:
                self._run(insert)
                batch = []
        if batch:
            self._run(insert)
        present = [(bytes.fromhex(k.rsplit("/", 1)[-1]),) for k in self._storage.list("packs/")
                   if is_chunk_id(k.rsplit("/", 1)[-1])]  # fmt: skip

        def packs(db: sqlite3.Connection) -> None:
            with db:
                db.execute("DELETE FROM private.packs_present")
                db.executemany("INSERT OR IGNORE INTO private.packs_present VALUES (?)", present)

        self._run(packs)
        self._packs_listed = True
        return count

    # --- lookups ----------------------------------------------------------------------
    def locations(self, chunk_id: str) -> list[ChunkLocation]:
        """Every copy of ``chunk_id`` the index lists (usually one; two after a prune was
        stopped mid-repack), in a stable order; empty when none."""
        raw = bytes.fromhex(chunk_id)
        rows = self._run(
            lambda db: db.execute(
                "SELECT p.pack_id, p.key, c.offset, c.length, c.raw_length, c.position "
                "FROM chunks c JOIN packs p ON p.num = c.pack_num "
                "WHERE c.chunk_id = ? ORDER BY c.pack_num",
                (raw,),
            ).fetchall()
        )
        return [ChunkLocation(chunk_id, r[0].hex(), r[1], r[2], r[3], r[4], r[5]) for r in rows]

    def contains(self, chunk_id: str) -> bool:
        """Whether the index lists ``chunk_id`` (loose chunks not included)."""
        raw = bytes.fromhex(chunk_id)
        row = self._run(
            lambda db: db.execute(
                "SELECT 1 FROM chunks WHERE chunk_id = ? LIMIT 1", (raw,)
            ).fetchone()
        )
        return row is not None

    def known(self, chunk_id: str) -> bool:
        """Whether ``chunk_id`` is in the index or in the last ``replace_loose`` listing
        (the backup's dedup check)."""
        raw = bytes.fromhex(chunk_id)
        packed = (
            "SELECT 1 FROM main.chunks c JOIN main.packs p ON p.num = c.pack_num JOIN "
            "private.packs_present t ON t.pack_id = p.pack_id WHERE c.chunk_id = ?"
            if self._packs_listed
            else "SELECT 1 FROM main.chunks WHERE chunk_id = ?"
        )
        row = self._run(
            lambda db: db.execute(
                f"{packed} UNION ALL SELECT 1 FROM private.loose_listing WHERE chunk_id = ? "
                "LIMIT 1",
                (raw, raw),
            ).fetchone()
        )
        return row is not None

    def known_among(self, chunk_ids: Sequence[str]) -> set[str]:
        """Those of ``chunk_ids`` that ``known`` would say are known, as a set of the same
        hex ids, in one query per ``KNOWN_QUERY_IDS`` ids. The backup asks once per batch
        of chunks: one query per chunk cost 0.75 CPU-s (held the GIL ~37 us each) of a
        413 MB first backup of 20,000 chunks (``bench/results/profile-path.md``)."""
        found: set[str] = set()
        for start in range(0, len(chunk_ids), KNOWN_QUERY_IDS):
            raws = [bytes.fromhex(c) for c in chunk_ids[start : start + KNOWN_QUERY_IDS]]
            marks = ",".join("?" * len(raws))
            packed = (
                "SELECT c.chunk_id FROM main.chunks c JOIN main.packs p ON p.num = c.pack_num "
                "JOIN private.packs_present t ON t.pack_id = p.pack_id "
                f"WHERE c.chunk_id IN ({marks})"
                if self._packs_listed
                else f"SELECT chunk_id FROM main.chunks WHERE chunk_id IN ({marks})"
            )
            query = (
                f"{packed} UNION SELECT chunk_id FROM private.loose_listing "
                f"WHERE chunk_id IN ({marks})"
            )
            rows = self._run(partial(_fetch_all, query, raws + raws))
            found.update(bytes(row[0]).hex() for row in rows)
        return found

    def chunk_ids(self) -> Iterator[str]:
        """Every chunk id the index lists, once each, in id order (streamed in batches
        of 10 000, so memory stays flat)."""
        last = b""
        while True:
            after = last
            rows = self._run(
                lambda db, after=after: db.execute(  # type: ignore[misc]
                    "SELECT DISTINCT chunk_id FROM chunks WHERE chunk_id > ? "
                    "ORDER BY chunk_id LIMIT 10000",
                    (after,),
                ).fetchall()
            )
            if not rows:
                return
            for (raw,) in rows:
                yield raw.hex()
            last = rows[-1][0]

    def chunk_ids_in(self, pack_ids: Iterable[str]) -> Iterator[str]:
        """Every chunk id the index places in one of ``pack_ids`` (e.g. the packs a
        listing of ``packs/`` found), once each, in id order; the pack ids go to a
        private SQLite table, not a Python set."""
        wanted = [(bytes.fromhex(p),) for p in pack_ids]

        def query(db: sqlite3.Connection) -> list[str]:
            db.execute("CREATE TABLE IF NOT EXISTS private.present (pack_id BLOB PRIMARY KEY)")
            with db:
                db.execute("DELETE FROM private.present")
                db.executemany("INSERT OR IGNORE INTO private.present VALUES (?)", wanted)
            rows = db.execute(
                "SELECT DISTINCT c.chunk_id FROM chunks c JOIN packs p ON p.num = c.pack_num "
                "JOIN private.present t ON t.pack_id = p.pack_id ORDER BY c.chunk_id"
            )
            return [raw.hex() for (raw,) in rows]

        yield from self._run(query)

    def chunk_count(self) -> int:
        """Number of distinct chunk ids in the index."""
        return int(
            self._run(
                lambda db: db.execute("SELECT COUNT(DISTINCT chunk_id) FROM chunks").fetchone()[0]
            )
        )

    def packs(self) -> list[tuple[str, str, int]]:
        """``(pack id, index id, size in bytes)`` of every pack each index object lists."""
        rows = self._run(
            lambda db: db.execute(
                "SELECT p.pack_id, i.id, p.size FROM packs p JOIN index_objects i "
                "ON i.num = p.index_num"
            ).fetchall()
        )
        return [(r[0].hex(), r[1], r[2]) for r in rows]

    def pack_entries(self, pack_id: str) -> list[ChunkLocation]:
        """The blobs of one pack (as its first index object lists them), by position."""
        raw = bytes.fromhex(pack_id)
        rows = self._run(
            lambda db: db.execute(
                "SELECT c.chunk_id, p.key, c.offset, c.length, c.raw_length, c.position "
                "FROM chunks c JOIN packs p ON p.num = c.pack_num "
                "WHERE c.pack_num = (SELECT MIN(num) FROM packs WHERE pack_id = ?) "
                "ORDER BY c.position",
                (raw,),
            ).fetchall()
        )
        return [ChunkLocation(r[0].hex(), pack_id, r[1], r[2], r[3], r[4], r[5]) for r in rows]

    def index_ids(self) -> set[str]:
        """The index objects cached (as of the last ``sync``/``add``)."""
        rows = self._run(lambda db: db.execute("SELECT id FROM index_objects").fetchall())
        return {row[0] for row in rows}

    def superseded_ids(self) -> set[str]:
        """Index ids some cached index object names in its ``supersedes``."""
        rows = self._run(lambda db: db.execute("SELECT supersedes FROM index_objects").fetchall())
        return {s for (text,) in rows for s in text.split(",") if s}


__all__ = [  # the index objects' names are re-exported from index_objects
    "CACHE_ENV", "CACHE_FILE", "INDEX_FORMAT", "INDEX_MAX_PACKS", "INDEX_PREFIX",
    "INDEX_VERSION", "CacheUnusable", "ChunkLocation", "IndexCache", "IndexDamaged",
    "IndexObject", "IndexedPack", "cache_path", "decode_index", "encode_index",
    "index_id_of_key", "index_key", "list_index_ids", "read_index_object",
    "write_index_objects",
]  # fmt: skip
