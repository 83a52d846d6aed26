"""Putting a restored SQLite file in the target's place so that a crash at any moment
leaves a state the next strongroom command settles (docs/design.md, "Swap journal").

The staged file (``.<name>.sr-<8 hex>.restoring``, beside the target) was restored,
verified and given the target's owner and mode. :func:`swap_into_place`, holding the
target's *swap lock* (``flock`` on ``.<name>.strongroom-swap.lock``, released by the
kernel however the process ends), runs these steps (``swap_journal.SwapStep``):

===========  =========================================================================
rename_away  hard-link the target to ``<name>.old-<UTC time>Z`` (only with a target and
             ``keep_old``; the target itself is not touched)
rename_in    ``rename(staged, target)``: the commit point
finish       remove the old ``-wal``/``-shm``/``-journal``, fsync the folder, clear the
             journal
===========  =========================================================================

``close``, ``reopen_old`` and ``drop_old`` are not used: nothing closes a file, and
without ``keep_old`` the old inode simply goes with its last name and descriptor. Before
each step the entry naming it is written to ``.<name>.strongroom-swap`` with
``swap_journal.write_file`` (0600, fsync, rename, fsync of the folder), so each step's
effect is durable before the next entry. The entry's ``details`` (:class:`Details`)
identify the files by ``(st_dev, st_ino)``: names are what changes.

:func:`recover` (``SqliteEngine.recover_swaps``) costs one ``lstat`` when there is no
journal. Otherwise it takes the swap lock (waiting up to ``LOCK_WAIT`` for a live swap,
then ``busy``), re-reads the journal and settles it from what the folder shows: if the
target's name holds the staged inode the swap is *completed* (the old companions removed
if nobody has used them since, journal cleared), otherwise it is *undone* (staged file
removed, the old link removed when it is a second name of the original, which is still
the target; journal cleared). A swap that fails in-process is settled the same way on the
spot. Names in a journal are only used as names in the target's folder, of the shapes a
swap creates, and a file is removed only where the journal's owner could have removed it
(a sticky folder), so a forged journal can make strongroom do only what its writer could.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import stat
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeGuard

from strongroom import errors
from strongroom.engines import swap_journal
from strongroom.engines.base import SwapOutcome, SwapRecovery
from strongroom.engines.swap_journal import JournalEntry, JournalUnreadable, SwapStep
from strongroom.errors import DatabaseUnreachable, RestoreFailed

log = logging.getLogger("strongroom.engines.sqlite")

KIND = "sqlite"
LOCK_WAIT = 30.0  # seconds a swap or a recovery waits for a live swap of the same file
COMPANIONS = ("-wal", "-shm", "-journal")
# SQLite's unix VFS holds a shared lock on this byte of the -shm file for as long as a
# connection has it open (UNIX_SHM_DMS in os_unix.c): a lock there means "in use".
_SHM_DMS_BYTE = 128


class SwapInterrupted(errors.SwapInterrupted):
    """A swap stopped half-way and could not be settled on the spot; its journal stays
    beside the file for the next command (or ``strongroom recover``)."""


class _Unsettled(Exception):
    """Why a journal cannot be settled now (shown to the user)."""


def journal_path(target: Path) -> Path:
    """Where the journal of a swap into ``target`` lives: ``.<name>.strongroom-swap``."""
    return target.with_name(f".{target.name}.strongroom-swap")


def lock_path(target: Path) -> Path:
    """The file whose ``flock`` is the swap lock of ``target``."""
    return target.with_name(f".{target.name}.strongroom-swap.lock")


FileId = tuple[int, int]  # (st_dev, st_ino)


def _id(st: os.stat_result) -> FileId:
    return st.st_dev, st.st_ino


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _ints(value: object, n: int) -> TypeGuard[list[int]]:
    return (
        isinstance(value, list)
        and len(value) == n
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )


@dataclass(frozen=True)
class Details:
    """The SQLite part of a journal entry (``JournalEntry.details``): ``target_id`` the
    target's ``[st_dev, st_ino]`` before the swap (``None``: there was no file);
    ``staged_id`` the staged file's; ``companions`` the target's ``-wal``/``-shm``/
    ``-journal`` files as they were just before the rename, ``suffix -> [st_dev, st_ino,
    st_size, st_mtime_ns]`` (a recovery removes only those, and only unchanged)."""

    target_id: list[int] | None
    staged_id: list[int]
    companions: dict[str, list[int]]

    @classmethod
    def of(cls, entry: JournalEntry) -> Details:
        """Parse ``entry.details``. Raises ``JournalUnreadable`` if they are not ours."""
        d = entry.details
        target, staged, companions = d.get("target_id"), d.get("staged_id"), d.get("companions")
        if not _ints(staged, 2) or not isinstance(companions, dict):
            raise JournalUnreadable("swap journal details are not a SQLite swap's")
        if (target is not None and not _ints(target, 2)) or not all(
            k in COMPANIONS and _ints(v, 4) for k, v in companions.items()
        ):
            raise JournalUnreadable("swap journal details are not a SQLite swap's")
        return cls(target, staged, companions)

    def target(self) -> FileId | None:
        return None if self.target_id is None else (self.target_id[0], self.target_id[1])

    def staged(self) -> FileId:
        return self.staged_id[0], self.staged_id[1]


# --- the swap lock -----------------------------------------------------------------------
def _try_lock(target: Path, wait: float) -> int | None:
    """Take the swap lock of ``target`` (waiting up to ``wait`` seconds): the descriptor
    holding it, or ``None`` if a live swap or recovery kept it. The lock file is removed
    by its holder on release, so a lock taken on a file that is no longer at the name is
    dropped and taken again. Raises ``OSError`` (the folder cannot be written)."""
    path = lock_path(target)
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        return None
                    time.sleep(0.05)
            now = _lstat(path)
            if now is not None and _id(now) == _id(os.fstat(fd)):
                with contextlib.suppress(OSError):  # any user may wait on it (umask 077)
                    os.fchmod(fd, 0o644)
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # released and removed meanwhile: take the new one


def _unlock(target: Path, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(lock_path(target))  # while still held: see _try_lock
    os.close(fd)


@contextlib.contextmanager
def swap_lock(target: Path) -> Iterator[None]:
    """Hold the swap lock of ``target`` for a swap. Raises ``RestoreFailed`` (the target
    unchanged) if another swap holds it past ``LOCK_WAIT`` or it cannot be taken."""
    try:
        fd = _try_lock(target, LOCK_WAIT)
    except OSError as exc:
        raise RestoreFailed(
            f"cannot lock {target} for the swap: {exc.strerror or exc}; it is unchanged"
        ) from None
    if fd is None:
        raise RestoreFailed(
            f"another swap into {target} is in progress; the original file is unchanged"
        )
    try:
        yield
    finally:
        _unlock(target, fd)


# --- reading and writing the journal -----------------------------------------------------
def _read(path: Path) -> tuple[JournalEntry, os.stat_result] | None:
    """The journal at ``path`` and its ``stat`` (for its owner), ``None`` if there is
    none. Raises ``JournalUnreadable`` (not a regular file, does not decode), ``OSError``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if os.path.islink(path):
            raise JournalUnreadable("the swap journal is a symbolic link") from None
        raise exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise JournalUnreadable("the swap journal is not a regular file")
        data = os.read(fd, 1 << 16)
    finally:
        os.close(fd)
    try:
        return swap_journal.decode(data.decode()), st
    except UnicodeDecodeError:
        raise JournalUnreadable("swap journal is not UTF-8") from None


