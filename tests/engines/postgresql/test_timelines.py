"""WAL name, LSN and timeline arithmetic (engines/postgresql/timelines.py): no server."""

from __future__ import annotations

import pytest

from strongroom.engines.postgresql import timelines as t
from strongroom.errors import UsageError

MB16 = 16 * 1024 * 1024


def test_lsn_round_trip() -> None:
    assert t.parse_lsn("0/16B3748") == 0x16B3748
    assert t.parse_lsn(" 1/0 ") == 1 << 32
    assert t.parse_lsn("FFFFFFFF/FFFFFFFF") == (1 << 64) - 1
    for value in (0, 0x16B3748, (5 << 32) | 0xABC, (1 << 64) - 1):
        assert t.parse_lsn(t.format_lsn(value)) == value
    assert t.format_lsn(0x3000028) == "0/3000028"
    for bad in ("", "0x1/2", "-1/2", "1/", "123456789/0", "1_0/0", "g/0"):
        with pytest.raises(UsageError):
            t.parse_lsn(bad)
    with pytest.raises(ValueError):
        t.format_lsn(-1)


def test_segment_names_match_postgresql() -> None:
    # pg_walfile_name('0/3000028') on timeline 1 is 000000010000000000000003
    assert t.segment_name(1, 0x3000028) == "000000010000000000000003"
    assert t.segment_name(2, (1 << 32) + 5 * MB16) == "000000020000000100000005"
    # the last segment of a log, then the next log
    last = t.segment_name(1, (1 << 32) - 1)
    assert last == "0000000100000000000000FF"
    assert t.next_segment(last) == "000000010000000100000000"
    # 1 GiB segments: 4 per log
    assert t.segment_name(1, 5 << 30, 1 << 30) == "000000010000000100000001"
    assert t.parse_segment("000000010000000100000001", 1 << 30) == (1, 5)
    with pytest.raises(ValueError):
        t.parse_segment("000000010000000100000004", 1 << 30)  # beyond 4 per log
    assert t.parse_segment("00000003000000000000000A.partial") == (3, 10)
    assert t.parse_segment("00000001000000000000000A.00000028.backup") == (1, 10)
    for bad in ("00000000000000000000000A", "zzz", "0000000100000000000000"):
        with pytest.raises(ValueError):
            t.parse_segment(bad)
    assert t.segment_start("000000010000000100000002") == (1 << 32) + 2 * MB16
    with pytest.raises(ValueError):
        t.segment_name(1, 0, 3 * 1024 * 1024)  # not a power of two


def test_segments_between() -> None:
    names = list(t.segments_between("0000000100000000000000FE", "000000010000000100000001"))
    assert names == [
        "0000000100000000000000FE",
        "0000000100000000000000FF",
        "000000010000000100000000",
        "000000010000000100000001",
    ]
    assert list(t.segments_between("000000010000000000000005", "000000010000000000000004")) == []
    with pytest.raises(ValueError):
        list(t.segments_between("000000010000000000000001", "000000020000000000000002"))


HISTORY_3 = """1\t0/5000A28\tno recovery target specified

# a comment
2\t0/9000000\tat restore point "before"
"""


def test_parse_history_and_path() -> None:
    switches = t.parse_history(HISTORY_3)
    assert switches == [
        t.Switch(1, 0x5000A28, "no recovery target specified"),
        t.Switch(2, 0x9000000, 'at restore point "before"'),
    ]
    path = t.timeline_path(3, {3: switches})
    assert path == [
        t.Span(1, 0, 0x5000A28),
        t.Span(2, 0x5000A28, 0x9000000),
        t.Span(3, 0x9000000, None),
    ]
    assert t.timeline_path(1, {}) == [t.Span(1, 0, None)]
    with pytest.raises(t.UnknownHistory):
        t.timeline_path(2, {3: switches})
    for bad in ("x\t0/1\tr", "1\tnope\tr", "2\t0/5\tr\n1\t0/9\tr", "1\t0/9\tr\n2\t0/5\tr"):
        with pytest.raises(ValueError):
            t.parse_history(bad)
    assert t.history_name(10) == "0000000A.history"


def test_needed_ranges_follow_switches() -> None:
    histories = {3: t.parse_history(HISTORY_3), 2: t.parse_history("1\t0/5000A28\tx")}
    path3 = t.timeline_path(3, histories)
    # a base backup on timeline 1 at 0/2000028: tli 1 segments 2..4 (5 holds the switch,
    # read from tli 2), tli 2 segments 5..8 (9 starts at the switch exactly: tli 3), tli 3 on
    assert t.needed_ranges(path3, 1, 0x2000028) == [(1, 2, 4), (2, 5, 8), (3, 9, None)]
    # a base backup on timeline 2
    assert t.needed_ranges(path3, 2, 0x6000000) == [(2, 6, 8), (3, 9, None)]
    # on timeline 1 but after timeline 2 branched off: another branch
    assert t.needed_ranges(path3, 1, 0x6000000) is None
    # a timeline not on the path
    assert t.needed_ranges(path3, 4, 0) is None
    assert t.segment_needed("000000010000000000000004", 3, 1, 0x2000028, histories)
    assert not t.segment_needed("000000010000000000000005", 3, 1, 0x2000028, histories)
    assert not t.segment_needed("000000010000000000000001", 3, 1, 0x2000028, histories)
    assert t.segment_needed("000000030000000000000063", 3, 1, 0x2000028, histories)
    assert not t.segment_needed("000000020000000000000009", 3, 1, 0x2000028, histories)
    assert t.segment_needed("000000020000000000000005", 2, 1, 0x2000028, histories)
    with pytest.raises(t.UnknownHistory):
        t.segment_needed("000000040000000000000005", 4, 1, 0, histories)


def test_first_missing_and_count() -> None:
    present = [2, 3, 4, 6, 7, 10]
    assert t.first_missing(present, 2, 4) is None
    assert t.first_missing(present, 2, 7) == 5
    assert t.first_missing(present, 6, 12) == 8
    assert t.first_missing(present, 0, 3) == 0
    assert t.first_missing(present, 11, 10) is None
    assert t.first_missing([], 1, 1) == 1
    assert t.missing_count(present, 2, 10) == 3
    assert t.missing_count(present, 0, 1) == 2
    # a huge range is answered without walking it
    assert t.first_missing(list(range(5000)), 0, 1 << 40) == 5000
    assert t.missing_count(list(range(5000)), 0, (1 << 40) - 1) == (1 << 40) - 5000
    assert t.sorted_unique([3, 1, 3]) == [1, 3]


def test_first_missing_agrees_with_walking_the_range() -> None:
    import random

    rng = random.Random(18)
    for _ in range(500):
        present = sorted(rng.sample(range(60), rng.randint(0, 60)))
        first, last = sorted((rng.randint(-2, 62), rng.randint(-2, 62)))
        walked = next((n for n in range(first, last + 1) if n not in present), None)
        assert t.first_missing(present, first, last) == walked
        assert t.missing_count(present, first, last) == sum(
            1 for n in range(first, last + 1) if n not in present
        )
