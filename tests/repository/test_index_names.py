"""An index object's bytes must hash to its name (found by the fault campaign, kind
damage-index): another index object's bytes copied under a name decode as a valid index,
so a warm cache kept the wrong listing and ``check --read-data`` said "no problems"."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers import cli_fails, cli_ok, make_sqlite_db, repository_env, run_cli


def _index_objects(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "index").rglob("*") if len(p.name) == 64)


def test_an_index_object_holding_anothers_bytes_is_damage(tmp_path: Path) -> None:
    env = repository_env(tmp_path)
    shop = make_sqlite_db(tmp_path / "Shop.db", users=800, orders=2000)
    cli_ok(run_cli("init", env=env))
    cli_ok(run_cli("backup", f"sqlite://{shop}", "--target", "Shop", env=env))
    make_sqlite_db(tmp_path / "Other.db", users=900, orders=2500)
    cli_ok(run_cli("backup", f"sqlite://{tmp_path / 'Other.db'}", "--target", "Other", env=env))
    cli_ok(run_cli("verify", "--all", env=env))  # fills the local index cache
    first, second = _index_objects(tmp_path / "repo")[:2]
    saved = first.read_bytes()
    shutil.copyfile(second, first)

    checked = run_cli("check", "--read-data", env=env)  # with the warm cache
    out = checked.stdout.decode() + cli_fails(checked, 7, first.name)
    assert "does not match its name" in out, out

    first.write_bytes(saved)  # put back: the cache must not keep the wrong listing
    cli_ok(run_cli("verify", "--all", env=env))
    cli_ok(run_cli("check", "--read-data", env=env))