def _write(target: Path, entry: JournalEntry) -> None:
    swap_journal.write_file(journal_path(target), entry)
    swap_journal.kill_point(entry.step)  # TEST HOOK (see swap_journal.kill_point)


# --- settling a journal --------------------------------------------------------------------
_STAGED = r"\.{name}\.sr-[0-9a-f]{{8}}\.restoring"
_OLD = r"{name}\.old-\d{{8}}T\d{{6}}Z(-[0-9a-f]{{4}})?"


def _name_in_folder(target: Path, given: str, shape: str, what: str) -> Path:
    """``given``'s file name, in the target's folder, if it has ``shape`` (a name a swap
    gives). Raises ``_Unsettled`` otherwise."""
    name = Path(given).name
    if not re.fullmatch(shape.format(name=re.escape(target.name)), name):
        raise _Unsettled(f"the journal names {given!r} as the {what}, not a name a swap gives")
    return target.with_name(name)


Writer = os.stat_result | None  # the journal's stat (its owner); None: this process's swap


def _may_remove(folder: os.stat_result, writer: Writer, st: os.stat_result) -> bool:
    """Whether the journal's writer (``writer``: the journal's ``stat``; ``None``: this
    process) could have removed a file with ``st`` from the folder itself: anywhere it
    could create the journal, except in a sticky folder a file it does not own."""
    if writer is None or writer.st_uid == 0 or not folder.st_mode & stat.S_ISVTX:
        return True
    return writer.st_uid in (st.st_uid, folder.st_uid)


