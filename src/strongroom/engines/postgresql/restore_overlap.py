"""A parallel restore that starts while the dump is still being written to its temp file.

``pg_restore -j`` needs a file it can seek in, so a parallel restore writes the verified dump
(``pg_dump -Fc -Z0``, written to a pipe) into a private unnamed temp file first
(``tempfiles.spool``). That used to be serial: the whole file, then one ``pg_restore -j``.
Here the file is written in order as before, and the restore runs in steps, each a
``pg_restore -L <list>`` of some of the entries ``pg_restore --list`` shows, that start as
soon as the part of the file they read is written:

1. **pre-data**, once the header and TOC are in the file (the stream's first bytes): the
   entries of the pre-data section (schemas, types, tables, functions, sequences, and the
   comments that follow them in the TOC) but its ACLs. It reads only the TOC.
2. **data, a batch of tables at a time**, while the file grows. The data blocks follow the
   TOC in TOC order; the scanner of ``data_offsets`` runs on the bytes as they arrive (with
   ``-Z0`` ``<int 0><block type 1><dump id>`` starts the next block), so block *k* is
   complete once block *k*+1's start is written, the last one at the end of the stream.
   Once pre-data ended well, each complete block's offset is written into its TOC entry,
   as ``pg_dump`` does on a seekable file (the offset bytes first, then the flag byte: a
   ``pg_restore`` reading the TOC meanwhile sees "not set" or the whole offset; each reads
   only the offsets of the entries it restores), and ``pg_restore -L <their --list
   lines>`` restores the batch: it seeks straight to each block and never reads the part
   of the file not yet written. At most ``jobs`` batches at once; tables under
   ``MIN_BATCH_BYTES`` are batched together (thousands of small tables must not cost
   thousands of ``pg_restore`` starts); at the end of the stream the largest go first.
3. **the rest of the data**, once the file is complete and every batch ended: the entries
   of the data section no batch took (``SEQUENCE SET``, large objects, any block the
   scanner did not find), with ``-j`` when several tables are among them.
4. **post-data** with ``-j``: the post-data section (indexes, constraints, triggers,
   materialized view data...) and every ACL.

Why the steps restore exactly what one ``pg_restore -j`` restores, each entry once: the
steps' lists split the entries ``pg_restore --list`` shows (those one restore would
restore; ``ENCODING``, ``STDSTRINGS`` and ``SEARCHPATH`` are applied by every run and not
listed), each to one step, and no step names a ``--section``, so a listed entry is restored
and an unlisted one is not. The sections are the ones ``pg_restore`` gives (an entry of no
section of its own, such as a ``COMMENT`` or an ``ACL``, has the section of the nearest
entry before it that has one: ``ProcessArchiveRestoreOptions``). Order: a run restores its
list in the list's order (``SortTocFromFile``), TOC order here; pre-data before any data
(a batch starts after it ended), post-data after all data, as one restore does. One
``pg_restore`` restores ACLs in a last pass, after the data (``_tocEntryRestorePass``:
a table whose owner revoked its own ``INSERT`` must get its rows first), hence the ACLs of
the pre-data section move to step 4, whose last pass restores them, then the materialized
views' data (the pass after ACLs), as one restore does. Anything unexpected at the start
(not a custom archive of a known version, compression, a TOC that does not parse or is
over ``MAX_PREFIX``, ``pg_restore --list`` not matching the parsed TOC): the whole file is
written, then one ``pg_restore -j`` as before (:func:`restore_whole`). ``pg_restore``
checks the block type and dump id at every offset it seeks to.

A step's end is noticed when the next chunk arrives (the steps are started, polled and
stopped by the thread that reads the stream: ``process.popen``'s children die with the
thread that started them), and at the end of the stream. Every step gets the same flags
(``restore.restore_flags``). A step ended well with status 0, or 1 when
``tolerate_errors`` (``--verbose`` without ``--exit-on-error``: the caller judges the
messages). After a step that did not, nothing more starts and the running steps are
stopped; the stream is still read to its end (a damaged backup raises its own error). The
result is one exit status (the first not in (0, 1), else 1 if any step had 1, else 0) and
the steps' stderr in the order they started. An exception or a signal at any point stops
every running ``pg_restore`` (``process.stop``) and the temp file goes with its
``tempfiles.spool``.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
from collections.abc import Iterable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from strongroom import tempfiles
from strongroom.engines.postgresql.connection import PostgresServer
from strongroom.engines.postgresql.data_offsets import (
    BLK_DATA,
    DATA_DESCS,
    OFFSET_NOT_SET,
    OFFSET_SET,
    ArchiveToc,
    OffsetSlot,
    fill_data_offsets,
    int_bytes,
    read_toc,
)
from strongroom.engines.postgresql.dump_layout import LayoutIncomplete, LayoutUnreadable
from strongroom.engines.process import popen, run_tool, stop

logger = logging.getLogger("strongroom.engines.postgresql")

SECTION_NONE, SECTION_PRE_DATA, SECTION_DATA, SECTION_POST_DATA = 1, 2, 3, 4  # teSection
MIN_BATCH_BYTES = 8 * 1024 * 1024  # smaller tables' data is restored together
POLL_SECONDS = 0.01
ACL_DESCS = (b"ACL", b"DEFAULT ACL", b"ACL LANGUAGE")  # _tocEntryIsACL
_LIST_LINE = re.compile(rb"^(\d+); \d+ \d+ (.*)$")


@dataclass
class _Step:
    """One running (or ended) ``pg_restore``."""

    name: str
    proc: subprocess.Popen[bytes]
    stack: ExitStack  # its stderr file and list file
    stderr_file: tempfiles.Spool | None = None
    returncode: int | None = None
    stderr: str = ""


@dataclass(frozen=True)
class _Block:
    slot: OffsetSlot
    start: int
    end: int  # first byte after the block (the next block's start, or the file's end)


@dataclass
class _Plan:
    """What the TOC says: the data section's entries and the blocks to look for."""

    toc: ArchiveToc
    lines: dict[int, bytes]  # dump id -> its ``pg_restore --list`` line
    pre_ids: list[int]  # step 1, in TOC order
    data_ids: list[int]  # steps 2 and 3
    post_ids: list[int]  # step 4
    sought: list[OffsetSlot]  # the blocks the scanner looks for, in file order
    table_data: set[int]


