"""prune and a pack that is missing but holds chunks of retained backups (found by the
fault campaign's reproducer): prune dropped its listing from the index, so when the pack
came back (a storage that listed it late, a copy restored by hand) its backups stayed
unreadable until `index rebuild`. The listing is the only record of the pack's key."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers import cli_ok, make_sqlite_db, repository_env, run_cli


def test_prune_keeps_the_listing_of_a_missing_pack_with_live_chunks(tmp_path: Path) -> None:
    env = repository_env(tmp_path)
    shop = make_sqlite_db(tmp_path / "Shop.db", users=800, orders=2000)
    cli_ok(run_cli("init", env=env))
    cli_ok(run_cli("backup", f"sqlite://{shop}", "--target", "Shop", env=env))
    packs = sorted(p for p in (tmp_path / "repo" / "packs").rglob("*") if len(p.name) == 64)
    assert packs
    away = tmp_path / "away"
    shutil.move(packs[0], away)

    pruned = run_cli("prune", "--wait", "5", env=env)
    assert pruned.returncode == 0, pruned.stderr.decode()
    assert "missing and hold chunks of retained backups" in pruned.stderr.decode()
    assert "Traceback" not in pruned.stderr.decode()

    shutil.move(away, packs[0])
    fresh = {**env, "STRONGROOM_CACHE_DIR": str(tmp_path / "fresh-cache")}
    cli_ok(run_cli("verify", "--all", env=fresh))
    cli_ok(run_cli("check", "--read-data", env=fresh))
