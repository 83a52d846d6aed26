"""WAL positions, segment names and timelines: the one place for their arithmetic.

No repository, no storage, no server: plain functions over PostgreSQL's conventions
(docs/design.md, "WAL status, continuity and retention").

- An **LSN** is a 64-bit byte position in the WAL, written ``X/Y`` (two groups of 1 to 8
  hex digits: the high and low 32 bits).
- A **segment** is ``segment_size`` bytes of WAL (16 MiB unless ``initdb
  --wal-segsize``); segment number ``n`` holds LSNs ``[n * size, (n + 1) * size)``. Its file
  name is 24 hex digits: timeline (8), ``n // per_log`` (8), ``n % per_log`` (8), with
  ``per_log = 2**32 // size``.
- A **timeline** history file ``NNNNNNNN.history`` lists, for each ancestor of timeline
  ``NNNNNNNN``, a line ``<parent tli> <tab> <switch LSN> <tab> <reason>``: the parent was
  left at that LSN. Timeline 1 has no history file.
- Recovery switching from timeline A to B at LSN X reads the segment holding X (and every
  later one) from B: B's first segment starts as a copy of A's up to X, and A's last one
  is archived as ``….partial``. So timeline A is needed up to the segment *before* X's.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from strongroom.errors import UsageError

SEGMENT_SIZE = 16 * 1024 * 1024  # PostgreSQL's default (initdb --wal-segsize=16)
_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
_SEGMENT_NAME = re.compile(r"([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})")
_MAX_LSN = (1 << 64) - 1


def parse_lsn(text: str) -> int:
    """``0/16B3748`` -> its 64-bit position; ``UsageError`` (exit 2) for anything else.
    The form is PostgreSQL's ``pg_lsn`` text: two groups of 1 to 8 hex digits (no sign,
    ``0x`` or ``_``; ``int(x, 16)`` alone would take those)."""
    match = _LSN.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"{text!r} is not an LSN such as 0/16B3748")
    return (int(match[1], 16) << 32) | int(match[2], 16)


def format_lsn(lsn: int) -> str:
    """A 64-bit position as PostgreSQL writes it: ``0/16B3748`` (upper-case hex)."""
    if not 0 <= lsn <= _MAX_LSN:
        raise ValueError(f"LSN out of range: {lsn}")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _per_log(segment_size: int) -> int:
    if segment_size <= 0 or segment_size & (segment_size - 1) or segment_size > 1 << 30:
        raise ValueError(f"not a WAL segment size: {segment_size}")
    return (1 << 32) // segment_size


def segment_number(lsn: int, segment_size: int = SEGMENT_SIZE) -> int:
    """The number of the segment holding ``lsn`` (``lsn // segment_size``)."""
    _per_log(segment_size)
    return lsn // segment_size


def name_of(timeline: int, number: int, segment_size: int = SEGMENT_SIZE) -> str:
    """The file name of segment ``number`` of ``timeline``: 24 upper-case hex digits."""
    per_log = _per_log(segment_size)
    if not 1 <= timeline <= 0xFFFFFFFF or number < 0:
        raise ValueError(f"no segment {number} of timeline {timeline}")
    return f"{timeline:08X}{number // per_log:08X}{number % per_log:08X}"


def segment_name(timeline: int, lsn: int, segment_size: int = SEGMENT_SIZE) -> str:
    """The file name of the segment of ``timeline`` that holds ``lsn``."""
    return name_of(timeline, segment_number(lsn, segment_size), segment_size)


def parse_segment(name: str, segment_size: int = SEGMENT_SIZE) -> tuple[int, int]:
    """``(timeline, segment number)`` of a segment file name (the first 24 characters of
    a ``.partial`` or ``.backup`` name are one too); ``ValueError`` for anything else,
    including a segment part beyond what ``segment_size`` allows in one log."""
    match = _SEGMENT_NAME.fullmatch(name[:24])
    per_log = _per_log(segment_size)
    if match is None:
        raise ValueError(f"{name[:60]!r} is not a WAL segment name")
    timeline, log, segment = (int(part, 16) for part in match.groups())
    if segment >= per_log or timeline == 0:
        raise ValueError(f"{name[:24]} is not a segment of {segment_size}-byte WAL segments")
    return timeline, log * per_log + segment


def segment_start(name: str, segment_size: int = SEGMENT_SIZE) -> int:
    """The LSN at which segment ``name`` begins."""
    return parse_segment(name, segment_size)[1] * segment_size


def next_segment(name: str, segment_size: int = SEGMENT_SIZE) -> str:
    """The name of the segment after ``name`` on the same timeline."""
    timeline, number = parse_segment(name, segment_size)
    return name_of(timeline, number + 1, segment_size)


def segments_between(first: str, last: str, segment_size: int = SEGMENT_SIZE) -> Iterator[str]:
    """The names from ``first`` to ``last`` inclusive (one timeline; nothing when ``last``
    is before ``first``). ``ValueError`` when they are on different timelines."""
    tli, start = parse_segment(first, segment_size)
    other, stop = parse_segment(last, segment_size)
    if tli != other:
        raise ValueError(f"{first} and {last} are on different timelines")
    for number in range(start, stop + 1):
        yield name_of(tli, number, segment_size)


@dataclass(frozen=True)
class Switch:
    """One line of a history file: ``parent`` was left at ``lsn`` for its child."""

    parent: int
    lsn: int
    reason: str = ""


def history_name(timeline: int) -> str:
    """``00000002.history`` for timeline 2."""
    return f"{timeline:08X}.history"


def parse_history(text: str) -> list[Switch]:
    """The switch points of a ``NNNNNNNN.history`` file, oldest first. Blank lines and
    ``#`` comments are skipped, as PostgreSQL does; ``ValueError`` for a line that is not
    ``<tli> <LSN> [reason]`` or timelines/LSNs that do not increase."""
    switches: list[Switch] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split(None, 2)
        if len(fields) < 2 or not fields[0].isdigit():
            raise ValueError(f"history line {number} is not '<timeline> <LSN> <reason>'")
        match = _LSN.fullmatch(fields[1])
        if match is None:
            raise ValueError(f"history line {number}: {fields[1][:40]!r} is not an LSN")
        switch = Switch(
            int(fields[0]),
            (int(match[1], 16) << 32) | int(match[2], 16),
            fields[2] if len(fields) > 2 else "",
        )
        if switches and (switch.parent <= switches[-1].parent or switch.lsn < switches[-1].lsn):
            raise ValueError(f"history line {number}: timelines or LSNs go backwards")
        switches.append(switch)
    return switches


@dataclass(frozen=True)
class Span:
    """A stretch of a timeline's ancestry: WAL of ``timeline`` from LSN ``begin`` up to
    ``end`` (exclusive; ``None``: still the current timeline)."""

    timeline: int
    begin: int
    end: int | None


class UnknownHistory(ValueError):
    """A timeline's ancestry cannot be known: its history file is not archived."""


def timeline_path(timeline: int, histories: Mapping[int, Sequence[Switch]]) -> list[Span]:
    """The ancestry of ``timeline``, oldest first, ending with ``timeline`` itself (open
    ended). ``histories`` maps a timeline to its parsed history file; only
    ``histories[timeline]`` is read (a history file lists every ancestor). Raises
    ``UnknownHistory`` for a timeline above 1 without one."""
    if timeline == 1 and 1 not in histories:
        return [Span(1, 0, None)]
    switches = histories.get(timeline)
    if switches is None or not switches:
        raise UnknownHistory(f"the history file {history_name(timeline)} is not archived")
    spans: list[Span] = []
    begin = 0
    for switch in switches:
        if switch.parent >= timeline:
            raise UnknownHistory(f"{history_name(timeline)} names a later timeline")
        spans.append(Span(switch.parent, begin, switch.lsn))
        begin = switch.lsn
    spans.append(Span(timeline, begin, None))
    return spans


def needed_ranges(
    path: Sequence[Span],
    base_timeline: int,
    start_lsn: int,
    segment_size: int = SEGMENT_SIZE,
) -> list[tuple[int, int, int | None]] | None:
    """What recovery from a base backup that began at ``(base_timeline, start_lsn)`` reads
    to follow ``path`` (a ``timeline_path``): ``(timeline, first, last)`` segment numbers
    per span, ``last`` ``None`` for the open end (the path's own timeline: up to its
    newest segment). ``None`` when the base backup is not on the path (another branch:
    its timeline is not an ancestor, or it began after that timeline was left).

    A span ending at a switch LSN X needs segments up to the one before X's (X's segment
    is read from the child); the rule PostgreSQL's ``XLogFileReadAnyTLI`` follows."""
    ranges: list[tuple[int, int, int | None]] = []
    at = next((i for i, span in enumerate(path) if span.timeline == base_timeline), None)
    if at is None:
        return None
    end = path[at].end
    if end is not None and start_lsn >= end:
        return None
    # a standby's base backup across its upstream's switch records the timeline it ended
    # on (backup_manifest's last WAL-Range) and the LSN it began at on an ancestor:
    # recovery begins on the ancestor that holds that LSN
    while at > 0 and start_lsn < path[at].begin:
        at -= 1
    for span in path[at:]:
        first = segment_number(max(start_lsn, span.begin), segment_size)
        if span.end is None:
            ranges.append((span.timeline, first, None))
        else:
            last = segment_number(span.end, segment_size) - 1
            if last >= first:
                ranges.append((span.timeline, first, last))
    return ranges


def segment_needed(
    segment: str,
    target: int,
    base_timeline: int,
    start_lsn: int,
    histories: Mapping[int, Sequence[Switch]],
    segment_size: int = SEGMENT_SIZE,
) -> bool:
    """Whether ``segment`` is read when recovering from a base backup begun at
    ``(base_timeline, start_lsn)`` to timeline ``target`` (with the archived history
    files ``histories``). ``UnknownHistory`` when ``target``'s ancestry is not known."""
    tli, number = parse_segment(segment, segment_size)
    ranges = needed_ranges(timeline_path(target, histories), base_timeline, start_lsn, segment_size)
    for timeline, first, last in ranges or ():
        if timeline == tli and number >= first and (last is None or number <= last):
            return True
    return False


def first_missing(present: Sequence[int], first: int, last: int) -> int | None:
    """The first number in ``[first, last]`` not in ``present`` (sorted, no duplicates),
    or ``None``: two binary searches, whatever the range's size (``present[lo + k] -
    (first + k)`` never decreases, so the first k where it is not 0 is found by
    bisection)."""
    if last < first:
        return None
    lo = bisect.bisect_left(present, first)
    hi = bisect.bisect_right(present, last)
    if hi - lo == last - first + 1:
        return None
    low, high = 0, hi - lo
    while low < high:
        middle = (low + high) // 2
        if present[lo + middle] == first + middle:
            low = middle + 1
        else:
            high = middle
    return first + low


def missing_count(present: Sequence[int], first: int, last: int) -> int:
    """How many numbers of ``[first, last]`` are not in ``present`` (sorted, unique)."""
    if last < first:
        return 0
    inside = bisect.bisect_right(present, last) - bisect.bisect_left(present, first)
    return (last - first + 1) - inside


def sorted_unique(numbers: Iterable[int]) -> list[int]:
    """``numbers`` sorted without duplicates (the form ``first_missing`` takes)."""
    return sorted(set(numbers))
