"""The swap journal: what a swap is about to do, written durably before each step.

A swap puts a restored (staged, verified) copy in the target's place in a few steps; a
process killed between two of them must not leave the target closed, missing or half
swapped. So before each step the swap writes one :class:`JournalEntry` naming the step it
is *about to run*, durably, and clears the journal after its last step. Whoever finds a
journal whose swap is not running any more (its lock is free) settles it: it looks at
what actually happened and either undoes the swap (the staged copy has not taken the
target's place yet: the original goes back exactly as it was) or completes it (it has: the
rest of the steps run). docs/design.md, "Swap journal", has the format, where each engine
keeps it and the recovery rules.

This module is engine-neutral: the entry and its JSON text (:func:`encode`,
:func:`decode`), the step names (:class:`SwapStep`), a file store that fsyncs the file and
its folder (:func:`write_file`, :func:`read_file`, :func:`clear_file`; for engines whose
target is a file), and the test hook :func:`kill_point`. Where an engine keeps the text
(PostgreSQL: on the server, see ``postgresql.swap``) and how it settles are the engine's.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from strongroom.errors import RestoreFailed

FORMAT = "strongroom-swap-journal"
VERSION = 1
PREFIX = f'{{"format": "{FORMAT}"'  # every journal's text starts with this (see encode)

# TEST HOOK (docs/design.md, "Test harness"): with this variable set to a step's name, the
# process SIGKILLs itself right after writing the journal entry for that step, so a test
# can stop a real swap at each step boundary. Never set it outside tests.
TEST_KILL_ENV = "STRONGROOM_TEST_KILL_AT"


class SwapStep(StrEnum):
    """The steps of a swap, in the order they run; an engine uses the ones it needs.

    The value is what the journal's ``step`` holds: the step about to run (its effect may
    or may not have happened when the process died). ``RENAME_IN`` is every engine's
    commit point: once it has taken effect a recovery completes the swap, before that it
    undoes it.
    """

    CLOSE = "close"  # take the target out of service (PostgreSQL: ALLOW_CONNECTIONS false)
    RENAME_AWAY = "rename_away"  # end its sessions and move it to the old name
    REOPEN_OLD = "reopen_old"  # the old copy accepts connections again (as it did)
    RENAME_IN = "rename_in"  # the staged copy takes the target's name: the commit point
    DROP_OLD = "drop_old"  # only when the old copy is not kept (--drop-old)
    FINISH = "finish"  # clean up and clear the journal (PostgreSQL: the final comment)


class JournalUnreadable(RestoreFailed):
    """A journal exists but cannot be read (damaged, or written by a newer strongroom)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class JournalEntry:
    """One journal entry. ``target``/``staged``/``old`` are names in the engine's terms
    (PostgreSQL: database names; SQLite: file paths); ``old`` is ``None`` when there was
    no target to replace. ``details``: what the engine needs to settle the swap (JSON
    values only; PostgreSQL: ``target_oid``, ``staged_oid``, ``allow_connections``,
    ``final_comment``). ``swap_id`` names one swap across its entries; ``host`` and
    ``pid`` say who wrote it (shown to the user, never trusted for anything)."""

    engine: str
    target: str
    staged: str
    old: str | None
    keep_old: bool
    step: SwapStep
    swap_id: str = field(default_factory=lambda: os.urandom(8).hex())
    written_at: str = field(default_factory=_now)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    details: dict[str, Any] = field(default_factory=dict)

    def at(self, step: SwapStep) -> JournalEntry:
        """This swap's entry for ``step``, stamped now."""
        return replace(self, step=step, written_at=_now())


def encode(entry: JournalEntry) -> str:
    """The entry as one line of JSON, ``format`` and ``version`` first."""
    document = {
        "format": FORMAT,
        "version": VERSION,
        "engine": entry.engine,
        "swap_id": entry.swap_id,
        "target": entry.target,
        "staged": entry.staged,
        "old": entry.old,
        "keep_old": entry.keep_old,
        "step": entry.step.value,
        "written_at": entry.written_at,
        "host": entry.host,
        "pid": entry.pid,
        "details": entry.details,
    }
    return json.dumps(document, separators=(", ", ": "), ensure_ascii=False)


def is_journal(text: str | None) -> bool:
    """Whether ``text`` claims to be a journal: it starts with :data:`PREFIX` (it may
    still not decode)."""
    return text is not None and text.startswith(PREFIX)


def decode(text: str) -> JournalEntry:
    """Parse :func:`encode`'s text. Raises ``JournalUnreadable`` for anything else (not
    JSON, another format, a newer version, a missing or mistyped field)."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise JournalUnreadable(f"swap journal is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise JournalUnreadable("not a strongroom swap journal")
    if document.get("version") != VERSION:
        raise JournalUnreadable(
            f"swap journal version {document.get('version')!r} is not {VERSION}: "
            "settle it with the strongroom that wrote it"
        )
    try:
        entry = JournalEntry(
            engine=_typed(document, "engine", str),
            target=_typed(document, "target", str),
            staged=_typed(document, "staged", str),
            old=None if document.get("old") is None else _typed(document, "old", str),
            keep_old=_typed(document, "keep_old", bool),
            step=SwapStep(_typed(document, "step", str)),
            swap_id=_typed(document, "swap_id", str),
            written_at=_typed(document, "written_at", str),
            host=_typed(document, "host", str),
            pid=_typed(document, "pid", int),
            details=_typed(document, "details", dict),
        )
    except ValueError as exc:
        raise JournalUnreadable(f"swap journal field: {exc}") from None
    return entry


def _typed(document: dict[str, Any], key: str, kind: type) -> Any:
    value = document.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{key} is missing or not a {kind.__name__}")
    return value


# --- a journal in a file (engines whose target is a file) -----------------------------
def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, entry: JournalEntry) -> None:
    """Replace the journal at ``path`` with ``entry`` durably: write ``<path>.tmp`` (mode
    0600), fsync it, rename it over ``path``, fsync the folder. A crash leaves either the
    previous entry or this one, never a mix. Raises ``OSError``."""
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (encode(entry) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    _fsync_dir(path.parent)


def read_file(path: Path) -> JournalEntry | None:
    """The journal at ``path``, or ``None`` if there is none. Raises
    ``JournalUnreadable`` for a file that does not decode, ``OSError`` if it cannot be
    read."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return decode(text)


def clear_file(path: Path) -> None:
    """Remove the journal at ``path`` (and a stale ``.tmp``) durably; missing is fine."""
    for name in (path, path.with_name(path.name + ".tmp")):
        try:
            name.unlink()
        except FileNotFoundError:
            continue
    _fsync_dir(path.parent)


# --- the test hook ---------------------------------------------------------------------
def kill_point(step: SwapStep) -> None:
    """TEST HOOK, called right after each journal entry is written: when
    ``$STRONGROOM_TEST_KILL_AT`` names ``step``, SIGKILL this process now (no cleanup,
    no ``finally``), as a crash or ``kill -9`` would. Does nothing otherwise."""
    if os.environ.get(TEST_KILL_ENV) == step.value:
        os.kill(os.getpid(), signal.SIGKILL)