def _remove(path: Path, expect: FileId, folder: os.stat_result, writer: Writer) -> bool:
    """Remove ``path`` if it is the file ``expect``; whether it was there to remove.
    Raises ``_Unsettled`` when the journal's writer could not have removed it."""
    st = _lstat(path)
    if st is None or _id(st) != expect:
        return False
    if not _may_remove(folder, writer, st):
        raise _Unsettled(f"{path} is not the journal owner's to remove (sticky folder)")
    path.unlink()
    return True


def _shm_in_use(path: Path) -> bool:
    """Whether a SQLite connection of another process has the ``-shm`` file ``path``
    open: SQLite holds a shared ``fcntl`` lock on its DMS byte while it does. 64-bit Linux
    only (the ``struct flock`` layout); elsewhere, or when it cannot tell, ``True``. (Closing
    the probe's descriptor would drop this process's own ``fcntl`` locks on the file;
    strongroom holds none on a target's ``-shm`` while it settles a swap.)"""
    if not sys.platform.startswith("linux") or struct.calcsize("P") != 8:
        return True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        probe = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, _SHM_DMS_BYTE, 1, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, probe)
        return bool(struct.unpack("hhqqi4x", answer)[0] != fcntl.F_UNLCK)
    except OSError:
        return True
    finally:
        os.close(fd)


def _record_companions(target: Path) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for suffix in COMPANIONS:
        st = _lstat(Path(f"{target}{suffix}"))
        if st is not None:
            found[suffix] = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
    return found


def _remove_old_companions(
    target: Path, recorded: dict[str, list[int]], folder: os.stat_result, writer: Writer
) -> list[str]:
    """Remove the old ``-wal``/``-shm``/``-journal`` a completed swap left beside the
    restored file, all or none: only if each is still the file recorded just before the
    rename, unchanged since (size, mtime), and no connection has the ``-shm`` open.
    Otherwise connections to the restored file may be using them (removing its WAL would
    lose their committed transactions, removing the ``-shm`` split their locking), so
    they stay. Returns the names left in place."""
    present: list[tuple[Path, os.stat_result]] = []
    used = False
    for suffix, (dev, ino, size, mtime_ns) in recorded.items():
        path = Path(f"{target}{suffix}")
        st = _lstat(path)
        if st is None or _id(st) != (dev, ino):
            continue  # gone, or a new file of the restored database: not the old one
        present.append((path, st))
        used = used or (st.st_size, st.st_mtime_ns) != (size, mtime_ns)
        used = used or (suffix == "-shm" and _shm_in_use(path))
    if used:
        return [path.name for path, _ in present]
    for path, st in present:
        _remove(path, _id(st), folder, writer)
    return []


