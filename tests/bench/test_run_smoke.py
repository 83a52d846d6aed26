"""bench/run.py (``make bench``): issue 19's target rows and limits, the memory fit, and a
quick run end to end that must print every row the issue asks for (the unchanged small
database, objects per GB, S3 requests by method per upload-thread count, peak RSS at
several sizes, the index cache per chunk). No timing is asserted.

The scratch folder is made under /tmp (the server's OS user, when we are root, cannot enter
pytest's tmp_path); the results go to tmp_path, never over bench/results.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from tests.helpers import REPO_ROOT


def bench_module(name: str) -> ModuleType:
    importlib.import_module("bench.run")  # puts bench/ on sys.path for its sibling modules
    return importlib.import_module(name)


def test_the_targets_are_issue_19s_rows_and_limits() -> None:
    targets = bench_module("targets")
    issue = {k: (v[1], v[2]) for k, v in targets.TARGETS.items() if v[3]}
    assert issue == {
        "backup_time": (1.3, "x"),
        "restore_time": (1.15, "x"),
        "repeat_new": (10.0, "%"),
        "days_storage": (4.5, "x"),
        "unchanged_new": (2.0, "%"),
        "rss_backup": (200.0, "MB"),
        "rss_restore": (200.0, "MB"),
    }


def test_the_memory_line_goes_through_two_sizes() -> None:
    memory = bench_module("measure_memory")
    assert memory.fit([(1_000, 50), (3_000, 90)]) == (30.0, 0.02)
    assert memory.fit([(1_000, 50), (1_000, 90)]) is None  # one size: no line


def test_a_quick_run_prints_every_row_of_issue_19(tmp_path: Path) -> None:
    results = tmp_path / "results"
    work = Path(tempfile.mkdtemp(prefix="strongroom-bench-smoke-"))
    os.chmod(work, 0o755)
    quick = ["--scale", "0.01", "--days", "2", "--repeat", "1", "--big-gb", "0.02"]
    try:
        run = subprocess.run(
            [
                sys.executable,
                str(REPO_ROOT / "bench" / "run.py"),
                *quick,
                "--s3-workers",
                "1,2",
                "--results",
                str(results),
                "--work",
                str(work),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert list(work.iterdir()) == []  # scratch removed
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res = json.loads((results / "latest.json").read_text())
    rows = {t["key"]: t for t in res["targets"]}
    issue_rows = [k for k, t in rows.items() if t["issue"]]
    assert len(issue_rows) == 7
    assert all(rows[k]["value"] is not None for k in issue_rows), rows
    unchanged = res["unchanged_small"]
    assert 1.6 * 2**20 < unchanged["raw_bytes"] < 2.0 * 2**20  # the issue's ~1.8 MiB
    assert unchanged["stored_new_bytes"] < unchanged["first_stored_new_bytes"]
    for key in ("first_backup", "days"):
        objects = res["objects"][key]
        assert objects["objects"] == objects["packs"] + objects["index_objects"] >= 2
        assert objects["objects_per_gb"] > 0
    s3 = res["s3"]
    assert [b["upload_workers"] for b in s3["backups"]] == [1, 2]
    for backup in s3["backups"]:
        assert backup["requests"]["PUT"] >= backup["objects"] >= 4  # config, pack, index, manifest
        assert backup["requests_per_gb"]["total"] > 0
    assert s3["restore"]["requests"]["GET"] > 0
    memory = res["memory"]
    assert len(memory["points"]) == 4  # benchmark, days, two text-value sizes
    assert all(p["backup_rss_bytes"] > 0 for p in memory["points"])
    assert "backup_fit" not in memory  # 5 and 20 MB raw: too small to draw a line through
    assert memory["index_cache"]["bytes_per_chunk"] > 44  # a row's 44 bytes plus overhead
    text = (results / "latest.md").read_text()
    for title in (
        "## Second backup of an unchanged small database",
        "## Objects per GB backed up",
        "## S3 (moto on 127.0.0.1",
        "## Memory at size",
        "## Local index cache (SQLite) per chunk",
        "| second backup of an unchanged ~1.8 MiB database: new stored / raw dump | issue 19 |",
        "not extrapolated: the smaller text-value database is under 100 MB raw",
    ):
        assert title in text, title
