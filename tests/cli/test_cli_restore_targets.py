"""Issue 14, points 1 and 2 through the command line, on a real PostgreSQL: ``restore
latest --to …/blog`` restores blog's newest regular backup even when a safety backup of
another database is the newest backup; an unclear destination is refused with one line
listing the targets; another target's backup is warned about; the rollback plan says
which restore it undoes. (Backups and the first restore run in-process, to stay fast.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.cli.output import stdout
from strongroom.cli.restore_cmd import print_plan
from strongroom.engines.postgresql import PostgresEngine
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.restore import PRE_RESTORE_TAG, plan_restore, run_restore
from strongroom.storage.factory import open_storage
from tests.fixtures.postgres import PgServer
from tests.helpers import cli_fails, cli_ok, run_cli

TABLE = (
    "CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, v text); TRUNCATE items;"
    "INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, {n}) g;"
)


@pytest.fixture()
def place(pg_server: PgServer, tmp_path: Path) -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    names = {"shop": f"nc_shop_{suffix}", "blog": f"blog_{suffix}"}
    for name in names.values():
        pg_server.create_database(name)
    Repository.init(open_storage(str(tmp_path / "repo")), key_file=tmp_path / "repo.key")
    try:
        yield names
    finally:
        for name in names.values():
            pg_server.drop_database(name)


def _count(server: PgServer, name: str) -> int:
    return int(server.query(name, "SELECT count(*) FROM items")[0][0])


def test_latest_resolves_within_the_destinations_target(
    pg_server: PgServer, place: dict[str, str], tmp_path: Path
) -> None:
    env = {
        "STRONGROOM_REPO": str(tmp_path / "repo"),
        "STRONGROOM_KEY_FILE": str(tmp_path / "repo.key"),
    }
    repo = Repository.open(
        open_storage(str(tmp_path / "repo")), KeySource(key_file=tmp_path / "repo.key")
    )
    shop_url, blog_url = pg_server.url(place["shop"]), pg_server.url(place["blog"])
    pg_server.psql(place["shop"], TABLE.format(n=10))
    pg_server.psql(place["blog"], TABLE.format(n=5))
    shop = run_backup(repo, PostgresEngine(shop_url), target="shop").manifest
    blog = run_backup(repo, PostgresEngine(blog_url), target="blog").manifest
    pg_server.psql(place["shop"], TABLE.format(n=11))
    restored = run_restore(repo, shop, PostgresEngine(shop_url), keep_old=False)
    assert restored.swapped  # shop's safety backup is now the newest backup of all
    pg_server.psql(place["blog"], TABLE.format(n=7))

    out = cli_ok(run_cli("restore", "latest", "--to", blog_url, "--yes", "--drop-old", env=env))
    assert f"backup         {blog.backup_id} (target blog," in out
    assert "chosen         the newest backup of target blog" in out
    assert "WARNING" not in out
    assert _count(pg_server, place["blog"]) == 5  # blog's own rows, not shop's 10
    newest = Repository.open(repo.storage, KeySource(key_file=tmp_path / "repo.key"))
    safety = newest.list_backups()[-1]
    assert (safety.target, safety.tags) == ("blog", (PRE_RESTORE_TAG,))

    # The database "postgres" is no target's: say whose backups, one line, exit 2.
    cli_fails(
        run_cli("restore", "latest", "--to", pg_server.url("postgres"), "--dry-run", env=env),
        2,
        r"give --target .*\(targets: blog, shop\)",
    )
    # Another target's backup into blog: the plan warns loudly (printed in-process).
    with stdout.capture() as shown:
        print_plan(plan_restore(newest, shop, PostgresEngine(blog_url)), drop_old=False)
    assert "WARNING" in shown.get() and "is of target 'shop'" in shown.get()
    assert "target         blog" in shown.get()

    # Point 2: the rollback plan says which restore it undoes and what it returns to.
    out = cli_ok(run_cli("rollback", "--to", shop_url, "--dry-run", env=env))
    assert "rollback plan" in out
    assert f"undoes the restore of backup {shop.backup_id} at " in out
    assert f"(safety backup {restored.safety_backup_id})" in out
    assert _count(pg_server, place["shop"]) == 10  # dry runs changed nothing
