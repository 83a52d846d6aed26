"""Temp files: decrypted data and credentials never outlive the process that wrote them.

Everything strongroom writes to the temp folder (``$TMPDIR``, else ``/tmp``) goes into a
folder of its own process: ``strongroom-<uid>/<pid>-<random>/`` (both mode 0700, the outer
one owned by this user and checked to be). The process holds an ``flock`` on that folder's
``.lock`` while it lives, so another strongroom can tell a live folder from one a killed
process left behind:

- :func:`spool` gives a file with no name at all (``O_TMPFILE``, or created and unlinked at
  once; mode 0600) that a child tool still reads by name, ``/dev/fd/<n>`` with the
  descriptor passed (``pass_fds``): nothing is left to find even after ``kill -9``.
- :func:`private_dir` is the folder itself, for files a tool must create by name
  (``pg_dump -f``); use it as ``dir=`` of ``tempfile`` calls.
- :func:`sweep` (run at every start of the command line) removes the folders of processes
  that are gone (their lock is free), and what older versions left directly in the temp
  folder (``strongroom-restore-*`` …) once it is a day old (an option file: 10 minutes).

At a normal exit (also after an interrupt) the process removes its own folder.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import fnmatch
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger("strongroom.tempfiles")

LOCK_NAME = ".lock"
NEW_PREFIX = ".new-"  # a folder being set up: its lock is not held yet
# What versions before the private folder left directly in the temp folder, and how old
# (seconds) it must be to be removed at the next start: a running old version may still
# use a younger one. A client tool reads its option file (the password) when it starts.
LEGACY_AGE = 24 * 3600.0
LEGACY_PATTERNS = {
    "strongroom-restore-*": LEGACY_AGE,
    "strongroom-tables-*": LEGACY_AGE,
    "strongroom-sqlite-*": LEGACY_AGE,
    "strongroom_verify_*.db": LEGACY_AGE,
    "strongroom-my-*.cnf": 600.0,
}


@dataclass
class _Own:
    path: Path
    lock_fd: int | None  # held while the process lives (None: unswept fallback folder)
    pid: int


_mutex = threading.Lock()
_own: _Own | None = None
_atexit_registered = False


def base_dir() -> Path:
    """``<temp folder>/strongroom-<uid>``: the per-process folders of this user."""
    return Path(tempfile.gettempdir()) / f"strongroom-{os.getuid()}"


def _ensure_base() -> Path | None:
    """The base folder, created 0700; ``None`` if it is not a folder of this user's (someone
    else made it first in a shared temp folder)."""
    base = base_dir()
    with contextlib.suppress(FileExistsError):
        os.mkdir(base, 0o700)
    info = os.lstat(base)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        log.warning("%s is not a folder of this user; temp files will not be swept", base)
        return None
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(base, 0o700)
    return base


def private_dir() -> Path:
    """This process's private temp folder (0700), created on first use and removed at exit."""
    global _own, _atexit_registered
    with _mutex:
        pid = os.getpid()
        if _own is not None and _own.pid == pid and _own.path.is_dir():
            return _own.path
        base = _ensure_base()
        if base is None:
            path = Path(tempfile.mkdtemp(prefix=f"strongroom-{pid}-"))
            _own = _Own(path, None, pid)
        else:
            staging = Path(tempfile.mkdtemp(prefix=f"{NEW_PREFIX}{pid}-", dir=base))
            fd = os.open(
                staging / LOCK_NAME,
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                0o600,
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
            path = base / staging.name.removeprefix(NEW_PREFIX)
            os.rename(staging, path)
            _own = _Own(path, fd, pid)
        if not _atexit_registered:
            atexit.register(remove_own)
            _atexit_registered = True
        return path


def remove_own() -> None:
    """Remove this process's folder and everything in it (at exit; idempotent)."""
    global _own
    with _mutex:
        own = _own
        if own is None or own.pid != os.getpid():
            return
        _own = None
    shutil.rmtree(own.path, ignore_errors=True)
    if own.lock_fd is not None:
        with contextlib.suppress(OSError):
            os.close(own.lock_fd)


_others: dict[Path, int] = {}  # folders made for another user (as root) -> their lock


def folder_for(uid: int, gid: int, prefix: str) -> Path:
    """A new folder (0700) that only the OS user ``uid`` (and root) can enter, for a
    program that runs as that user (a throwaway PostgreSQL cluster). For this process's own
    user: a subfolder of :func:`private_dir`. As root for another user: a locked folder of
    its own, ``strongroom-<uid>/<pid>-<random>/`` owned by that user, that the next start
    sweeps like a private folder once this process is gone (that user's, or root's:
    :func:`sweep` as root covers every user's folders). Removed at exit, or earlier by
    :func:`remove_folder`. Raises ``OSError`` when ``strongroom-<uid>`` is not that user's
    folder, ``PermissionError`` for another user when not root."""
    if uid == os.getuid():
        return Path(tempfile.mkdtemp(prefix=prefix, dir=private_dir()))
    if os.geteuid() != 0:
        raise PermissionError(f"only root makes folders for another user (uid {uid})")
    base = Path(tempfile.gettempdir()) / f"strongroom-{uid}"
    try:
        os.mkdir(base, 0o700)
        os.chown(base, uid, gid)
    except FileExistsError:
        pass
    info = os.lstat(base)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
        raise OSError(f"{base} is not a folder of uid {uid}")
    staging = Path(tempfile.mkdtemp(prefix=f"{NEW_PREFIX}{os.getpid()}-", dir=base))
    fd = os.open(staging / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.fchown(fd, uid, gid)
    os.chown(staging, uid, gid)
    path = base / staging.name.removeprefix(NEW_PREFIX)
    os.rename(staging, path)
    with _mutex:
        _others[path] = fd
    atexit.register(remove_folder, path)
    return path


def remove_folder(path: Path) -> None:
    """Remove a folder :func:`folder_for` made, and everything in it (idempotent)."""
    shutil.rmtree(path, ignore_errors=True)
    with _mutex:
        fd = _others.pop(path, None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def _pid_of(name: str) -> int | None:
    head = name.removeprefix(NEW_PREFIX).split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a folder with our pid but not ours: its owner is gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_folder(path: Path) -> bool:
    """Remove ``path`` if its process is gone; True if removed."""
    pid = _pid_of(path.name)
    if path.name.startswith(NEW_PREFIX) and (pid is None or _alive(pid)):
        return False  # may be being set up right now
    try:
        fd = os.open(path / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = None
    except OSError:
        return False
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False  # its process lives
                raise
        elif pid is not None and _alive(pid):
            return False
        _stop_servers_in(path)
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():  # a process that was ending still wrote into it
            time.sleep(0.2)
            shutil.rmtree(path, ignore_errors=True)
        return True
    finally:
        if fd is not None:
            os.close(fd)


def _stop_servers_in(path: Path, wait: float = 10.0) -> None:
    """Stop a server a killed process left running in ``path`` (a throwaway PostgreSQL
    cluster: ``postmaster.pid`` at most two folders down): ``SIGQUIT`` (PostgreSQL's
    immediate shutdown) to the process the pid file names, only when its working folder
    is that data directory, then wait up to ``wait`` seconds for it to go."""
    for pid_file in [*path.glob("*/postmaster.pid"), *path.glob("*/*/postmaster.pid")]:
        try:
            pid = int(pid_file.read_text().split()[0])
            if os.readlink(f"/proc/{pid}/cwd") != str(pid_file.parent):
                continue
            os.kill(pid, signal.SIGQUIT)
        except (OSError, ValueError, IndexError):
            continue
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.05)
        if os.path.exists(f"/proc/{pid}"):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        log.info("stopped server %d left running in %s", pid, pid_file.parent)


def _sweep_legacy(root: Path, now: float) -> int:
    removed = 0
    uid = os.getuid()
    with os.scandir(root) as entries:  # one listing of the (maybe large) temp folder
        for entry in entries:
            if not entry.name.startswith("strongroom"):
                continue
            ages = [
                age for pat, age in LEGACY_PATTERNS.items() if fnmatch.fnmatchcase(entry.name, pat)
            ]
            if not ages:
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if info.st_uid != uid or now - info.st_mtime < ages[0]:
                continue
            path = Path(entry.path)
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
            removed += 1
    return removed


def sweep() -> int:
    """Remove what strongroom processes that are gone left in the temp folder; the number
    of folders and files removed. Never raises (a problem is logged at debug level)."""
    removed = 0
    bases = [(base_dir(), os.getuid())]
    if os.geteuid() == 0:  # root also sweeps what it made for other users (folder_for)
        with contextlib.suppress(OSError):
            for other in Path(tempfile.gettempdir()).glob("strongroom-[0-9]*"):
                number = other.name.removeprefix("strongroom-")
                if number.isdigit() and int(number) != os.getuid():
                    bases.append((other, int(number)))
    own = _own.path if _own is not None else None
    for base, owner in bases:
        try:
            info = os.lstat(base)
            if stat.S_ISDIR(info.st_mode) and info.st_uid == owner:
                for entry in base.iterdir():
                    if entry == own or entry in _others or entry.is_symlink():
                        continue
                    if entry.is_dir():
                        removed += _sweep_folder(entry)
        except FileNotFoundError:
            pass
        except OSError:
            log.debug("could not sweep the temp folder %s", base, exc_info=True)
    try:
        removed += _sweep_legacy(Path(tempfile.gettempdir()), time.time())
    except OSError:
        log.debug("could not sweep old temp files", exc_info=True)
    if removed:
        log.info("removed %d temp folder(s) or file(s) left by stopped strongroom runs", removed)
    return removed


def anonymous_file(prefix: str = "tmp-") -> IO[bytes]:
    """A read-write binary file without a name (``O_TMPFILE`` or unlinked at once), 0600."""
    return tempfile.TemporaryFile(prefix=prefix, dir=private_dir())


def private_tempdir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """A ``TemporaryDirectory`` inside the private folder (so a killed process's is swept)."""
    return tempfile.TemporaryDirectory(prefix=prefix, dir=private_dir())


@dataclass(frozen=True)
class Spool:
    """A private file a child tool reads by ``path``; pass ``pass_fds`` to the child."""

    handle: IO[bytes]
    path: str
    pass_fds: tuple[int, ...]


def _reopenable() -> bool:
    """Whether ``/dev/fd/<n>`` opens the file anew (Linux: its own offset, any process
    that has the descriptor), so an unnamed file can be read by name."""
    return sys.platform.startswith("linux") and os.path.isdir("/proc/self/fd")


@contextlib.contextmanager
def spool(prefix: str = "spool-") -> Iterator[Spool]:
    """A 0600 file for data a child must read by name (``pg_restore -j``): unnamed on Linux
    (the child opens ``/dev/fd/<n>``), else a named file in the private folder removed on
    close. Closed (and gone) when the block ends."""
    handle: IO[bytes]
    if _reopenable():
        handle = anonymous_file(prefix)
        item = Spool(handle, f"/dev/fd/{handle.fileno()}", (handle.fileno(),))
    else:
        handle = tempfile.NamedTemporaryFile(prefix=prefix, dir=private_dir())  # noqa: SIM115
        item = Spool(handle, handle.name, ())
    try:
        yield item
    finally:
        handle.close()