def settle(
    target: Path, entry: JournalEntry, writer: os.stat_result | None
) -> tuple[SwapOutcome, str]:
    """Complete or undo the swap into ``target`` that ``entry`` describes, from what the
    folder shows (the caller holds the swap lock; ``writer``: the journal's ``stat``, or
    ``None`` for this process's own swap). Returns ("completed" or "undone", the one-line
    report) and clears the journal. Idempotent: every removal checks the inode first, the
    journal goes last. Raises ``OSError`` or ``_Unsettled``; the journal then stays."""
    details = Details.of(entry)
    if entry.engine != KIND or Path(entry.target).name != target.name:
        raise _Unsettled(f"the journal is not of a SQLite swap into {target}")
    staged = _name_in_folder(target, entry.staged, _STAGED, "staged file")
    old = None if entry.old is None else _name_in_folder(target, entry.old, _OLD, "old copy")
    folder = os.stat(target.parent)
    where = f"SQLite file {target}"
    now = _lstat(target)
    if now is not None and _id(now) == details.staged():
        fate = ""
        if details.target_id is not None and entry.keep_old and old is not None:
            linked = _lstat(old)
            if linked is not None and _id(linked) == details.target():
                fate = f"; the replaced file is kept as {old}"
            else:
                fate = f"; the replaced file was to be kept as {old}, which is not there"
        elif details.target_id is not None:
            fate = "; the replaced file was not kept (--drop-old)"
        left = _remove_old_companions(target, details.companions, folder, writer)
        if left:
            fate += (
                f"; the old {', '.join(left)} beside it were left in place (used since the "
                "swap: a connection may hold the restored file's transactions there)"
            )
        swap_journal.clear_file(journal_path(target))
        return "completed", (
            f"completed the interrupted swap into {where} (stopped at step {entry.step}): "
            f"the restored database is in place{fate}"
        )
    back = "there was no file before"
    original = details.target()
    if original is not None:
        if now is None:
            still = f" (it is still linked as {old})" if old and _lstat(old) else ""
            raise _Unsettled(f"the original file is gone from {target}{still}")
        if _id(now) != original:
            raise _Unsettled(
                f"{target} is neither the original file nor the restored one: left as it is"
            )
        if old is not None:
            _remove(old, original, folder, writer)  # a second name of the original
        back = "the original file is back as it was"
    elif now is not None:
        back = "there was no file before (the file there now is left as it is)"
    copy = "the restored copy was removed"
    if _remove(staged, details.staged(), folder, writer):
        for suffix in COMPANIONS:  # nothing opens a staged file: only check leftovers
            Path(f"{staged}{suffix}").unlink(missing_ok=True)
    swap_journal.clear_file(journal_path(target))  # fsyncs the folder
    return "undone", (
        f"undid the interrupted swap into {where} (stopped at step {entry.step}): {back}; {copy}"
    )


def _failed(target: Path, database: str, step: SwapStep | None, reason: str) -> SwapRecovery:
    stopped = f" (stopped at step {step})" if step else ""
    return SwapRecovery(
        database,
        "failed",
        f"could not settle the interrupted swap into SQLite file {target}{stopped}: "
        f"{reason}; left as it is: once that is fixed, run strongroom recover --to "
        f"sqlite://{target} as a user who may write its folder",
    )


def recover(target: Path, database: str) -> list[SwapRecovery]:
    """Settle the interrupted swap into ``target``, if its journal is there
    (``Engine.recover_swaps``; ``database``: the name ``SwapRecovery`` carries). One
    ``lstat`` when there is none. Never raises for a swap it cannot settle; raises
    ``DatabaseUnreachable`` when it cannot look (the folder cannot be searched)."""
    journal = journal_path(target)
    try:
        os.lstat(journal)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise DatabaseUnreachable(
            f"cannot look for an interrupted swap into {target}: {exc.strerror or exc}"
        ) from None
    where = f"SQLite file {target}"
    try:
        fd = _try_lock(target, LOCK_WAIT)
    except OSError as exc:
        return [_failed(target, database, None, f"cannot lock it ({exc.strerror or exc})")]
    if fd is None:
        who = ""
        with contextlib.suppress(OSError, JournalUnreadable):
            running = _read(journal)
            if running is not None:
                who = f" (process {running[0].pid} on {running[0].host}, by its journal)"
        return [
            SwapRecovery(
                database,
                "busy",
                f"a swap into {where} is in progress{who}: left alone; if no strongroom "
                f"runs it any more, run strongroom recover --to sqlite://{target}",
            )
        ]
    try:
        try:
            found = _read(journal)
        except (OSError, JournalUnreadable) as exc:
            return [
                SwapRecovery(
                    database,
                    "failed",
                    f"the swap journal {journal} cannot be read ({exc}); left alone: remove "
                    "it once no restore into the file is running",
                )
            ]
        if found is None:
            return []  # settled meanwhile, by its own swap or another recovery
        entry, writer = found
        try:
            outcome, line = settle(target, entry, writer)
        except (OSError, _Unsettled, JournalUnreadable) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return [_failed(target, database, entry.step, reason)]
        return [SwapRecovery(database, outcome, line)]
    finally:
        _unlock(target, fd)


