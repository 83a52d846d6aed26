"""The fault campaign's packed-format kinds (bench/faults/kinds_packs.py): the pack layout
it reads, where a killed prune stopped, and one quick trial of each kind.

The quick run starts the campaign's own PostgreSQL and builds the key-file and repack base
repositories, writing to a temporary folder (never over bench/results).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

from bench.faults.kinds_packs import objects, pack_region, phase
from bench.faults.world import Repo

from tests.helpers import REPO_ROOT

KINDS = ("kill-repack", "damage-pack", "damage-index", "damage-chunk")


def test_pack_regions_follow_the_documented_layout():
    stanza, blobs, header = b"k" * 10, b"b" * 30, b"h" * 44
    data = b"SRPK\x01" + struct.pack(">I", len(stanza)) + stanza + blobs + header
    data += struct.pack(">I", len(header)) + b"SRPK"
    assert pack_region(data, 0) == "preamble"
    assert pack_region(data, 9) == "key stanza"
    assert pack_region(data, 9 + 10) == "blobs"
    assert pack_region(data, 9 + 10 + 29) == "blobs"
    assert pack_region(data, 9 + 10 + 30) == "header"
    assert pack_region(data, len(data) - 8) == "trailer"


def _put(root: Path, folder: str, name: str) -> None:
    path = root / folder / name[:2] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_the_phase_a_killed_prune_left(tmp_path):
    repo = Repo(str(tmp_path))
    old_pack, kept_pack, new_pack = "a" * 64, "b" * 64, "c" * 64
    old_index, new_index = "d" * 64, "e" * 64
    for name in (old_pack, kept_pack):
        _put(tmp_path, "packs", name)
    _put(tmp_path, "index", old_index)
    (tmp_path / "packs" / "cc").mkdir()
    (tmp_path / "packs" / "cc" / f"{new_pack}.tmp-1").write_bytes(b"")  # not a pack yet
    packs, index = objects(repo, "packs"), objects(repo, "index")
    assert packs == {old_pack, kept_pack} and index == {old_index}
    assert phase(repo, packs, index) == "nothing changed yet"
    _put(tmp_path, "packs", new_pack)
    assert phase(repo, packs, index) == "new packs written, old index in force"
    _put(tmp_path, "index", new_index)
    assert phase(repo, packs, index) == "new index written"
    (tmp_path / "index" / old_index[:2] / old_index).unlink()
    assert phase(repo, packs, index) == "old index deleted, old packs there"
    (tmp_path / "packs" / old_pack[:2] / old_pack).unlink()
    assert phase(repo, packs, index) == "old index and an old pack deleted"


def test_a_quick_run_of_the_packed_kinds(tmp_path):
    results = tmp_path / "results"
    args = ["--kinds", ",".join(KINDS), "--trials", "1", "--seed", "11"]
    args += ["--results", str(results), "--work", str(tmp_path / "work")]
    run = subprocess.run(
        [sys.executable, "-m", "bench.faults", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    rows = json.loads((results / "faults.json").read_text())
    assert [row["kind"] for row in rows] == list(KINDS)
    assert all(row["trials"] == 1 for row in rows)
    markdown = (results / "faults.md").read_text()
    assert "harness error" not in markdown, markdown  # the kinds themselves work
    assert "## Where the kills of `kill-repack` landed" in markdown
