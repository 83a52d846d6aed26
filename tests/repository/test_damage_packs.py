"""Damage to packs and index objects (issue 19): ``check`` exits 7 with one ``error:``
line naming the damaged object; ``restore`` either still works (the index holds what
the damaged part of a pack held) or fails cleanly naming what it cannot read; after
``index rebuild`` a repository whose index objects are all lost restores again."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import cli_fails, cli_ok, make_sqlite_db, repository_env, run_cli, sqlite_counts

ID = "[0-9a-f]{64}"


@dataclass
class Case:
    root: Path
    backup_id: str
    counts: dict[str, int]

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def env(self) -> dict[str, str]:
        return repository_env(self.root)

    def packs(self) -> list[Path]:
        return sorted(p for p in (self.repo / "packs").rglob("*") if len(p.name) == 64)

    def index_objects(self) -> list[Path]:
        return sorted(p for p in (self.repo / "index").rglob("*") if len(p.name) == 64)

    def forget_cache(self) -> None:
        """As on another machine: no local index cache."""
        shutil.rmtree(self.root / "cache", ignore_errors=True)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Case:
    root = tmp_path_factory.mktemp("pack-damage")
    env = repository_env(root)
    shop = make_sqlite_db(root / "Shop.db", users=3000, orders=9000)
    cli_ok(run_cli("init", env=env))
    out = cli_ok(run_cli("backup", f"sqlite://{shop}", "--target", "Shop", env=env))
    backup_id = out.split("backup ", 1)[1].split()[0]
    return Case(root, backup_id, sqlite_counts(shop))


@pytest.fixture()
def case(template: Case, tmp_path: Path) -> Case:
    shutil.copytree(template.root, tmp_path / "copy")
    return Case(tmp_path / "copy", template.backup_id, template.counts)


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5000])


# damage, check arguments, pattern of check's error line, restore outcome: a pattern of
# its error line (exit 7), or None when the restore still works
KINDS: dict[str, tuple[Callable[[Case], None], tuple[str, ...], str, str | None]] = {
    "pack deleted": (
        lambda c: c.packs()[0].unlink(),
        ("check",),
        f"chunk {ID} is missing: its pack {ID} is gone",
        f"chunk {ID} is missing from the repository",  # chunks.py: the pack is not named
    ),
    "pack truncated": (
        lambda c: _truncate(c.packs()[0]),
        ("check", "--read-data"),
        f"pack {ID} is damaged: no SRPK magic",
        f"chunk {ID} is damaged: its pack {ID} is shorter than the index says",
    ),
    "byte flipped in a blob": (
        lambda c: _flip(c.packs()[0], 4000),
        ("check", "--read-data"),
        f"chunk {ID} is damaged: its blob in the pack does not decrypt",
        f"chunk {ID} is damaged",
    ),
    "byte flipped in the header": (
        lambda c: _flip(c.packs()[0], -20),
        ("check", "--read-data"),
        f"pack {ID} is damaged: its header does not decrypt",
        None,  # the index holds the header's entries
    ),
    "byte flipped in the key stanza": (
        lambda c: _flip(c.packs()[0], 100),
        ("check", "--read-data"),
        f"pack {ID} is damaged: its key stanza does not open",
        None,  # the index holds the pack key
    ),
    "index object deleted": (
        lambda c: [p.unlink() for p in c.index_objects()] and None,
        ("check",),
        f"chunk {ID} is missing \\(no index object lists it",
        f"chunk {ID} is missing from the repository",
    ),
    "index object damaged": (
        lambda c: _flip(c.index_objects()[0], 200),
        ("check",),
        f"index/[0-9a-f]{{2}}/{ID} is damaged: its content does not match its name",
        f"chunk {ID} is missing from the repository",
    ),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_check_names_the_damaged_object_and_restore_fails_cleanly(case: Case, kind: str) -> None:
    damage, command, pattern, restore_pattern = KINDS[kind]
    assert len(case.packs()) == 1, "the damage is done to the backup's only pack"
    damage(case)
    case.forget_cache()  # a fresh host: what the storage holds, nothing remembered
    cli_fails(run_cli(*command, env=case.env), 7, f"error: check found .*first: {pattern}")
    target = case.root / "restored.db"
    restored = run_cli("restore", case.backup_id, "--to", str(target), "--yes", env=case.env)
    if restore_pattern is None:
        cli_ok(restored)
        assert sqlite_counts(target) == case.counts
    else:
        cli_fails(restored, 7, restore_pattern)
        assert not target.exists()


def test_index_rebuild_after_every_index_object_and_the_cache_are_lost(case: Case) -> None:
    for path in case.index_objects():
        path.unlink()
    junk = case.repo / "packs" / "ee" / ("ee" * 32)
    junk.parent.mkdir(exist_ok=True)
    junk.write_bytes(b"not a pack")
    case.forget_cache()
    err = cli_fails(run_cli("check", env=case.env), 7, "no index object lists it")
    assert "2 packs no index lists may hold what is missing: `strongroom index rebuild`" in err
    out = run_cli("index", "rebuild", env=case.env)
    text = cli_ok(out)
    assert "index rebuilt from 2 packs" not in text and "index rebuilt from 1 pack (" in text
    assert f"left out: pack {'ee' * 32} is damaged" in out.stderr.decode()
    assert len(case.index_objects()) == 1
    junk.unlink()
    case.forget_cache()
    assert "no problems found" in cli_ok(run_cli("check", "--read-data", env=case.env))
    target = case.root / "restored.db"
    cli_ok(run_cli("restore", case.backup_id, "--to", str(target), "--yes", env=case.env))
    assert sqlite_counts(target) == case.counts
    again = cli_ok(run_cli("index", "rebuild", env=case.env))  # idempotent: replaces the one
    assert "1 index object written, 1 old replaced" in again
    assert len(case.index_objects()) == 1
