"""Run records (``runs/<target>/*.json``) that do not have RunRecord's shape are refused
by ``RunRecord.from_json`` and skipped, with one warning naming the key, by ``runs_of``
(which health, the daemon, the web's history and charts all read through)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from strongroom.repository.runs import BadRunRecord, RunRecord, record_run, runs_of
from strongroom.storage.local import LocalStorage

GOOD: dict[str, Any] = {
    "target": "shop",
    "kind": "backup",
    "ok": True,
    "started_at": "2026-11-30T09:00:00+00:00",
    "finished_at": "2026-11-30T09:00:03+00:00",
}

BAD: dict[str, object] = {
    "a list": [1, 2, 3],
    "a number": 7,
    "null": None,
    "a text": "run",
    "time not a time": {**GOOD, "finished_at": "yesterday-ish"},
    "time a number": {**GOOD, "finished_at": 1764493200},
    "time null": {**GOOD, "started_at": None},
    "time without offset": {**GOOD, "finished_at": "2026-11-30T08:00:02"},
    "scheduled without offset": {**GOOD, "scheduled_for": "2026-11-30T08:00:00"},
    "scheduled a number": {**GOOD, "scheduled_for": 5},
    "ok a text": {**GOOD, "ok": "yes"},
    "ok a number": {**GOOD, "ok": 1},
    "target a number": {**GOOD, "target": 3},
    "kind a list": {**GOOD, "kind": ["backup"]},
    "tags a text": {**GOOD, "tags": "daily"},
    "tags of numbers": {**GOOD, "tags": [1, 2]},
    "size a text": {**GOOD, "raw_size": "12"},
    "size a float": {**GOOD, "raw_size": 1.5},
    "size a bool": {**GOOD, "stored_new_bytes": True},
    "size negative": {**GOOD, "raw_size": -1},
    "duration a text": {**GOOD, "duration_seconds": "3"},
    "duration negative": {**GOOD, "duration_seconds": -0.5},
    "backup id a number": {**GOOD, "backup_id": 12},
    "error kind an object": {**GOOD, "error_kind": {"x": 1}},
    "missing finished_at": {k: v for k, v in GOOD.items() if k != "finished_at"},
    "missing ok": {k: v for k, v in GOOD.items() if k != "ok"},
    "unknown field": {**GOOD, "surprise": 1},
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_record_without_the_shape_is_refused(case: str) -> None:
    with pytest.raises(BadRunRecord):
        RunRecord.from_json(json.dumps(BAD[case]).encode())


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe\x00garbage", b""])
def test_a_record_that_is_not_json_is_refused(raw: bytes) -> None:
    with pytest.raises(BadRunRecord):
        RunRecord.from_json(raw)


def test_a_full_record_reads_back_and_z_or_offsets_are_times() -> None:
    record = RunRecord(
        "shop",
        "backup",
        False,
        "2026-11-30T09:00:00.123Z",
        "2026-11-30T10:00:03+01:00",
        ("daily", "x"),
        scheduled_for="2026-11-30T10:00:00+01:00",
        backup_id="20261130T090000Z-abcdef01",
        raw_size=10,
        stored_new_bytes=0,
        duration_seconds=3,
        error_kind="StorageError",
    )
    assert RunRecord.from_json(record.to_json()) == record
    minimal = RunRecord.from_json(json.dumps(GOOD).encode())
    assert minimal.tags == () and minimal.raw_size is None


def test_runs_of_skips_bad_records_with_one_warning_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = LocalStorage(tmp_path / "repo")
    record_run(storage, RunRecord.from_json(json.dumps(GOOD).encode()))
    earlier = {**GOOD, "finished_at": "2026-11-30T09:30:00+01:00"}  # 08:30 UTC: the oldest
    storage.put("runs/shop/earlier.json", json.dumps(earlier).encode())
    for n, case in enumerate(sorted(BAD)):
        storage.put(f"runs/shop/bad-{n:02d}.json", json.dumps(BAD[case]).encode())
    storage.put("runs/other/naive.json", json.dumps(BAD["time without offset"]).encode())
    with caplog.at_level(logging.WARNING, logger="strongroom.runs"):
        found = runs_of(storage)
    assert [r.finished_at for r in found] == [earlier["finished_at"], GOOD["finished_at"]]
    warned = [r.getMessage() for r in caplog.records if r.name == "strongroom.runs"]
    assert len(warned) == len(BAD) + 1
    assert {m.split("record ", 1)[1].split(":", 1)[0] for m in warned} == {
        *(f"runs/shop/bad-{n:02d}.json" for n in range(len(BAD))),
        "runs/other/naive.json",
    }
    assert [r.finished_at for r in runs_of(storage, "shop")] == [
        earlier["finished_at"],
        GOOD["finished_at"],
    ]
    assert runs_of(storage, "other") == []
