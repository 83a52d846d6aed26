"""Storage in a local (or mounted) directory, with atomic writes."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from strongroom.errors import ObjectNotFound, StorageError, StorageFull
from strongroom.storage.base import check_range, short_read

log = logging.getLogger("strongroom.storage")

TEMP_PREFIX = ".tmp-"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def validate_key(key: str) -> list[str]:
    """Return the parts of ``key``; raise ``ValueError`` if it could escape the root."""
    if not key:
        raise ValueError("storage key must not be empty")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"storage key {key!r} must be a relative '/'-separated path")
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise ValueError(f"storage key {key!r} has an empty, '.' or '..' part")
        if part.startswith(TEMP_PREFIX):
            raise ValueError(f"storage key {key!r} uses the reserved prefix {TEMP_PREFIX!r}")
    return parts


def _validate_prefix(prefix: str) -> None:
    """A list prefix may be empty or end in '/', but must not escape the root."""
    if not prefix:
        return
    if prefix.startswith("/") or "\\" in prefix or "\x00" in prefix:
        raise ValueError(f"storage prefix {prefix!r} must be a relative '/'-separated path")
    parts = prefix.split("/")
    if parts[-1] == "":
        parts.pop()
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"storage prefix {prefix!r} has an empty, '.' or '..' part")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


class LocalStorage:
    """Objects stored as files under ``root``; ``put`` writes a temp file then renames it.

    A repository folder is often written by two users: ``strongroom backup`` run by root
    (cron) and ``archive_command`` run as the server's OS user. When this process runs as
    root and the repository folder belongs to another user, every folder and file it
    creates is given that owner, so the other writer can still write beside it (a chunk
    folder made by root would otherwise refuse the archiver's next segment)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._unsynced_dirs: set[Path] = set()
        self._lock = threading.Lock()
        self._owner: tuple[int, int] | bool | None = False  # False: not looked up yet

    def _adopted_owner(self) -> tuple[int, int] | None:
        """(uid, gid) of the repository folder when running as root and it belongs to
        another user; None otherwise (nothing to adopt)."""
        if self._owner is False:
            owner: tuple[int, int] | None = None
            if os.geteuid() == 0:
                try:
                    stat = self.root.stat()
                except OSError:
                    return None  # not made yet: look again next time
                if stat.st_uid != 0:
                    owner = (stat.st_uid, stat.st_gid)
            self._owner = owner
        return self._owner if isinstance(self._owner, tuple) else None

    def describe(self) -> str:
        """The root directory, as a string."""
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key))

    def _not_found(self, key: str) -> ObjectNotFound:
        return ObjectNotFound(f"object {key} not found in {self.describe()}")

    def _write_error(self, key: str, exc: OSError) -> StorageError:
        if exc.errno in _FULL_ERRNOS:
            return StorageFull(
                f"repository disk is full at {self.root}: no space left while writing {key}"
            )
        return StorageError(f"cannot write {key} to {self.root}: {_reason(exc)}")

    def _makedirs(self, directory: Path) -> None:
        """Create ``directory`` and missing parents, fsyncing each new entry's parent."""
        missing: list[Path] = []
        current = directory
        while not current.is_dir():
            missing.append(current)
            if current.parent == current:
                break
            current = current.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                continue
            owner = self._adopted_owner()
            if owner is not None:
                os.chown(path, *owner)
            _fsync_dir(path.parent)

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` to a temp file, fsync it, rename it onto ``key``.

        The rename is atomic at once; it is durable after the next ``sync()``, which fsyncs
        the directories touched since (one fsync per directory, not one per object)."""
        final = self._path(key)
        directory = final.parent
        tmp: Path | None = None
        try:
            self._makedirs(directory)
            tmp = directory / f"{TEMP_PREFIX}{final.name}-{secrets.token_hex(8)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                owner = self._adopted_owner()
                if owner is not None:
                    os.fchown(fd, *owner)
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            tmp = None
            with self._lock:
                self._unsynced_dirs.add(directory)
        except OSError as exc:
            raise self._write_error(key, exc) from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def create(self, key: str, data: bytes) -> bool:
        """Write a temp file, then hard-link it to ``key``: the link fails if ``key``
        exists, so exactly one creator wins."""
        final = self._path(key)
        directory = final.parent
        tmp: Path | None = None
        try:
            self._makedirs(directory)
            tmp = directory / f"{TEMP_PREFIX}{final.name}-{secrets.token_hex(8)}"
            with tmp.open("xb") as handle:
                owner = self._adopted_owner()
                if owner is not None:
                    os.fchown(handle.fileno(), *owner)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, final)
            except FileExistsError:
                return False
            with self._lock:
                self._unsynced_dirs.add(directory)
            return True
        except OSError as exc:
            raise self._write_error(key, exc) from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def sync(self) -> None:
        """fsync every directory that received an object since the last sync."""
        with self._lock:
            directories, self._unsynced_dirs = self._unsynced_dirs, set()
        try:
            for directory in sorted(directories):
                _fsync_dir(directory)
        except OSError as exc:
            with self._lock:
                self._unsynced_dirs |= directories
            raise StorageError(f"cannot sync {self.root}: {_reason(exc)}") from exc

    def get(self, key: str) -> bytes:
        """Read the whole object."""
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise self._not_found(key) from exc
        except OSError as exc:
            raise StorageError(f"cannot read {key} from {self.root}: {_reason(exc)}") from exc

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset`` with ``pread`` (no whole-file read)."""
        check_range(offset, length)
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise self._not_found(key) from exc
        except OSError as exc:
            raise StorageError(f"cannot read {key} from {self.root}: {_reason(exc)}") from exc
        parts: list[bytes] = []
        got = 0
        try:
            while got < length:
                part = os.pread(fd, length - got, offset + got)
                if not part:
                    raise short_read(key, str(self.root), offset, length, got)
                parts.append(part)
                got += len(part)
        except IsADirectoryError as exc:
            raise self._not_found(key) from exc
        except OSError as exc:
            raise StorageError(f"cannot read {key} from {self.root}: {_reason(exc)}") from exc
        finally:
            os.close(fd)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def exists(self, key: str) -> bool:
        """Whether a regular file is stored under ``key``."""
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        """Size of the stored file in bytes."""
        path = self._path(key)
        try:
            if not path.is_file():
                raise self._not_found(key)
            return path.stat().st_size
        except FileNotFoundError as exc:
            raise self._not_found(key) from exc
        except OSError as exc:
            raise StorageError(f"cannot stat {key} in {self.root}: {_reason(exc)}") from exc

    def delete(self, key: str) -> None:
        """Remove the file; a missing file is fine."""
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return
        except OSError as exc:
            raise StorageError(f"cannot delete {key} in {self.root}: {_reason(exc)}") from exc

    def sweep_partial_files(self, older_than: float, *, remove: bool = True) -> int:
        """Remove (or count) ``.tmp-*`` files a killed ``put``/``create`` left behind, if
        not modified for ``older_than`` seconds (a live write touches its file as it goes
        and renames it within one call)."""
        limit = time.time() - older_than
        found = 0
        for directory, subdirs, files in os.walk(self.root):
            subdirs[:] = [name for name in subdirs if not name.startswith(TEMP_PREFIX)]
            for name in files:
                if not name.startswith(TEMP_PREFIX):
                    continue
                path = Path(directory, name)
                try:
                    if path.lstat().st_mtime >= limit:
                        continue
                    if remove:
                        path.unlink()
                except FileNotFoundError:
                    continue  # renamed or removed meanwhile
                except OSError as exc:
                    raise StorageError(
                        f"cannot remove partial file {path}: {_reason(exc)}"
                    ) from exc
                found += 1
                log.debug("partial file %s %s", path, "removed" if remove else "found")
        return found

    def list(self, prefix: str) -> Iterator[str]:
        """Yield stored keys starting with ``prefix``, skipping temp files."""
        for key, _ in self._walk(prefix, with_times=False):
            yield key

    def list_with_times(self, prefix: str) -> Iterator[tuple[str, float | None]]:
        """Yield ``(key, modified)`` (the file's mtime, POSIX seconds) for stored keys
        starting with ``prefix``; a file removed while listed is skipped."""
        yield from self._walk(prefix, with_times=True)

    def _walk(self, prefix: str, *, with_times: bool) -> Iterator[tuple[str, float]]:
        _validate_prefix(prefix)
        if not self.root.is_dir():
            raise StorageError(f"storage location {self.root} does not exist")
        base = prefix.rpartition("/")[0]
        start = self.root.joinpath(*base.split("/")) if base else self.root
        stack: list[tuple[Path, str]] = [(start, f"{base}/" if base else "")]
        while stack:
            directory, rel = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise StorageError(f"cannot list {directory}: {_reason(exc)}") from exc
            for entry in entries:
                if entry.name.startswith(TEMP_PREFIX):
                    continue
                key = rel + entry.name
                if entry.is_dir(follow_symlinks=False):
                    sub = key + "/"
                    if sub.startswith(prefix) or prefix.startswith(sub):
                        stack.append((Path(entry.path), sub))
                elif entry.is_file() and key.startswith(prefix):
                    if not with_times:
                        yield key, 0.0
                        continue
                    try:
                        yield key, entry.stat().st_mtime
                    except FileNotFoundError:
                        continue  # deleted since the folder was read