# --- the swap ------------------------------------------------------------------------------
def settle_earlier(target: Path) -> None:
    """Settle a killed swap into ``target`` first (the caller holds its swap lock).
    Raises ``RestoreFailed`` when it cannot be settled now."""
    try:
        found = _read(journal_path(target))
        if found is not None:
            log.warning("%s", settle(target, found[0], found[1])[1])
    except (OSError, _Unsettled, JournalUnreadable) as exc:
        raise RestoreFailed(
            f"an interrupted earlier swap into {target} could not be settled: {exc}; the "
            f"restored copy was not swapped in (strongroom recover --to sqlite://{target})"
        ) from None


def _old_name(target: Path) -> Path:
    old = target.with_name(f"{target.name}.old-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    if os.path.lexists(old):  # two swaps within one second
        old = old.with_name(f"{old.name}-{os.urandom(2).hex()}")
    return old


def swap_into_place(target: Path, staged: Path, *, keep_old: bool) -> Path | None:
    """Rename ``staged`` over ``target`` with the journal (module docstring); the caller
    holds the swap lock and has checkpointed the target. Returns the name the old file is
    kept under (``None``: there was none, or ``keep_old`` is false). Raises
    ``RestoreFailed`` with the target unchanged, or ``SwapInterrupted`` when the swap
    stopped half-way and could not be settled (the next command does it)."""
    before = _lstat(target)
    incoming = os.lstat(staged)
    old = _old_name(target) if before is not None and keep_old else None
    details = Details(
        target_id=None if before is None else list(_id(before)),
        staged_id=list(_id(incoming)),
        companions=_record_companions(target),
    )
    entry = JournalEntry(
        engine=KIND,
        target=str(target),
        staged=str(staged),
        old=None if old is None else str(old),
        keep_old=keep_old,
        step=SwapStep.RENAME_IN,
        details=asdict(details),
    )
    try:
        if old is not None:
            entry = entry.at(SwapStep.RENAME_AWAY)
            _write(target, entry)
            os.link(target, old)
        entry = entry.at(SwapStep.RENAME_IN)
        _write(target, entry)
        os.replace(staged, target)
    except BaseException as exc:
        if _settle_after_failure(target, entry, exc) != "completed" or not isinstance(
            exc, Exception
        ):
            raise
        return old
    # Committed: the restored file has the target's name.
    try:
        entry = entry.at(SwapStep.FINISH)
        _write(target, entry)
        for suffix in COMPANIONS:  # at once: the old process's late writes stay out
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        swap_journal.clear_file(journal_path(target))  # fsyncs the folder
    except OSError as exc:
        log.warning(
            "the restored file is in place at %s, but finishing the swap failed at step %s "
            "(%s); the next strongroom command on it finishes it",
            target,
            entry.step,
            exc.strerror or exc,
        )
    return old


def _settle_after_failure(target: Path, entry: JournalEntry, exc: BaseException) -> SwapOutcome:
    """A step of this process's swap failed: settle it now (undo; complete if the rename
    turned out to have happened). Raises ``RestoreFailed`` (the original back) for an
    ``OSError``, ``SwapInterrupted`` when it cannot be settled now; returns the outcome
    otherwise (the caller re-raises anything else)."""
    reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else repr(exc)
    try:
        outcome, line = settle(target, entry, None)
    except (OSError, _Unsettled, JournalUnreadable) as problem:
        raise SwapInterrupted(
            f"the swap into {target} stopped at step {entry.step} ({reason}) and could not be "
            f"settled now ({problem}); the next strongroom command on it, or strongroom "
            f"recover --to sqlite://{target}, completes or undoes it"
        ) from None
    log.warning("%s", line)
    if outcome == "completed" or not isinstance(exc, OSError):
        return outcome
    had_target = Details.of(entry).target_id is not None
    unchanged = "the original file is unchanged" if had_target else "no file was created"
    raise RestoreFailed(
        f"could not swap the restored file into {target}: {reason}; {unchanged}"
    ) from None
