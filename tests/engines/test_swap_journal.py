"""The engine-neutral swap journal (``engines/swap_journal.py``): its JSON text, the file
store (durable: file and folder fsynced, replaced atomically) and the test kill hook."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys

import pytest

from strongroom.engines import swap_journal
from strongroom.engines.swap_journal import JournalEntry, JournalUnreadable, SwapStep
from tests.helpers import REPO_ROOT


def _entry(step: SwapStep = SwapStep.CLOSE) -> JournalEntry:
    return JournalEntry(
        engine="postgresql",
        target="shop",
        staged="shop_sr_0123abcd",
        old="shop_old_20261121T140000",
        keep_old=True,
        step=step,
        details={"target_oid": 16384, "staged_oid": 16502, "final_comment": "Ünïcode ✓"},
    )


def test_text_round_trips_and_names_its_format_first():
    entry = _entry(SwapStep.RENAME_IN)
    text = swap_journal.encode(entry)
    assert text.startswith('{"format": "strongroom-swap-journal", "version": 1')
    assert "\n" not in text and swap_journal.is_journal(text)
    assert swap_journal.decode(text) == entry
    later = entry.at(SwapStep.FINISH)
    assert later.step is SwapStep.FINISH and later.swap_id == entry.swap_id
    assert later.details == entry.details


@pytest.mark.parametrize(
    "change",
    [
        {"format": "something-else"},
        {"version": 2},
        {"step": "teleport"},
        {"pid": "12"},
        {"keep_old": 1},
        {"details": []},
        {"target": None},
    ],
)
def test_anything_else_is_unreadable(change):
    document = json.loads(swap_journal.encode(_entry()))
    document.update(change)
    with pytest.raises(JournalUnreadable):
        swap_journal.decode(json.dumps(document))


def test_not_json_is_unreadable():
    with pytest.raises(JournalUnreadable):
        swap_journal.decode('{"format": "strongroom-swap-journal", "version')
    assert not swap_journal.is_journal(None) and not swap_journal.is_journal("a comment")
    assert not swap_journal.is_journal("a comment on strongroom-swap-journal")


def test_the_file_store_is_durable_and_atomic(tmp_path, monkeypatch):
    path = tmp_path / ".shop.db.swap"
    synced: list[tuple[bool, str]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        synced.append((stat.S_ISDIR(mode), os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    assert swap_journal.read_file(path) is None
    swap_journal.write_file(path, _entry(SwapStep.CLOSE))
    # the file's data, then the folder holding the new name
    assert synced == [(False, str(path) + ".tmp"), (True, str(tmp_path))]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    swap_journal.write_file(path, _entry(SwapStep.RENAME_IN))
    assert swap_journal.read_file(path).step is SwapStep.RENAME_IN
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no .tmp left
    synced.clear()
    swap_journal.clear_file(path)
    assert swap_journal.read_file(path) is None and synced == [(True, str(tmp_path))]
    swap_journal.clear_file(path)  # idempotent


def test_a_damaged_file_is_unreadable_not_absent(tmp_path):
    path = tmp_path / "journal"
    path.write_text('{"format": "strongroom-swap-journal", "version": 1, "engi')
    with pytest.raises(JournalUnreadable):
        swap_journal.read_file(path)


def _hook_run(env_value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != swap_journal.TEST_KILL_ENV}
    if env_value is not None:
        env[swap_journal.TEST_KILL_ENV] = env_value
    code = (
        "from strongroom.engines.swap_journal import SwapStep, kill_point\n"
        "kill_point(SwapStep.CLOSE)\nprint('after close', flush=True)\n"
        "kill_point(SwapStep.RENAME_IN)\nprint('after rename_in', flush=True)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_kill_hook_stops_the_process_exactly_at_the_named_step():
    untouched = _hook_run(None)
    assert untouched.returncode == 0
    assert untouched.stdout.split("\n")[:2] == ["after close", "after rename_in"]
    killed = _hook_run("rename_in")
    assert killed.returncode == -signal.SIGKILL
    assert killed.stdout == "after close\n"
