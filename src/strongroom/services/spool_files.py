"""A WAL file copied into the spool durably, with as little CPU as the kernel allows.

``wal-push`` into the spool (``services/wal_spool.py``, ``cli/wal_quick.py``) is what
PostgreSQL's archiver waits for, once per 16 MiB segment, while a bulk load keeps the
host's cores busy: every millisecond of CPU it needs is a millisecond it waits for a core.
This module imports only ``os``, ``errno`` and ``fcntl`` (``mmap`` when it copies a
segment, ``time`` when the uploader sweeps its marks), so the quickest path pays nothing
for it. The uploader's marks (``UPLOADED``) live here too: the quick path looks for one
before it copies (a name uploaded already goes the whole way, which compares).

:func:`durable_copy` writes ``<folder>/.tmp-<name>-<random>``, fsyncs it, links it as
``<folder>/<name>`` (never over a file already there) and fsyncs the folder: once it
returns, the file survives a crash of the host; if it raises (or a signal stops it), the
temp file is removed and the spool holds what it held before.

How the bytes move (measured on a 2-core VM, 16 MiB segment in the page cache):

* a file of whole 4 KiB blocks (every WAL segment) is written with ``O_DIRECT`` straight
  from a read-only ``mmap`` of the source: the disk reads the page cache's pages, no CPU
  copies them (CPU ~0.5 ms; ``copy_file_range`` 5-8 ms, then fsync writes the copied
  pages back: 8-12 ms more). ``O_DIRECT`` is set with ``fcntl`` after ``open``: a file
  system without it (tmpfs before Linux 6.6, some FUSE) answers ``EINVAL`` and the copy
  goes on buffered;
* anything else, or what ``O_DIRECT`` refuses mid-way (``EINVAL``: a block size above
  4 KiB; ``EFAULT``: the source shrank under the mapping), continues from where it
  stopped with ``copy_file_range`` (no trip through Python), else ``pread``/``pwrite``.

Durability is the same either way: ``O_DIRECT`` only bypasses the page cache, so the
fsync of the file (its size and extents, the device's write cache) and of the folder
(the rename) are still made before :func:`durable_copy` returns.
"""

from __future__ import annotations

import errno
import fcntl
import os

TMP_PREFIX = ".tmp-"  # a push under way, or killed (swept by the uploader after an hour)
# <spool>/.uploaded/<stream>/<name>: a symlink whose target is the digest of the bytes the
# uploader moved under that name (kept a week): a later push of the name compares with it
UPLOADED = ".uploaded"
DIRECT_BLOCK = 4096  # bytes: O_DIRECT is used for files of whole blocks of this size
DIRECT_MIN = 1 << 20  # bytes: smaller files (history, backup labels) are copied buffered
_NO_KERNEL_COPY = (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EPERM)
_NO_DIRECT = (errno.EINVAL, errno.EFAULT, errno.EOPNOTSUPP)
_NO_LINK = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK)  # (FAT, some FUSE)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """fsync the folder ``folder`` (a rename or unlink in it becomes durable)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _set_direct(fd: int, on: bool) -> bool:
    """Switch ``O_DIRECT`` on or off for ``fd``; whether the file system took it."""
    direct = getattr(os, "O_DIRECT", 0)
    if not direct:
        return False
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, (flags | direct) if on else (flags & ~direct))
    except OSError:
        return False
    return True


def copy_direct(source: int, size: int, fd: int) -> int:
    """Write the first ``size`` bytes of ``source`` into ``fd`` with ``O_DIRECT`` from a
    read-only mapping of ``source``; the bytes written (``size``, or fewer when
    ``O_DIRECT`` or the mapping cannot go on: the caller copies the rest). ``fd`` is left
    without ``O_DIRECT``. Other errors (``ENOSPC``, ``EIO``) raise ``OSError``."""
    if size < DIRECT_MIN or size % DIRECT_BLOCK or not _set_direct(fd, True):
        return 0
    import mmap

    done = 0
    try:
        try:
            mapped = mmap.mmap(source, size, prot=mmap.PROT_READ)
        except (OSError, ValueError):
            return 0
        try:
            with memoryview(mapped) as view:
                while done < size:
                    written = os.pwrite(fd, view[done:], done)
                    if written <= 0:
                        break
                    done += written
        except OSError as exc:
            if exc.errno not in _NO_DIRECT:
                raise
        finally:
            mapped.close()
    finally:
        _set_direct(fd, False)
    return done - done % DIRECT_BLOCK if done < size else done