def restore_whole(
    server: PostgresServer, tool: Path, dump: tempfiles.Spool, jobs: int, flags: list[str]
) -> tuple[int, str]:
    """The whole file written: fill its data offsets (``data_offsets``), then one
    ``pg_restore -j`` (the largest tables first)."""
    fill_data_offsets(dump.handle.fileno())
    listing = run_tool([str(tool), "--list", dump.path], pass_fds=dump.pass_fds)
    jobs = max(1, min(jobs, listing.stdout.count(b" TABLE DATA ")))
    logger.info("restoring into %s with %s -j %d", server.where(), tool, jobs)
    where = server.conninfo(with_password=False)
    command = [str(tool), *flags, f"--jobs={jobs}", "-d", where, dump.path]
    result = run_tool(command, env=server.child_env(), pass_fds=dump.pass_fds)
    return result.returncode, result.stderr.decode("utf-8", "replace")


def restore_overlapped(
    server: PostgresServer,
    tool: Path,
    source: Iterable[bytes],
    jobs: int,
    flags: list[str],
    tolerate_errors: bool,
) -> tuple[int, str]:
    """Write ``source`` (the verified chunks of the dump, in order) to a private temp file
    and restore it with up to ``jobs`` ``pg_restore`` at once, starting while it is written
    (see the module docstring). Returns (exit status, stderr)."""
    logger.info(
        "restoring into %s with %s -j %d, starting while the dump is written",
        server.where(),
        tool,
        jobs,
    )
    with tempfiles.spool("dump-") as dump, _Overlap(server, tool, dump, jobs, flags) as run:
        run.tolerate_errors = tolerate_errors
        for data in source:  # every chunk is verified as it is read
            dump.handle.write(data)
            dump.handle.flush()  # the steps read the file, not this buffer
            run.arrived(data)
        return run.finish()


