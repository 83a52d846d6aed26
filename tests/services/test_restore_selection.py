"""Issue 14, points 1-3 on a real PostgreSQL: which backup ``latest``/``--before`` mean,
which target a destination (and its safety backups) belongs to, and what rollback undoes.

Two databases with their own targets: ``nc_shop_…`` (target ``shop``) and ``blog_…``
(target ``blog``), backed up into one repository.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from strongroom.engines.postgresql import PostgresEngine
from strongroom.errors import UsageError
from strongroom.repository.keys import KeySource
from strongroom.repository.manifest import TableRecord
from strongroom.repository.repository import Repository
from strongroom.repository.restores import (
    OUTCOME_COMPLETED,
    OUTCOME_FAILED,
    RestoreRecord,
    restore_history,
    write_restore_record,
)
from strongroom.services.backup import run_backup
from strongroom.services.restore import (
    PRE_RESTORE_TAG,
    find_rollback_backup,
    plan_restore,
    run_restore,
)
from strongroom.services.restore_choice import (
    destination_fingerprint,
    destination_target,
    find_rollback,
    latest_of,
    newest_good_before,
    source_target,
)
from strongroom.storage.memory import MemoryStorage
from tests.fixtures.postgres import PgServer

FUTURE = "2999-01-01T00:00:00Z"


@dataclass
class Shop:
    server: PgServer
    repo: Repository
    shop: str  # database names
    blog: str

    def engine(self, name: str) -> PostgresEngine:
        return PostgresEngine(self.server.url(name))

    def rows(self, name: str, count: int) -> None:
        """The database holds exactly ``count`` rows in ``items``."""
        self.server.psql(
            name,
            "CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, v text); TRUNCATE items;"
            f"INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, {count}) g;",
        )

    def count(self, name: str) -> int:
        return int(self.server.query(name, "SELECT count(*) FROM items")[0][0])

    def restore(self, manifest, name: str, *, wrong: bool = False, undoes: str | None = None):
        engine = self.engine(name)
        plan = plan_restore(
            self.repo,
            manifest,
            engine,
            target=destination_target(self.repo, engine),
            undoes=undoes,
        )
        if wrong:  # the restored copy will not verify: the attempt fails before the swap
            plan = replace(
                plan, backup_tables=[TableRecord(t.name, t.rows + 1) for t in plan.backup_tables]
            )
        return run_restore(self.repo, manifest, engine, plan=plan, keep_old=False)


@pytest.fixture()
def world(pg_server: PgServer, tmp_path: Path) -> Iterator[Shop]:
    suffix = uuid.uuid4().hex[:8]
    shop, blog = f"nc_shop_{suffix}", f"blog_{suffix}"
    pg_server.create_database(shop)
    pg_server.create_database(blog)
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    repo = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    try:
        yield Shop(pg_server, repo, shop, blog)
    finally:
        pg_server.drop_database(shop)
        pg_server.drop_database(blog)


def test_latest_and_before_stay_in_the_destinations_target_and_skip_safety_backups(
    world: Shop,
) -> None:
    world.rows(world.shop, 10)
    world.rows(world.blog, 5)
    shop = run_backup(world.repo, world.engine(world.shop), target="shop").manifest
    blog = run_backup(world.repo, world.engine(world.blog), target="blog").manifest
    # A safety backup of shop (as a restore into it takes: tests/cli/
    # test_cli_restore_targets.py) is now the newest backup of the repository.
    safety = run_backup(
        world.repo, world.engine(world.shop), target="shop", tags=(PRE_RESTORE_TAG,)
    ).manifest
    assert world.repo.list_backups()[-1] == safety

    # Point 1: latest/--before into blog resolve within blog, never to shop's safety backup.
    blog_engine = world.engine(world.blog)
    assert source_target(world.repo, blog_engine) == "blog"
    assert latest_of(world.repo, "blog") == blog
    assert newest_good_before(world.repo, FUTURE, "blog") == blog
    assert latest_of(world.repo, "shop") == shop
    assert newest_good_before(world.repo, FUTURE, "shop") == shop
    assert newest_good_before(world.repo, FUTURE, "shop", include_safety=True) == safety

    # The plan says whose backup goes where, and warns when they differ.
    same = plan_restore(world.repo, blog, blog_engine)
    assert (same.destination_target, same.warning) == ("blog", None)
    other = plan_restore(world.repo, shop, blog_engine)
    assert other.destination_target == "blog"
    assert other.warning is not None
    assert "target 'shop'" in other.warning and f"database {world.blog!r}" in other.warning

    # Two targets with backups of the same database: ambiguous unless said or configured.
    run_backup(world.repo, world.engine(world.shop), target="shop-copy")
    shop_engine = world.engine(world.shop)
    with pytest.raises(UsageError, match=r"targets shop, shop-copy .*give --target") as caught:
        source_target(world.repo, shop_engine)
    assert "\n" not in str(caught.value)
    assert source_target(world.repo, shop_engine, given="shop-copy") == "shop-copy"
    assert destination_target(world.repo, shop_engine, given="shop").name == "shop"
    configured = {"shop": world.server.url(world.shop), "blog": world.server.url(world.blog)}
    found = destination_target(world.repo, shop_engine, configured=configured)
    assert found.name == "shop" and "configured" in found.basis
    # A database no target has backups of: latest needs --target; a restore files its
    # safety backup under its own name.
    stranger = world.engine("postgres")
    with pytest.raises(UsageError, match=r"give --target .*targets: blog, shop, shop-copy"):
        source_target(world.repo, stranger)
    assert destination_target(world.repo, stranger).name == "postgres"


def test_rollback_undoes_the_last_completed_restore_not_the_failed_attempts(
    world: Shop,
) -> None:
    world.rows(world.shop, 10)
    v1 = run_backup(world.repo, world.engine(world.shop), target="shop").manifest
    world.rows(world.shop, 20)  # the state a restore of v1 replaces
    done = world.restore(v1, world.shop)
    assert done.swapped and world.count(world.shop) == 10
    world.rows(world.shop, 30)  # the application writes on
    failed = world.restore(v1, world.shop, wrong=True)  # a failed attempt: new safety backup
    assert not failed.ok and not failed.swapped and failed.safety_backup_id
    assert world.count(world.shop) == 30
    engine = world.engine(world.shop)
    fingerprint = destination_fingerprint(world.repo, engine)
    history = restore_history(world.repo.storage, "shop", fingerprint)
    assert [r.outcome for r in history] == [OUTCOME_COMPLETED, OUTCOME_FAILED]
    assert history[0].safety_backup_id == done.safety_backup_id
    # A killed attempt leaves its record "started": the plan mentions it.
    killed = replace(
        history[-1], restore_id=f"{history[-1].restore_id[:17]}deadbeef", outcome="started"
    )
    write_restore_record(world.repo.storage, replace(killed, finished_at=None))

    choice = find_rollback(world.repo, "shop", fingerprint)
    assert choice.manifest.backup_id == done.safety_backup_id  # not the newest (= now)
    assert find_rollback_backup(world.repo, engine).backup_id == done.safety_backup_id
    assert choice.undoes is not None and choice.undoes.restore_id == history[0].restore_id
    text = choice.describe()
    assert text.startswith(f"undoes the restore of backup {v1.backup_id} at ")
    assert f"safety backup {done.safety_backup_id}" in text
    assert any("interrupted" in note for note in choice.notes)
    assert any("1 later restore(s) failed" in note for note in choice.notes)
    # Another database of the same target has its own history: nothing to undo there.
    with pytest.raises(UsageError, match="no restore of target 'shop' to roll back"):
        find_rollback(
            world.repo, "shop", destination_fingerprint(world.repo, world.engine(world.blog))
        )

    back = world.restore(choice.manifest, world.shop, undoes=choice.undoes.restore_id)
    assert back.ok and back.swapped
    assert world.count(world.shop) == 20  # the state before the restore of v1
    # The rollback is a completed restore: a second rollback would undo it.
    again = find_rollback(world.repo, "shop", fingerprint)
    assert again.manifest.backup_id == back.safety_backup_id
    assert again.undoes is not None and again.undoes.kind == "rollback"
    assert again.describe().startswith("undoes the rollback of backup")


def test_rollback_refuses_when_the_last_restore_took_no_safety_backup(world: Shop) -> None:
    world.rows(world.shop, 3)
    v1 = run_backup(world.repo, world.engine(world.shop), target="shop").manifest
    engine = world.engine(world.shop)
    record = RestoreRecord(
        "20261121T140000Z-0000000a",
        "shop",
        destination_fingerprint(world.repo, engine),
        v1.backup_id,
        "shop",
        None,
        "2026-11-21T14:00:00.000Z",
    ).ended(OUTCOME_COMPLETED)
    write_restore_record(world.repo.storage, record)
    with pytest.raises(UsageError, match="took no safety backup") as caught:
        find_rollback(world.repo, "shop", record.destination)
    assert "\n" not in str(caught.value)
