"""prune with packs on the users' shape of data (issue 19): a real PostgreSQL with quoted
CamelCase names, several targets in one repository; a prune killed once its new index is
durable, then a full prune; every kept backup restores with its rows."""

import json
import re

from tests.engines.postgresql.dump_shape import users_shape_database
from tests.fixtures.postgres import unique_db_name
from tests.helpers import cli_ok, repository_env, run_cli

COUNTS = 'SELECT (SELECT count(*) FROM "Customers"), (SELECT count(*) FROM "OrderLines")'


def test_prune_repacks_and_every_target_restores(pg_server, pg_db, tmp_path):
    env = repository_env(tmp_path)
    shop = pg_db.rsplit("/", 1)[1]
    replica = unique_db_name("replica")
    made = [replica]
    pg_server.create_database(replica)
    try:
        users_shape_database(pg_server, shop)
        users_shape_database(pg_server, replica, customers=1000)
        cli_ok(run_cli("init", env=env))
        expected: dict[str, tuple[int, int]] = {}

        def backup(dbname, target):
            out = cli_ok(run_cli("backup", pg_server.url(dbname), "--target", target, env=env))
            backup_id = re.search(r"backup (\S+) complete", out).group(1)
            expected[backup_id] = pg_server.query(dbname, COUNTS)[0]

        backup(shop, "Shop")
        backup(replica, "ShopReplica")
        pg_server.psql(shop, 'DELETE FROM "OrderLines" WHERE "Id" > 1000; VACUUM FULL;')
        backup(shop, "Shop")
        cli_ok(run_cli("forget", "--target", "Shop", "--keep-last", "1", env=env))
        kept = {b["id"] for b in json.loads(cli_ok(run_cli("list", "--json", env=env)))}
        assert len(kept) == 2

        dry = json.loads(cli_ok(run_cli("prune", "--dry-run", "--json", env=env)))
        assert dry["packs_deleted"] >= 1 and dry["pack_bytes_freed"] > 0, dry
        killed = run_cli("prune", env={**env, "STRONGROOM_TEST_KILL_AT": "prune-index-written"})
        assert killed.returncode == -9, killed.stderr.decode()
        cli_ok(run_cli("verify", "--all", env=env))
        report = json.loads(cli_ok(run_cli("prune", "--json", env=env)))
        assert report["index_objects_deleted"] >= 1 and report["pack_bytes_freed"] > 0
        print(
            f"users' shape: dry run {dry['packs_deleted']} packs deleted "
            f"({dry['packs_repacked']} repacked), {dry['pack_bytes_freed']} bytes; after the "
            f"kill the second prune freed {report['pack_bytes_freed']} bytes"
        )
        assert "no problems found" in cli_ok(run_cli("check", "--read-data", env=env))
        for backup_id in sorted(kept):
            name = unique_db_name("restored")
            made.append(name)
            cli_ok(run_cli("restore", backup_id, "--to", pg_server.url(name), "--yes", env=env))
            assert pg_server.query(name, COUNTS)[0] == expected[backup_id]
    finally:
        for name in made:
            pg_server.drop_database(name)
