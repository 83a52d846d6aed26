"""The fault campaign (bench/faults, ``make faults``): its verdicts and a quick run.

The quick run starts the campaign's own PostgreSQL and runs two kinds twice each with
``--quick``, writing to a temporary folder (never over bench/results).
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench.faults.procs import CliResult
from bench.faults.trial import output_problem

from tests.helpers import REPO_ROOT

ROW_KEYS = {"kind", "trials", "clean", "lost", "hung", "unclear"}


def _result(code: int | None, stderr: str = "", stdout: str = "") -> CliResult:
    return CliResult(["list"], code, stdout, stderr, 0.5)


def test_verdicts_of_one_command():
    assert output_problem(_result(0), []) is None
    one_line = "WARNING x: settled a swap\nerror: chunk 1f2e... of backup X is damaged\n"
    assert output_problem(_result(7, one_line), []) is None
    s3_said = "error: get config failed: InternalError: We encountered an internal error\n"
    assert output_problem(_result(6, s3_said), []) is None
    unclear = {
        "two error lines": _result(3, "error: one thing went wrong\nerror: and another\n"),
        "no error line": _result(3, "something happened\n"),
        "exit 70": _result(70, "error: unexpected failure (a bug): KeyError\n"),
        "traceback": _result(0, "Traceback (most recent call last):\n  ...\nKeyError: 1\n"),
        "secret": _result(5, "error: could not connect as app:hunter2-secret@db\n"),
        "killed by a signal": _result(-11, ""),
    }
    for what, result in unclear.items():
        found = output_problem(result, ["hunter2-secret"])
        assert found is not None and found.verdict == "unclear", what
    hung = output_problem(_result(None), [])
    assert hung is not None and hung.verdict == "hung"


def test_a_quick_campaign_writes_its_rows(tmp_path):
    results = tmp_path / "results"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.faults",
            "--quick",
            "--kinds",
            "damage-config,kill-backup",
            "--seed",
            "7",
            "--results",
            str(results),
            "--work",
            str(tmp_path / "work"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "seed 7" in run.stdout
    rows = json.loads((results / "faults.json").read_text())
    assert [row["kind"] for row in rows] == ["damage-config", "kill-backup"]
    for row in rows:
        assert set(row) == ROW_KEYS
        assert row["trials"] > 0
        assert row["clean"] + row["lost"] + row["hung"] + row["unclear"] == row["trials"]
    markdown = (results / "faults.md").read_text()
    assert "| kind | trials | clean | lost | hung | unclear |" in markdown
    assert "seed **7**" in markdown
    assert not (tmp_path / "work").exists()  # scratch space removed
