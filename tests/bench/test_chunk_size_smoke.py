"""bench/chunk_size.py: its figures on two small dumps, and a quick run of the script.

The quick run starts its own PostgreSQL (scale 0.02) and writes to a temporary folder
(never over bench/results)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.chunk_size import measure, params_for

from tests.helpers import REPO_ROOT


def test_params_follow_fastcdc_bounds():
    params = params_for(24)
    assert (params.min_size, params.avg_size, params.max_size) == (6144, 24576, 98304)


def test_new_share_counts_the_second_dumps_unknown_chunks_once(tmp_path):
    body = random.Random(1).randbytes(1_000_000)
    added = random.Random(2).randbytes(100_000)
    first, second = tmp_path / "1", tmp_path / "2"
    first.write_bytes(body)
    second.write_bytes(body + added + added)  # the same new bytes twice: stored once
    result = measure(first, second, 16)
    assert 100_000 <= result.new_bytes <= 100_000 + 2 * params_for(16).max_size
    assert result.new_percent == round(100 * result.new_bytes / 1_200_000, 2)
    assert result.chunks_per_gb == round(result.chunks / 0.0012)
    assert result.cpu_seconds_per_gb > 0


def test_a_quick_run_writes_both_results_files(tmp_path):
    quick = ["--scale", "0.02", "--sizes", "16,64"]
    # scratch the server's unprivileged user can enter: not pytest's 0700 tmp_path, and not
    # bench/work inside a clone made by mktemp -d (0700 too: CI failed there)
    work = Path(tempfile.mkdtemp(prefix="strongroom-chunk-smoke-"))
    os.chmod(work, 0o755)
    try:
        run = subprocess.run(
            [
                sys.executable,
                "bench/chunk_size.py",
                *quick,
                "--results",
                str(tmp_path),
                "--work",
                str(work),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads((tmp_path / "chunk-size.json").read_text())
    assert [s["avg_kib"] for s in data["sizes"]] == [16, 64]
    assert data["dataset"]["churn"]["inserted"] > 0
    small, large = data["sizes"]
    assert small["chunks"] > 2 * large["chunks"]
    assert 0 < small["new_percent"] <= large["new_percent"] < 100
    assert "| 16 KiB | 4 / 64 KiB |" in (tmp_path / "chunk-size.md").read_text()
