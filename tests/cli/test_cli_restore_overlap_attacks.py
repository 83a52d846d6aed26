"""Attacks on the overlapped parallel PostgreSQL restore (``restore_overlap``) through the
real command line: ``STRONGROOM_RESTORE_JOBS`` 2 and 4 into a new database and in place
over a live session, exact; ``kill -9`` at several fractions of a measured run (the
original database untouched or wholly restored, no ``pg_restore`` left, no staged copy
after the next run); a damaged chunk in the middle of the large table's data (exit 7,
the original untouched, no staged copy, no ``pg_restore`` left)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.storage.local import LocalStorage
from tests.cli.test_signals import Cli, alive, descendants, until
from tests.fixtures.pg_app import diff_fingerprints, fingerprint
from tests.fixtures.postgres import PgServer, unique_db_name
from tests.helpers import cli_fails, cli_ok, flip_chunk_byte, repository_env, run_cli

SHAPE = """
CREATE ROLE {owner} LOGIN PASSWORD '{owner}';
CREATE TABLE "Huge" ("Id" bigint PRIMARY KEY, "Payload" text);
INSERT INTO "Huge" SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 150000) g;
CREATE TABLE "Weird ""Name"" 1; 2 TABLE DATA" ("Ü" text);
INSERT INTO "Weird ""Name"" 1; 2 TABLE DATA" VALUES (E'a\\tb'), ('c');
DO $$ BEGIN FOR i IN 1..150 LOOP
  EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', 'S' || (i / 50));
  EXECUTE format('CREATE TABLE %I.%I (id int PRIMARY KEY, v text)', 'S' || (i / 50), 'T' || i);
  EXECUTE format('INSERT INTO %I.%I SELECT g, %L FROM generate_series(1, 5) g',
                 'S' || (i / 50), 'T' || i, 'v' || i);
END LOOP; END $$;
CREATE TABLE "Mine" ("Id" int PRIMARY KEY);
INSERT INTO "Mine" SELECT generate_series(1, 1000);
ALTER TABLE "Mine" OWNER TO {owner};
REVOKE ALL ON "Mine" FROM {owner};
CREATE MATERIALIZED VIEW "Count" AS SELECT count(*) FROM "Huge";
SELECT lo_from_bytea(0, '\\x0000000001'::bytea);
CREATE SEQUENCE "Counter"; SELECT setval('"Counter"', 777);
"""


@dataclass
class Shop:
    server: PgServer
    name: str
    env: dict[str, str]
    repo: Path
    backup: dict[str, Any]
    restored: dict[str, Any]  # the fingerprint the backup restores to
    live: dict[str, Any] = field(default_factory=dict)  # the database now (differs)
    seconds: float = 0.0  # one whole in-place restore with 2 jobs

    def url(self, name: str | None = None) -> str:
        return self.server.url(name or self.name)

    def differences(self, expected: dict[str, Any], name: str | None = None) -> list[str]:
        return diff_fingerprints(expected, fingerprint(self.server, name or self.name))

    def staged(self) -> list[str]:
        rows = self.server.query(
            "postgres",
            "SELECT datname FROM pg_database WHERE datname LIKE %s",
            (f"{self.name}_sr_%",),
        )
        return [r[0] for r in rows]

    def change(self) -> None:
        """The live database differs from the backup."""
        self.server.psql(self.name, 'DELETE FROM "Huge" WHERE "Id" > 140000')
        self.live = fingerprint(self.server, self.name)


@pytest.fixture(scope="module")
def shop(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    tmp = tmp_path_factory.mktemp("shop")
    env = {**repository_env(tmp), "TMPDIR": str(tmp)}
    name = unique_db_name("ovshop")
    owner = f"ovowner_{name[-8:]}"
    pg_server.create_database(name)
    try:
        pg_server.psql(name, SHAPE.format(owner=owner))
        cli_ok(run_cli("init", env=env))
        cli_ok(run_cli("backup", pg_server.url(name), "--target", "shop", env=env))
        (backup,) = json.loads(cli_ok(run_cli("list", "--json", env=env)))
        shop = Shop(pg_server, name, env, tmp / "repo", backup, fingerprint(pg_server, name))
        shop.change()
        yield shop
    finally:
        with pg_server.connect() as conn:
            for (left,) in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "%",)
            ).fetchall():
                conn.execute(f'DROP DATABASE IF EXISTS "{left}" WITH (FORCE)')
            conn.execute(f"DROP ROLE IF EXISTS {owner}")


def _restore(shop: Shop, jobs: int, *args: str) -> Any:
    env = {**shop.env, "STRONGROOM_RESTORE_JOBS": str(jobs)}
    return run_cli("restore", "latest", "--yes", "--no-safety-backup", *args, env=env, timeout=300)


def test_jobs_2_into_a_new_database_and_4_in_place_over_a_live_session(shop: Shop) -> None:
    new = shop.name + "_new"
    out = cli_ok(_restore(shop, 2, "--to", shop.url(new)))
    assert "restore complete and verified" in out and "MISMATCH" not in out
    assert not shop.differences(shop.restored, new)
    held = psycopg.connect(shop.url(), autocommit=True)
    try:
        held.execute('SELECT count(*) FROM "Huge"')
        started = time.monotonic()
        out = cli_ok(_restore(shop, 4, "--to", shop.url(), "--drop-old"))
        shop.seconds = time.monotonic() - started
        assert "restore complete and verified" in out
    finally:
        held.close()
    differences = shop.differences(shop.restored)
    assert not differences, "\n".join(differences[:40])
    assert shop.staged() == []
    shop.change()


def _pg_restores(dbname: str) -> dict[int, str]:
    """pid -> command line of every ``pg_restore`` on the machine restoring into a database
    whose name starts with ``dbname``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() != "pg_restore":
                    continue
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if f"dbname={dbname}" in command or f"/{dbname}" in command:
                found[int(entry.name)] = command
    return found


