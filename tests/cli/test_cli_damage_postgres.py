"""Chunks swapped in a manifest of a PostgreSQL backup: restore exits 7 naming the backup,
not 5 for pg_restore's failure, whether the manifest records its chunk order or (an older
manifest) only the whole-stream checksum (issue 15, item 7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli_fails, cli_ok, repository_env, run_cli


def _swap(manifest: Path, *, old: bool) -> None:
    document = json.loads(manifest.read_bytes())
    chunks = document["chunks"]
    assert len({c[0] for c in chunks}) >= 3
    chunks[1], chunks[2] = chunks[2], chunks[1]
    if old:
        document.pop("chunk_order")
    manifest.write_bytes(json.dumps(document).encode())


@pytest.mark.parametrize("old", [False, True], ids=["chunk-order", "older-manifest"])
def test_swapped_chunks_make_restore_an_integrity_error(
    pg_server, pg_db, pg_new_db, tmp_path: Path, old: bool
) -> None:
    env = repository_env(tmp_path)
    name = pg_db.rsplit("/", 1)[1]
    pg_server.psql(
        name,
        "CREATE TABLE t (id int PRIMARY KEY, v text);"
        "INSERT INTO t SELECT g, md5(g::text) || repeat(md5((g * 7)::text), 8)"
        " FROM generate_series(1, 40000) g;",
    )
    cli_ok(run_cli("init", env=env))
    cli_ok(run_cli("backup", pg_db, "--target", "shop", env=env))
    (backup,) = json.loads(cli_ok(run_cli("list", "--json", env=env)))
    _swap(tmp_path / "repo" / "backups" / f"{backup['id']}.json", old=old)
    result = run_cli(
        "restore", backup["id"], "--to", pg_new_db, "--yes", "--no-safety-backup", env=env
    )
    says = "whole-stream checksum" if old else "list of chunks is not the one recorded"
    cli_fails(result, 7, f"backup {backup['id']} is damaged: .*{says}")
    check = run_cli("check", "--read-data", env=env)
    if old:  # nothing recorded to check the order against: verify reads the stream
        cli_ok(check)
        cli_fails(run_cli("verify", backup["id"], env=env), 7, "whole-stream checksum")
    else:
        cli_fails(check, 7, "list of chunks")
