"""SQLite engine: the online backup API for a consistent copy, a new file on restore."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from strongroom.engines.base import DumpResult, RunningDump, TableStats
from strongroom.engines.urls import sqlite_path
from strongroom.errors import DatabaseUnreachable, DumpFailed, RestoreFailed, TargetNotEmpty

log = logging.getLogger("strongroom.engines.sqlite")

SQLITE_HEADER = b"SQLite format 3\x00"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def count_tables(connection: sqlite3.Connection) -> list[TableStats]:
    """Row counts of every user table, by name."""
    names = [
        row[0]
        for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]
    return [
        TableStats(
            name, int(connection.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()[0])
        )
        for name in names
    ]


class _SqliteDump:
    def __init__(self, stream: BinaryIO, result: DumpResult) -> None:
        self._stream = stream
        self._result = result

    @property
    def stream(self) -> BinaryIO:
        return self._stream

    def finish(self) -> DumpResult:
        return self._result


class SqliteEngine:
    """A SQLite database file."""

    kind = "sqlite"

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = sqlite_path(url)

    def describe(self) -> str:
        return str(self.path)

    def database_name(self) -> str:
        return self.path.stem

    def _open_readonly(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise DatabaseUnreachable(f"SQLite database {self.path} does not exist")
        with self.path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
        if header and header != SQLITE_HEADER:
            raise DatabaseUnreachable(f"{self.path} is not a SQLite database")
        try:
            return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        except sqlite3.Error as exc:
            raise DatabaseUnreachable(f"cannot open SQLite database {self.path}: {exc}") from exc

    def check(self) -> None:
        connection = self._open_readonly()
        try:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise DatabaseUnreachable(f"cannot read SQLite database {self.path}: {exc}") from exc
        finally:
            connection.close()

    def estimated_size(self) -> int | None:
        try:
            return self.path.stat().st_size
        except OSError:
            return None

    @contextlib.contextmanager
    def dump(self) -> Iterator[RunningDump]:
        """Copy the database with the online backup API (one step, so the copy is one
        consistent snapshot even while other processes write), then stream the copy."""
        source = self._open_readonly()
        with tempfile.TemporaryDirectory(prefix="strongroom-sqlite-") as workdir:
            copy_path = Path(workdir) / "snapshot.db"
            try:
                copy = sqlite3.connect(copy_path)
                try:
                    source.backup(copy, pages=-1)
                    tables = count_tables(copy)
                    version = str(copy.execute("SELECT sqlite_version()").fetchone()[0])
                finally:
                    copy.close()
            except sqlite3.Error as exc:
                raise DumpFailed(f"SQLite backup of {self.path} failed: {exc}") from exc
            finally:
                source.close()
            result = DumpResult(
                engine=self.kind,
                database=self.path.name,
                server_version=version,
                tool_version=f"sqlite3 {sqlite3.sqlite_version} online backup API",
                dump_format="sqlite3-database",
                tables=tables,
            )
            with copy_path.open("rb") as stream:
                yield _SqliteDump(stream, result)

    def check_restore_target(self) -> None:
        if self.path.exists() and (not self.path.is_file() or self.path.stat().st_size > 0):
            raise TargetNotEmpty(
                f"{self.path} already exists; restore into a new file (replacing a live "
                "database safely arrives with safe restore)"
            )
        if not self.path.parent.is_dir():
            raise RestoreFailed(f"directory {self.path.parent} does not exist")

    def restore(self, source: Iterable[bytes]) -> None:
        """Write the stream to a temp file beside the target, check it, then link it into
        place without ever replacing an existing file."""
        self.check_restore_target()
        fd, temp_name = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".strongroom-restore", dir=self.path.parent
        )
        temp_path = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                for data in source:
                    handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            self._check_integrity(temp_path)
            if self.path.exists():
                self.path.unlink()  # an empty placeholder file (checked above)
            os.link(temp_path, self.path)
        except OSError as exc:
            raise RestoreFailed(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        finally:
            temp_path.unlink(missing_ok=True)

    @staticmethod
    def _check_integrity(path: Path) -> None:
        try:
            connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                result = connection.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                connection.close()
        except sqlite3.Error as exc:
            raise RestoreFailed(
                f"the restored file is not a usable SQLite database: {exc}"
            ) from exc
        if result != "ok":
            raise RestoreFailed(f"the restored database fails PRAGMA integrity_check: {result}")

    def table_stats(self) -> list[TableStats]:
        connection = self._open_readonly()
        try:
            return count_tables(connection)
        finally:
            connection.close()