@pytest.mark.parametrize(
    ("sent", "fraction"),
    [(signal.SIGKILL, f) for f in (0.15, 0.35, 0.55, 0.75, 0.9)]
    + [(signal.SIGTERM, f) for f in (0.1, 0.3, 0.5, 0.7, 0.85)],
)
def test_a_signal_at_a_fraction_of_the_restore(
    shop: Shop, sent: signal.Signals, fraction: float
) -> None:
    """The database is the original or wholly restored; the run's ``pg_restore`` die with
    it; SIGTERM: exit 143 and one ``error:`` line (or 0 when it had ended), no staged copy;
    kill -9: the next restore leaves no staged copy of its own."""
    if not shop.seconds:  # not measured by the test before (run alone)
        started = time.monotonic()
        cli_ok(_restore(shop, 2, "--to", shop.url(), "--drop-old"))
        shop.seconds = time.monotonic() - started
        shop.change()
    env = {**shop.env, "STRONGROOM_RESTORE_JOBS": "2"}
    cli = Cli(
        "restore", "latest", "--to", shop.url(), "--yes", "--no-safety-backup", "--drop-old",
        env=env,
    )  # fmt: skip
    deadline = time.monotonic() + fraction * shop.seconds
    children: set[int] = set()
    while time.monotonic() < deadline and cli.process.poll() is None:
        children |= descendants(cli.process.pid)
        time.sleep(0.01)
    cli.process.send_signal(sent)
    returncode, err = cli.finish()
    if sent == signal.SIGTERM:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        outcomes = [(143, 1), (0, 0)]
        if not children and not err:  # sent while Python started, before any handler
            outcomes.append((-signal.SIGTERM, 0))
        assert (returncode, len(errors)) in outcomes, err
        assert "Traceback" not in err
        assert shop.staged() == []  # a signal never leaves one
    until(lambda: not any(alive(p) for p in children), "the children to die with strongroom")
    until(lambda: not _pg_restores(shop.name), "no pg_restore of the killed run")
    now = fingerprint(shop.server, shop.name)
    untouched = not diff_fingerprints(shop.live, now)
    restored = not diff_fingerprints(shop.restored, now)
    assert untouched or restored, diff_fingerprints(shop.live, now)[:20]
    # kill -9 before the swap leaves its staged copy (docs/design.md, "What a kill -9
    # still leaves"); the next run leaves none of its own
    left = shop.staged()
    assert len(left) <= 1
    out = cli_ok(_restore(shop, 2, "--to", shop.url(), "--drop-old"))  # the next start
    assert "restore complete and verified" in out
    assert not shop.differences(shop.restored)
    assert shop.staged() == left
    for name in left:
        shop.server.psql("postgres", f'DROP DATABASE "{name}" WITH (FORCE)')
    shop.change()


def test_a_damaged_chunk_in_the_large_table_fails_with_7_and_leaves_the_original(
    shop: Shop,
) -> None:
    repo = Repository.open(
        LocalStorage(shop.repo), KeySource(Path(shop.env["STRONGROOM_KEY_FILE"]))
    )
    manifest = json.loads((shop.repo / "backups" / f"{shop.backup['id']}.json").read_bytes())
    chunks = [c[0] for c in manifest["chunks"]]
    victim = chunks[len(chunks) // 2]  # in "Huge"'s data (most of the dump)
    flip_chunk_byte(repo, victim)
    try:
        for jobs in (2, 4):
            result = _restore(shop, jobs, "--to", shop.url())
            cli_fails(result, 7, "damaged")
            assert not shop.differences(shop.live)
            assert shop.staged() == []
            left = _pg_restores(shop.name)
            assert not left, left
    finally:
        flip_chunk_byte(repo, victim)