class _Overlap:
    def __init__(
        self,
        server: PostgresServer,
        tool: Path,
        dump: tempfiles.Spool,
        jobs: int,
        flags: list[str],
    ) -> None:
        self._server = server
        self._tool = tool
        self._dump = dump
        self._fd = dump.handle.fileno()
        self._jobs = max(1, jobs)
        self._flags = flags
        self.tolerate_errors = False
        self._written = 0
        self._prefix = bytearray()  # the stream's start until its TOC parses
        self._next_parse = 0
        self._plan: _Plan | None = None
        self._whole = False  # fall back to restore_whole
        self._k = 0  # index in plan.sought of the next block to find
        self._open: tuple[OffsetSlot, int] | None = None  # the last block found, not ended
        self._tail = b""  # the last bytes scanned (a block start may span two chunks)
        self._search_from = 0
        self._pending: list[_Block] = []  # complete blocks not restored yet
        self._taken: set[int] = set()  # dump ids given to a batch
        self._steps: list[_Step] = []  # every step started, in order
        self._running: list[_Step] = []
        self._pre: _Step | None = None
        self._pre_ok = False
        self._failed = False

    def __enter__(self) -> _Overlap:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for step in list(self._running):  # an exception or a signal: stop them all
            stop(step.proc)
            self._reap(step)

    # --- the stream ----------------------------------------------------------------------
    def arrived(self, data: bytes) -> None:
        """``data`` was written (and flushed) at the file's end."""
        at = self._written
        self._written += len(data)
        if self._whole or self._failed:
            return
        if self._plan is None:
            self._prefix += data
            if len(self._prefix) >= self._next_parse:
                self._read_toc()
        else:
            self._scan(data, at)
        self._poll()
        self._dispatch(final=False)

    def _read_toc(self) -> None:
        try:
            toc = read_toc(io.BytesIO(self._prefix))
        except LayoutIncomplete:
            self._next_parse = 2 * len(self._prefix)  # parse again when it doubled
            return
        except LayoutUnreadable as exc:
            self._fall_back(str(exc))
            return
        reason = self._plan_from(toc)
        if reason is not None:
            self._fall_back(reason)
            return
        assert self._plan is not None
        self._pre = self._start("pre-data", [], self._plan.pre_ids)
        rest, self._prefix = bytes(self._prefix[toc.toc_end :]), bytearray()
        self._scan(rest, toc.toc_end)

    def _fall_back(self, reason: str) -> None:
        logger.debug("restore not overlapped with the temp file's writing: %s", reason)
        self._whole, self._prefix = True, bytearray()

    def _plan_from(self, toc: ArchiveToc) -> str | None:
        """Set ``self._plan``; or why the overlap does not apply."""
        if toc.compressed:
            return "a compressed archive"
        listing = run_tool(
            [str(self._tool), "--list", self._dump.path], pass_fds=self._dump.pass_fds
        )
        if listing.returncode != 0:
            return f"pg_restore --list failed: {listing.stderr.decode('utf-8', 'replace')}"
        lines = {}
        for line in listing.stdout.splitlines():
            found = _LIST_LINE.match(line)
            if found:
                lines[int(found.group(1))] = (found.group(2), line)
        steps: dict[int, list[int]] = {
            SECTION_PRE_DATA: [],
            SECTION_DATA: [],
            SECTION_POST_DATA: [],
        }
        sections, current = {}, SECTION_PRE_DATA
        for slot in toc.slots:
            if slot.section not in (SECTION_NONE, *steps):
                return f"entry {slot.dump_id} has section {slot.section}"
            current = current if slot.section == SECTION_NONE else slot.section
            sections[slot.dump_id] = current
            if slot.dump_id not in lines:
                continue  # not restored (ENCODING, STDSTRINGS, SEARCHPATH: by every run)
            what, _line = lines[slot.dump_id]
            if not what.startswith(slot.desc + b" "):
                return f"pg_restore --list shows entry {slot.dump_id} as {what!r}"
            if slot.desc in ACL_DESCS:
                steps[SECTION_POST_DATA].append(slot.dump_id)  # ACLs after the data
            else:
                steps[current].append(slot.dump_id)
        if set(lines) - set(sections):
            return "pg_restore --list shows entries not in the parsed TOC"
        sought = []
        for slot in toc.slots:
            if slot.flag != OFFSET_NOT_SET:
                continue  # no data block
            if slot.desc not in DATA_DESCS or slot.dump_id not in steps[SECTION_DATA]:
                break  # a large-object block (binary data may hold the pattern): stop here
            sought.append(slot)
        self._plan = _Plan(
            toc,
            {i: line for i, (_what, line) in lines.items()},
            steps[SECTION_PRE_DATA],
            steps[SECTION_DATA],
            steps[SECTION_POST_DATA],
            sought,
            {s.dump_id for s in toc.slots if s.desc == b"TABLE DATA"},
        )
        return None

    def _scan(self, data: bytes, at: int) -> None:
        """Find the sought blocks' starts in ``data``, the file's bytes from ``at``."""
        plan = self._plan
        assert plan is not None
        int_size = plan.toc.int_size
        end_marker = int_bytes(0, int_size)
        window = self._tail + data
        base = at - len(self._tail)
        while self._k < len(plan.sought):
            slot = plan.sought[self._k]
            header = bytes([BLK_DATA]) + int_bytes(slot.dump_id, int_size)
            if self._k == 0:  # the first block begins where the TOC ends
                if self._written < plan.toc.toc_end + len(header):
                    break
                if os.pread(self._fd, len(header), plan.toc.toc_end) != header:
                    plan.sought = []  # not as expected: the rest to step 3
                    break
                start = plan.toc.toc_end
            else:
                found = window.find(end_marker + header, max(0, self._search_from - base))
                if found < 0:
                    break
                start = base + found + len(end_marker)
            if self._open is not None:
                self._pending.append(_Block(self._open[0], self._open[1], start))
            self._open = (slot, start)
            self._search_from = start + len(header)
            self._k += 1
        keep = len(end_marker) + 1 + 1 + int_size - 1  # a needle's length - 1
        self._tail = window[-keep:]

    # --- the steps -----------------------------------------------------------------------
    def _start(self, name: str, args: list[str], listed: list[int] | None = None) -> _Step:
        stack = ExitStack()
        try:
            stderr = stack.enter_context(tempfiles.spool("stderr-"))
            fds = list(self._dump.pass_fds)
            if listed is not None:
                assert self._plan is not None
                listing = stack.enter_context(tempfiles.spool("list-"))
                listing.handle.write(b"".join(self._plan.lines[i] + b"\n" for i in listed))
                listing.handle.flush()
                args = [*args, f"--use-list={listing.path}"]
                fds += listing.pass_fds
            command = [
                str(self._tool),
                *self._flags,
                *args,
                "-d",
                self._server.conninfo(with_password=False),
                self._dump.path,
            ]
            proc = popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr.handle,
                env=self._server.child_env(),
                pass_fds=fds,
            )
        except BaseException:
            stack.close()
            raise
        step = _Step(name, proc, stack, stderr)
        logger.debug("pg_restore started: %s (pid %d)", name, proc.pid)
        self._steps.append(step)
        self._running.append(step)
        return step

    def _reap(self, step: _Step) -> None:
        """``step`` ended: keep its status and stderr, close its files."""
        step.returncode = step.proc.wait()
        if step.stderr_file is not None:
            step.stderr_file.handle.seek(0)
            step.stderr = step.stderr_file.handle.read().decode("utf-8", "replace")
            step.stderr_file = None
        step.stack.close()
        self._running.remove(step)

    def _poll(self) -> bool:
        """Reap the steps that ended; whether any had."""
        ended = [step for step in self._running if step.proc.poll() is not None]
        for step in ended:
            self._reap(step)
            assert step.returncode is not None
            fine = step.returncode == 0 or (self.tolerate_errors and step.returncode == 1)
            logger.debug("pg_restore ended: %s, status %d", step.name, step.returncode)
            if step is self._pre:
                self._pre_ok = fine
            if not fine and not self._failed:
                self._failed = True
                for other in list(self._running):
                    stop(other.proc)
                    self._reap(other)
        return bool(ended)

    def _dispatch(self, final: bool) -> None:
        """Start batches of complete blocks while fewer than ``jobs`` steps run."""
        if not self._pre_ok or self._failed:
            return
        if final:
            self._pending.sort(key=lambda b: b.end - b.start, reverse=True)
        while self._pending and len(self._running) < self._jobs:
            batch = [self._pending.pop(0)]
            size = batch[0].end - batch[0].start
            while self._pending and size < MIN_BATCH_BYTES:
                block = self._pending.pop(-1 if final else 0)  # at the end: the smallest
                batch.append(block)
                size += block.end - block.start
            self._start_batch(batch)

    def _start_batch(self, batch: list[_Block]) -> None:
        plan = self._plan
        assert plan is not None
        for block in batch:
            offset = block.start.to_bytes(plan.toc.offset_size, "little")
            flag_at = block.slot.flag_at
            if os.pwrite(self._fd, offset, flag_at + 1) != len(offset):
                raise OSError(f"short write of a data offset at {flag_at + 1}")
            if os.pwrite(self._fd, bytes([OFFSET_SET]), flag_at) != 1:
                raise OSError(f"short write of a data offset flag at {flag_at}")
            self._taken.add(block.slot.dump_id)
        ids = [block.slot.dump_id for block in batch]
        self._start(f"data of {len(ids)} tables", [], ids)

    def _wait_running(self, final: bool) -> None:
        """Until no step runs (nor, when ``final``, waits for a free job)."""
        while self._running or (final and self._pending and self._pre_ok and not self._failed):
            if not self._poll() and self._running:
                with suppress(subprocess.TimeoutExpired):
                    self._running[0].proc.wait(timeout=POLL_SECONDS)
            self._dispatch(final)

    def finish(self) -> tuple[int, str]:
        """The file is complete: the rest of the steps; the result."""
        if self._plan is None or self._whole:
            self._wait_running(final=False)
            return restore_whole(self._server, self._tool, self._dump, self._jobs, self._flags)
        plan = self._plan
        during_stream = len(self._taken)
        if self._open is not None:  # the last block found ends with the file
            self._pending.append(_Block(self._open[0], self._open[1], self._written))
            self._open = None
        self._wait_running(final=True)
        if not self._failed:
            rest = [i for i in plan.data_ids if i not in self._taken]
            tables = sum(1 for i in rest if i in plan.table_data)
            if rest:
                jobs = [f"--jobs={min(self._jobs, tables)}"] if tables > 1 else []
                self._start("the rest of the data", jobs, rest)
                self._wait_running(final=False)
        if not self._failed:
            self._start("post-data", [f"--jobs={self._jobs}"], plan.post_ids)
            self._wait_running(final=False)
        logger.info(
            "restored into %s with %s in %d steps: %d of %d data entries in table batches, "
            "%d of them started while the dump was written",
            self._server.where(),
            self._tool,
            len(self._steps),
            len(self._taken),
            len(plan.data_ids),
            during_stream,
        )
        codes = [s.returncode for s in self._steps if s.returncode is not None]
        bad = [c for c in codes if c not in (0, 1)]
        returncode = bad[0] if bad else (1 if 1 in codes else 0)
        return returncode, "".join(s.stderr for s in self._steps)
