"""The PITR benchmark (bench/pitr_bench.py, ``make bench-pitr``) in its smallest configuration:
it runs end to end on its own PostgreSQL and writes result files with every section, counted
segments that agree with pg_stat_archiver, and a verdict per target. No timing is asserted.

The scratch folder is made under /tmp (the server's OS user, when we are root, cannot enter
pytest's tmp_path); the results go to tmp_path, never over bench/results.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.helpers import REPO_ROOT

SEGMENT = 16 * 1024 * 1024


def test_a_quick_pitr_benchmark_writes_its_results(tmp_path: Path) -> None:
    results = tmp_path / "results"
    work = Path(tempfile.mkdtemp(prefix="strongroom-pitr-smoke-"))
    os.chmod(work, 0o755)
    try:
        run = subprocess.run(
            [
                sys.executable,
                str(REPO_ROOT / "bench" / "pitr_bench.py"),
                "--quick",
                "--results",
                str(results),
                "--work",
                str(work),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert list(work.iterdir()) == []  # servers' and restores' files removed
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res = json.loads((results / "pitr.json").read_text())
    assert {
        "config",
        "environment",
        "dataset",
        "wal_push",
        "base_backups",
        "rto",
        "targets",
        "timeline_seconds",
    } <= set(res)
    assert res["config"]["quick"] is True

    load = res["wal_push"]["load"]
    assert load["segments"] > 0
    assert 0 < load["p50_ms"] <= load["p95_ms"] <= load["max_ms"]
    assert load["segments_per_second"] > 0
    # every file the wrapper timed is one pg_stat_archiver counted, and nothing failed unseen
    assert load["segments_archived"] == load["archived_count_delta"] > 0
    assert load["files_archived"] == load["archived_count_delta"]
    assert load["failed_count_delta"] == load["failed_calls"] >= 0
    assert load["wal_generated_bytes"] >= res["config"]["load_segments"] * SEGMENT
    assert res["wal_push"]["archiver_end"]["ready_files"] == 0

    backups = res["base_backups"]
    for key in ("pg_basebackup", "pg_basebackup_after_churn"):
        assert backups[key]["seconds"] > 0 and backups[key]["bytes"] > 0
    for key in ("first", "second"):
        assert backups[key]["seconds"] > 0 and backups[key]["stored_bytes"] > 0
        assert 0 < backups[key]["new_plain_bytes"] <= backups[key]["raw_bytes"]
    # 16 KiB chunks (issue 19) dedup inside the first base backup too (zero pages, the
    # template databases' equal files): it stores more than the second one
    assert backups["first"]["new_plain_bytes"] > backups["second"]["new_plain_bytes"]
    assert backups["churn"]["inserted"] > 0 and backups["churn"]["updated"] > 0

    rto = res["rto"]
    for key in ("tar_x_seconds", "tar_start_seconds", "laydown_seconds", "pitr_seconds"):
        assert rto[key] > 0, key
    assert rto["tar_start_seconds"] >= rto["tar_x_seconds"]
    assert rto["wal_replayed_bytes"] >= rto["wal_churn_bytes"] > 0
    assert rto["wal_segments_replayed"] >= 1
    assert rto["base_backup_used"] is True
    assert rto["markers_exact"] is True and rto["markers_expected"] > 0

    targets = {t["key"]: t for t in res["targets"]}
    assert set(targets) == {"wal_push_p95", "segments_per_second"}
    for target in targets.values():
        assert target["value"] > 0 and target["pass"] in (True, False)

    markdown = (results / "pitr.md").read_text()
    assert "## Targets (reported, not asserted)" in markdown
    assert "| target | value | limit |  |" in markdown
    assert "PASS" in markdown or "MISS" in markdown
    assert "pg_basebackup -Ft -X fetch -D - > file" in markdown
