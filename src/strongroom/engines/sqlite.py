"""SQLite engine: the online backup API for a consistent copy, a new file on restore."""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import secrets
import shlex
import sqlite3
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from strongroom import tempfiles
from strongroom.engines import sqlite_swap
from strongroom.engines.base import (
    DumpResult,
    Engine,
    PlanChecks,
    RestoreOptions,
    RunningDump,
    SwapRecovery,
    TableStats,
    TargetState,
)
from strongroom.engines.sqlite_stats import VIRTUAL_TABLES, Survey, planned_notes, survey
from strongroom.engines.urls import DatabaseUrl, sqlite_path
from strongroom.errors import (
    DatabaseUnreachable,
    DumpFailed,
    RestoreFailed,
    TargetNotEmpty,
    UsageError,
)

log = logging.getLogger("strongroom.engines.sqlite")

SQLITE_HEADER = b"SQLite format 3\x00"

# The mode a restore gives a new file (no file to replace), before the process umask: what
# sqlite3 itself creates a database with (SQLITE_DEFAULT_FILE_PERMISSIONS).
NEW_FILE_MODE = 0o644

_JOURNAL_SUFFIXES = ("-wal", "-shm", "-journal")


def _umask() -> int:
    """The process umask, from /proc when it shows it (no window with umask 0)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The permission bits of a file a restore creates where none existed."""
    return NEW_FILE_MODE & ~_umask()


def _remove_journals(path: Path) -> None:
    for suffix in _JOURNAL_SUFFIXES:
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _account(uid: int, gid: int) -> str:
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return f"{user}:{group}"


def _take_owner(fd: int, path: Path, uid: int, gid: int) -> None:
    """``fchown`` to ``uid:gid``; where the OS refuses (not root), the group alone if it
    allows that, and a warning: never an error (the restore goes on)."""
    current = os.fstat(fd)
    if (current.st_uid, current.st_gid) == (uid, gid):
        return
    try:
        os.fchown(fd, uid, gid)
        return
    except OSError as exc:
        reason = exc.strerror or str(exc)
    if current.st_gid != gid:
        with contextlib.suppress(OSError):
            os.fchown(fd, -1, gid)  # a group this user belongs to
    now = os.fstat(fd)
    log.warning(
        "cannot give %s the owner %s of the file it replaces (%s); it is owned by %s: "
        "run the restore as root or as that user if the application cannot open it",
        path,
        _account(uid, gid),
        reason,
        _account(now.st_uid, now.st_gid),
    )