def copy_range(source: int, size: int, fd: int, start: int = 0) -> None:
    """Bytes ``start`` to ``size`` of ``source`` into the same offsets of ``fd``:
    ``copy_file_range``, else ``pread``/``pwrite``. ``OSError(EIO)`` when ``source`` is
    shorter than ``size`` (it shrank while it was copied)."""
    done = start
    try:
        while done < size:
            copied = os.copy_file_range(source, fd, size - done, done, done)
            if copied == 0:
                break
            done += copied
        if done == size:
            return
    except OSError as exc:
        if exc.errno not in _NO_KERNEL_COPY or done > start:
            raise
    while done < size:
        chunk = os.pread(source, min(1 << 20, size - done), done)
        if not chunk:
            break
        view = memoryview(chunk)
        while view:
            written = os.pwrite(fd, view, done)
            done += written
            view = view[written:]
    if done < size:
        raise OSError(errno.EIO, "the WAL file shrank while it was copied")


def publish(tmp: str, target: str) -> None:
    """Give the finished temp file ``tmp`` the name ``target``, never replacing a file
    already there (``FileExistsError``): a hard link, then the temp name unlinked. Two
    pushes of one name at once (a clone of the cluster archiving into the same stream, an
    operator's push beside the archiver's) both found the name free; with a rename the
    second replaced the first one's bytes and both returned 0. Where the file system has
    no hard links, a rename after a last look (the window of that look remains there)."""
    try:
        os.link(tmp, target)
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target) from exc
        os.rename(tmp, target)
        return
    os.unlink(tmp)


def durable_copy(source: int, size: int, folder: str, name: str) -> str:
    """Copy ``size`` bytes of the open file ``source`` to ``<folder>/<name>`` durably (temp
    file 0600, copy, fsync, :func:`publish` as ``name``, fsync ``folder``); the new path.
    ``FileExistsError`` when ``name`` is there already (it is left as it is: the caller
    compares); ``OSError`` (``ENOSPC``, ``EACCES``…) after removing the temp file; a
    ``BaseException`` (a signal) removes it too."""
    tmp = os.path.join(folder, f"{TMP_PREFIX}{name}-{os.urandom(4).hex()}")
    target = os.path.join(folder, name)
    try:  # (the open inside: a signal right after it must not leave the temp file)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            done = copy_direct(source, size, fd)
            if done < size:
                copy_range(source, size, fd, done)
            os.fsync(fd)
        finally:
            os.close(fd)
        publish(tmp, target)
    except BaseException:
        try:  # noqa: SIM105 (contextlib: ~4 ms to import on the quick path)
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(folder)
    return target


MARKS_KEPT = 7 * 86400.0  # seconds an upload's mark (UPLOADED) is kept
_marks_swept: dict[str, float] = {}  # spool -> when this process last swept its marks


def mark_uploaded(spool: str, stream: str, name: str, digest: str) -> str:
    """Record that the bytes of ``digest`` went to the repository as ``<stream>/<name>``
    (a symlink to it, which a later push of the name compares with); its folder."""
    folder = os.path.join(spool, UPLOADED, stream)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    tmp = os.path.join(folder, f"{TMP_PREFIX}{name}-{os.urandom(4).hex()}")
    os.symlink(digest, tmp)
    os.replace(tmp, os.path.join(folder, name))
    return folder


def sweep_marks(spool: str, older_than: float = MARKS_KEPT) -> int:
    """Remove the upload marks older than ``older_than`` seconds (at most once an hour
    per process and spool); how many."""
    import time

    now = time.time()
    if now - _marks_swept.get(spool, 0.0) < 3600:
        return 0
    _marks_swept[spool] = now
    removed = 0
    root = os.path.join(spool, UPLOADED)
    try:
        streams = [e.path for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return 0
    for folder in streams:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_mtime < now - older_than:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                pass
    return removed