def _take_attributes(fd: int, path: Path, like: os.stat_result | None) -> None:
    """Give the open file the owner, group and permission bits of ``like`` (the file it
    is about to replace), or ``new_file_mode()`` when it replaces nothing; then fsync it.
    The owner goes first: ``chown`` clears the set-user/group-ID bits."""
    if like is None:
        os.fchmod(fd, new_file_mode())
    else:
        _take_owner(fd, path, like.st_uid, like.st_gid)
        os.fchmod(fd, stat.S_IMODE(like.st_mode))
    os.fsync(fd)


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

    def __init__(self, url: str | DatabaseUrl) -> None:
        self.url = url if isinstance(url, str) else str(url)
        self.path = sqlite_path(url)
        if self.path.is_symlink():
            # the file the link names is the database: it is what a restore replaces (the
            # staged copy goes beside it, the rename lands on it) and the link stays a link
            self.path = Path(os.path.realpath(self.path))
        # a staged file stays 0600 until ``swap_in`` gives it the target's attributes
        self._staged = False
        self._written: tuple[int, int] | None = None  # (st_dev, st_ino) restore() wrote
        # restored from a backup that recorded statistics of the virtual tables themselves
        # (taken before they were reported): ``table_stats`` reads them too, to compare
        self._read_virtual = False
        # what the last ``table_stats`` did not check: "virtual table v: why"
        self.unchecked: tuple[str, ...] = ()

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
        with tempfiles.private_tempdir("strongroom-sqlite-") as workdir:  # swept if killed
            copy_path = Path(workdir) / "snapshot.db"
            try:
                copy = sqlite3.connect(copy_path)
                try:
                    source.backup(copy, pages=-1)
                    found = survey(copy)
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
                tables=found.tables,
                state=found.state(),
            )
            for virtual in found.virtual:  # the copy has all their pages: nothing alarming
                log.info("%s", virtual.note())
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

    def restore(
        self,
        source: Iterable[bytes],
        *,
        size_hint: int | None = None,
        tables_hint: int | None = None,
        state: Mapping[str, Any] | None = None,
        options: RestoreOptions | None = None,
    ) -> None:
        """Write the stream to a temp file beside the target (mode 0600 while it is
        written), check it, then link it into place without ever replacing an existing
        file. The new file takes the owner, group and mode of an empty placeholder it
        replaces, else ``new_file_mode()``; a staged file keeps 0600 until ``swap_in``.
        ``state`` without the virtual tables (a backup that predates reporting them) makes
        ``table_stats`` read them as that backup did."""
        self._read_virtual = state is None or VIRTUAL_TABLES not in state
        self.check_restore_target()
        try:
            fd, temp_name = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".strongroom-restore", dir=self.path.parent
            )
        except OSError as exc:
            raise RestoreFailed(
                f"cannot write a file in {self.path.parent}: {exc.strerror or exc}; restore as "
                "a user who may write that folder (the restored file takes the old one's "
                "owner and mode)"
            ) from None
        temp_path = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                for data in source:
                    handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
                written = os.fstat(handle.fileno())
                self._check_integrity(temp_path)
                placeholder = self.path.stat() if self.path.exists() else None
                if not self._staged:
                    _take_attributes(handle.fileno(), self.path, placeholder)
            if placeholder is not None:
                self.path.unlink()  # an empty placeholder file (checked above)
            os.link(temp_path, self.path)
            self._written = (written.st_dev, written.st_ino)
        except OSError as exc:
            raise RestoreFailed(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        finally:
            temp_path.unlink(missing_ok=True)
            # a read-only open of a WAL-mode database leaves an empty -wal and a -shm
            _remove_journals(temp_path)

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

    # --- safe restore: a temp file beside the target, then an atomic rename -------------
    def plan_checks(self, state: Mapping[str, Any] | None, options: RestoreOptions) -> PlanChecks:
        """Nothing to refuse: the dump holds everything this engine restores. The lines
        name the virtual tables the verification will not check here, and why."""
        del options
        return PlanChecks(lines=tuple(planned_notes(state)))

    def inspect(self) -> TargetState:
        if not self.path.exists():
            return TargetState(exists=False, empty=True, size_bytes=None)
        size = self.path.stat().st_size
        if size == 0:
            return TargetState(exists=True, empty=True, size_bytes=0)
        tables = self._survey().tables
        return TargetState(True, not tables, size, tables)

    def sibling(self, name: str) -> SqliteEngine:
        """The file ``<name>.db`` in the same folder."""
        return SqliteEngine(str(self.path.with_name(f"{name}.db")))

    def staging(self) -> SqliteEngine:
        """A new file beside the target (same folder, so the swap is a rename)."""
        name = f".{self.path.name}.sr-{secrets.token_hex(4)}.restoring"
        staged = SqliteEngine(str(self.path.with_name(name)))
        staged._staged = True
        return staged

    def swap_in(
        self, staged: Engine, *, keep_old: bool, source_database: str | None = None
    ) -> str | None:
        """Atomically rename the staged file over the target (``source_database`` is not
        used: a file names no database).

        Before the rename the target's WAL is checkpointed into it; after the rename the
        old ``-wal`` and ``-shm`` files are removed, so new connections open the restored
        file with fresh ones. A process that still holds the old file open keeps reading
        the old database (its inode) and whatever it writes from then on is lost with it:
        stop or restart the application around a restore.

        Before the rename the staged file takes the target's owner, group and permission
        bits (``new_file_mode()`` when there is no target), so the file at the target's
        name never has other ones; where the OS refuses the owner (not root) a warning is
        logged and the restore goes on. The kept old file is the old inode, unchanged.

        The steps (hard link to ``<file>.old-<UTC time>Z``, rename, removal of the old
        ``-wal``/``-shm``/``-journal``) run under the file's swap lock, each announced in
        the swap journal beside it first (``engines.sqlite_swap``), so a process killed
        half-way leaves what the next command settles. Raises ``RestoreFailed`` with the
        target unchanged (``SwapInterrupted`` if it could not be settled on the spot)."""
        del source_database
        if not isinstance(staged, SqliteEngine):
            raise TypeError("a SQLite target can only take a SQLite staged file")
        with sqlite_swap.swap_lock(self.path):
            sqlite_swap.settle_earlier(self.path)  # a killed swap into this file
            target: os.stat_result | None = None
            if self.path.exists():
                self._checkpoint()
                target = self.path.stat()
            staged._settle(target)
            old_path = sqlite_swap.swap_into_place(self.path, staged.path, keep_old=keep_old)
        log.info("swapped the restored database into %s", self.path)
        return str(old_path) if old_path else None

    def drop_hint(self, kept: str) -> str:
        """``rm -- 'path'`` (shell-quoted)."""
        return f"rm -- {shlex.quote(kept)}"

    def _settle(self, like: os.stat_result | None) -> None:
        """Make the staged file ready to be renamed: remove the empty ``-wal``/``-shm``
        the read-only checks left beside it (nothing writes to it), and give it ``like``'s
        owner, group and mode. Works on an open descriptor of the file this engine wrote,
        so a file swapped in under its name meanwhile is refused, never chowned."""
        wal = Path(f"{self.path}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise RestoreFailed(f"{wal} is not empty; the target is unchanged")
        _remove_journals(self.path)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise RestoreFailed(
                f"cannot open the restored file {self.path}: {exc.strerror or exc}; "
                "the target is unchanged"
            ) from exc
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode) or (
                self._written is not None and (opened.st_dev, opened.st_ino) != self._written
            ):
                raise RestoreFailed(
                    f"{self.path} is no longer the file the restore wrote; the target is unchanged"
                )
            _take_attributes(fd, self.path, like)
        except OSError as exc:
            raise RestoreFailed(
                f"cannot set the owner or mode of {self.path}: {exc.strerror or exc}; "
                "the target is unchanged"
            ) from exc
        finally:
            os.close(fd)

    def _checkpoint(self) -> None:
        try:
            connection = sqlite3.connect(self.path, timeout=30)
            try:
                mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() == "wal":
                    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                connection.close()
        except sqlite3.Error as exc:
            raise RestoreFailed(
                f"cannot checkpoint {self.path} before replacing it: {exc}; it is unchanged"
            ) from exc

    def count_result_rows(self, query: str) -> int:
        """Run ``query`` read-only; the number of rows it returned (at most 1000)."""
        connection = self._open_readonly()
        try:
            return len(connection.execute(query).fetchmany(1000))
        except sqlite3.Error as exc:
            raise UsageError(f"check query failed: {exc}") from exc
        finally:
            connection.close()

    def recover_swaps(self) -> list[SwapRecovery]:
        """Complete or undo an interrupted swap into this file, if its journal is beside
        it (``Engine.recover_swaps``; ``engines.sqlite_swap.recover``): at most one
        ``SwapRecovery``; one ``lstat`` when there is none. Raises ``DatabaseUnreachable``
        when the folder cannot be searched."""
        return sqlite_swap.recover(self.path, self.database_name())

    def drop(self) -> None:
        self.path.unlink(missing_ok=True)
        _remove_journals(self.path)

    def restore_tables(
        self,
        source: Iterable[bytes],
        tables: Sequence[str],
        *,
        into: str | None,
        expected: Sequence[TableStats],
        source_database: str,
    ) -> list[str]:
        """Not supported: a SQLite backup is the database file; restore it whole into a
        new file and copy the rows you need."""
        del source, tables, into, expected, source_database
        raise UsageError(
            "--table works with PostgreSQL and MySQL backups; restore a SQLite backup whole "
            "into a new file (restore ID --to sqlite:///path/copy.db) and copy the rows from it"
        )

    def _survey(self) -> Survey:
        connection = self._open_readonly()
        try:
            return survey(connection, read_virtual=self._read_virtual)
        except sqlite3.Error as exc:
            raise DatabaseUnreachable(f"cannot read the tables of {self.path}: {exc}") from exc
        finally:
            connection.close()

    def table_stats(self) -> list[TableStats]:
        """Statistics of the ordinary tables (shadow tables of virtual tables included);
        the virtual tables it cannot check are logged and kept in ``unchecked``."""
        found = self._survey()
        self.unchecked = tuple(found.unchecked)
        for virtual in found.virtual:
            if virtual.problem is not None:
                log.warning("not checked: %s", virtual.note())
            else:
                log.info("%s%s", "not checked: " if virtual.reason else "", virtual.note())
        return found.tables
