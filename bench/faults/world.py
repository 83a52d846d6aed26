"""What every trial shares: the servers, the application database, the base repositories.

* A throwaway PostgreSQL cluster (``strongroom_servers.postgres``) with a non-superuser
  application role that owns two template databases: state **A** (what the base
  repositories' first backup holds) and state **B** (A plus a day of changes: the live
  database trials restore into). Each trial gets fresh copies (``CREATE DATABASE ...
  TEMPLATE``). The schema is app-shaped: quoted CamelCase tables (``"UserAccount"``,
  ``"Order"``), an enum, a foreign key, a view, all owned by the app role.
* moto's S3 server on a free loopback port, with one bucket; each S3 trial puts its own
  fault proxy in front of it (``strongroom_servers.s3proxy.FaultProxy``).
* Base repositories, built once with the real command line and copied by each trial: a
  local one opened by a key file, a local one opened by a passphrase, and an S3 one; each
  holds backup A (of state A) and B (of state B), target ``shop``.

:func:`fingerprint` is the independent oracle: row count and md5 of the sorted row texts of
every table, the enum's labels and the database's owner, computed without strongroom.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psycopg
from psycopg import sql

from strongroom_servers.postgres import PgServer, start_server

from . import procs

APP_ROLE = "fault_app"
PASSPHRASE = "correct horse battery staple"
BUCKET = "strongroom-faults"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: The base repositories a kind may need: "key" (local, key file), "pass" (local,
#: passphrase), "s3" (moto, key file), "other" (the key of another repository).
#: "repack" (local, key file): a repository where prune will repack (see _fill_repack).
NEEDS = frozenset({"key", "pass", "s3", "other", "repack"})
STORAGE_ENV = {  # fail fast on a storage that does not answer; retry quickly
    "STRONGROOM_STORAGE_DEADLINE": "5",
    "STRONGROOM_STORAGE_BASE_DELAY": "0.05",
}

SCHEMA_A = """
CREATE TYPE "Mood" AS ENUM ('happy', 'sad', 'meh');
CREATE TABLE "UserAccount" (
    id serial PRIMARY KEY,
    "emailAddress" text NOT NULL UNIQUE,
    mood "Mood" NOT NULL DEFAULT 'meh',
    "createdAt" timestamptz NOT NULL DEFAULT '2026-01-01T00:00:00Z',
    profile jsonb
);
CREATE TABLE "Order" (
    id bigserial PRIMARY KEY,
    "userId" int NOT NULL REFERENCES "UserAccount"(id) ON DELETE CASCADE,
    total numeric(12, 2) NOT NULL,
    note text
);
CREATE INDEX "Order_userId_idx" ON "Order" ("userId");
CREATE VIEW "HappyUser" AS SELECT id, "emailAddress" FROM "UserAccount" WHERE mood = 'happy';
INSERT INTO "UserAccount" ("emailAddress", mood, profile)
SELECT 'user' || g || '@example.com', (ARRAY['happy', 'sad', 'meh'])[1 + g % 3]::"Mood",
       jsonb_build_object('name', md5(g::text), 'bio', repeat(md5((g * 7)::text), 1 + g % 4))
FROM generate_series(1, 3000) AS g;
INSERT INTO "Order" ("userId", total, note)
SELECT 1 + (g * 7919) % 3000, round((g % 997) * 1.37, 2), md5(g::text) || ' ' || md5((-g)::text)
FROM generate_series(1, 14000) AS g;
"""
#: State C: A plus an archive table about six times A's size stored (dumped before A's
#: tables). A backup of C then one of A share A's chunks, so once C's backup is forgotten
#: the pack it wrote is about a seventh live: prune repacks it.
ARCHIVE = """
CREATE TABLE "Archive" (id int PRIMARY KEY, body text NOT NULL);
INSERT INTO "Archive"
SELECT g, md5(g::text) || md5((g * 31)::text) || md5((g * 7)::text) || md5((g * 13)::text)
FROM generate_series(1, 60000) AS g;
"""
DAY_OF_CHANGES = """
INSERT INTO "UserAccount" ("emailAddress", mood)
SELECT 'late' || g || '@example.com', 'sad' FROM generate_series(1, 300) AS g;
UPDATE "Order" SET total = total + 1, note = 'edited' WHERE id % 50 = 0;
DELETE FROM "Order" WHERE id % 97 = 0;
"""


@dataclass
class Repo:
    """A repository and how to open it (``endpoint``: the S3 endpoint commands use;
    ``oracle_endpoint``: moto itself, for the checks after the fault is gone)."""

    location: str
    key_file: Path | None = None
    passphrase: str | None = None
    endpoint: str | None = None
    oracle_endpoint: str | None = None
    ids: dict[str, str] = field(default_factory=dict)  # "A", "B" -> backup id

    def env(self, *, oracle: bool = False) -> dict[str, str]:
        env = {"STRONGROOM_REPO": self.location}
        if self.key_file is not None:
            env["STRONGROOM_KEY_FILE"] = str(self.key_file)
        if self.passphrase is not None:
            env["STRONGROOM_PASSPHRASE"] = self.passphrase
        endpoint = self.oracle_endpoint if oracle and self.oracle_endpoint else self.endpoint
        if endpoint is not None:
            env["AWS_ENDPOINT_URL"] = endpoint
        return env

    @property
    def path(self) -> Path:
        """The folder of a local repository."""
        if self.location.startswith("s3://"):
            raise ValueError("an S3 repository has no folder")
        return Path(self.location)


def base_env(home: Path) -> dict[str, str]:
    """The environment of every command: ours without strongroom's, AWS's or a database
    URL, with a private home, fake AWS credentials and a short storage deadline."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("STRONGROOM_", "AWS_")) and key != "DATABASE_URL"
    }
    env.update(FAKE_AWS)
    env.update(STORAGE_ENV)
    env.update(HOME=str(home), NO_COLOR="1", COLUMNS="200", LC_ALL="C.UTF-8")
    return env


_LOCAL = threading.local()


class SetupFailed(RuntimeError):
    """The campaign could not build its world (a command failed outside any fault)."""


@dataclass
class World:
    pg: PgServer
    moto_url: str
    work: Path
    app_password: str
    states: dict[str, str] = field(default_factory=dict)  # "A"/"B" -> fingerprint
    key_repo: Repo | None = None
    pass_repo: Repo | None = None
    repack_repo: Repo | None = None
    repack_plan: dict[str, Any] = field(default_factory=dict)  # its prune --dry-run --json
    s3_repo: Repo | None = None
    other_key: Path | None = None  # a valid key of another repository
    _moto: Any = None
    _counter: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def secrets(self) -> list[str]:
        """Strings that must never appear in a command's output."""
        return [self.app_password, self.pg.password, PASSPHRASE]

    def next_id(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def url(self, dbname: str) -> str:
        return f"postgresql://{APP_ROLE}:{self.app_password}@{self.pg.host}:{self.pg.port}/{dbname}"

    def s3_client(self) -> Any:
        """A boto3 client for moto (one per thread: creating one costs ~50 ms)."""
        client = getattr(_LOCAL, "s3", None)
        if client is None or getattr(_LOCAL, "endpoint", None) != self.moto_url:
            client = _LOCAL.s3 = self._new_client()
            _LOCAL.endpoint = self.moto_url
        return client

    def _new_client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.moto_url,
            region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
            aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
        )

    # --- databases ---------------------------------------------------------------------
    def create_db(self, name: str, state: str) -> None:
        """A fresh copy of state ``state`` ("A" or "B"), owned by the app role."""
        template = f"fault_tpl_{state.lower()}"
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(template), sql.Identifier(APP_ROLE)
        )
        for attempt in range(5):  # two copies of one template at once may collide
            try:
                with self.pg.connect() as conn:
                    conn.execute(statement)
                return
            except psycopg.errors.ObjectInUse:
                if attempt == 4:
                    raise
                threading.Event().wait(0.3 * (attempt + 1))

    def drop_dbs(self, prefix: str) -> None:
        """Drop every database whose name starts with ``prefix`` (staged and old copies)."""
        rows = self.pg.query("postgres", "SELECT datname FROM pg_database")
        for (name,) in rows:
            if name.startswith(prefix):
                with suppress(psycopg.Error):
                    self.pg.drop_database(name)

    def stop(self) -> None:
        with suppress(Exception):
            self.pg.stop()
        if self._moto is not None:
            with suppress(Exception):
                self._moto.stop()
                wsgi = getattr(self._moto, "_server", None)
                if wsgi is not None:
                    wsgi.server_close()


def fingerprint(pg: PgServer, dbname: str) -> str:
    """Rows of every table (count and md5 of the sorted row texts), the enum's labels and
    the database owner, as one JSON text (same for equal content under any name)."""
    with pg.connect(dbname) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1"
            ).fetchall()
        ]
        out: dict[str, Any] = {}
        for table in tables:
            query = sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' "
                "ORDER BY t::text COLLATE \"C\"), '')) FROM public.{} AS t"
            ).format(sql.Identifier(table))
            row = conn.execute(query).fetchone()
            out[table] = list(row) if row else None
        labels = conn.execute(
            "SELECT array_agg(enumlabel::text ORDER BY enumsortorder) FROM pg_enum"
            " WHERE enumtypid = '\"Mood\"'::regtype"
        ).fetchone()
        out["enum Mood"] = labels[0] if labels else None
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database"
            " WHERE datname = current_database()"
        ).fetchone()
        out["owner"] = owner[0] if owner else None
    return json.dumps(out, sort_keys=True)


def app_can_query(world: World, dbname: str) -> str | None:
    """None when the app role connects and runs its queries; else what failed."""
    try:
        with psycopg.connect(world.url(dbname), autocommit=True, connect_timeout=10) as conn:
            conn.execute('SELECT count(*) FROM "HappyUser"').fetchone()
            conn.execute(
                'SELECT u.mood, sum(o.total) FROM "UserAccount" u JOIN "Order" o'
                ' ON o."userId" = u.id GROUP BY u.mood'
            ).fetchall()
            conn.execute("BEGIN")
            conn.execute(
                "INSERT INTO \"UserAccount\" (\"emailAddress\", mood) VALUES ('probe@x', 'happy')"
            )
            conn.execute("ROLLBACK")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


# --- building the world -----------------------------------------------------------------
def _setup_cli(world: World, args: list[str], repo: Repo | None, home: Path) -> str:
    env = base_env(home)
    if repo is not None:
        env.update(repo.env(oracle=True))
    result = procs.run(args, env, timeout=120)
    if result.returncode != 0:
        raise SetupFailed(f"{result.command}: {result.first_stderr_line()}")
    return result.stdout


def _fill(world: World, repo: Repo, home: Path, init_args: list[str]) -> None:
    _setup_cli(world, ["init", *init_args], repo, home)
    for state in ("A", "B"):
        url = world.url(f"fault_tpl_{state.lower()}")
        _setup_cli(world, ["backup", url, "--target", "shop"], repo, home)
    ids = [b["id"] for b in json.loads(_setup_cli(world, ["list", "--json"], repo, home))]
    if len(ids) != 2:
        raise SetupFailed(f"expected 2 backups in {repo.location}, found {ids}")
    repo.ids = {"A": ids[0], "B": ids[1]}  # oldest first


def _fill_repack(world: World, repo: Repo, home: Path) -> None:
    """Backups of C (shop), B (other) and A (shop), then C forgotten: C's pack is mostly
    garbage, A's chunks live in it, B's pack and A's own small pack are whole."""
    _setup_cli(world, ["init"], repo, home)
    for state, target in (("C", "shop"), ("B", "other"), ("A", "shop")):
        url = world.url(f"fault_tpl_{state.lower()}")
        _setup_cli(world, ["backup", url, "--target", target], repo, home)
    ids = [b["id"] for b in json.loads(_setup_cli(world, ["list", "--json"], repo, home))]
    _setup_cli(world, ["forget", "--keep-last", "1", "--target", "shop"], repo, home)
    kept = [b["id"] for b in json.loads(_setup_cli(world, ["list", "--json"], repo, home))]
    if len(ids) != 3 or kept != ids[1:]:
        raise SetupFailed(f"repack repository: backups {ids}, kept {kept}")
    repo.ids = {"B": ids[1], "A": ids[2]}
    plan = json.loads(_setup_cli(world, ["prune", "--dry-run", "--json"], repo, home))
    if not plan.get("packs_repacked"):
        raise SetupFailed(f"repack repository: prune would repack nothing: {plan}")
    world.repack_plan = plan


def _templates(world: World, *, archive: bool = False) -> None:
    pg = world.pg
    with pg.connect() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} NOSUPERUSER CREATEDB NOCREATEROLE").format(
                sql.Identifier(APP_ROLE), sql.Literal(world.app_password)
            )
        )
        conn.execute(
            sql.SQL("CREATE DATABASE fault_tpl_a OWNER {}").format(sql.Identifier(APP_ROLE))
        )
    with psycopg.connect(world.url("fault_tpl_a"), autocommit=True) as conn:
        conn.execute(SCHEMA_A)  # as the app role: it owns every object
    with pg.connect() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE fault_tpl_b TEMPLATE fault_tpl_a OWNER {}").format(
                sql.Identifier(APP_ROLE)
            )
        )
    with psycopg.connect(world.url("fault_tpl_b"), autocommit=True) as conn:
        conn.execute(DAY_OF_CHANGES)
    if archive:
        with pg.connect() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE fault_tpl_c TEMPLATE fault_tpl_a OWNER {}").format(
                    sql.Identifier(APP_ROLE)
                )
            )
        with psycopg.connect(world.url("fault_tpl_c"), autocommit=True) as conn:
            conn.execute(ARCHIVE)
    for state in ("A", "B"):
        world.states[state] = fingerprint(pg, f"fault_tpl_{state.lower()}")


def start_world(work: Path, needs: frozenset[str] = NEEDS) -> World:
    """Start the servers and build the templates and the base repositories ``needs``
    names (of :data:`NEEDS`; about 15 s for all of them)."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name in ("werkzeug", "strongroom_servers.s3proxy"):  # moto's request log, the proxy's
        logging.getLogger(name).setLevel(logging.ERROR)
    pg = start_server()
    world = World(pg=pg, moto_url="", work=work, app_password=f"app-{secrets.token_hex(8)}")
    try:
        if "s3" in needs:
            from moto.server import ThreadedMotoServer

            moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            moto.start()
            world._moto = moto
            host, port = moto.get_host_and_port()
            world.moto_url = f"http://{host}:{port}"
            world.s3_client().create_bucket(Bucket=BUCKET)
        _templates(world, archive="repack" in needs)
        home = work / "setup-home"
        home.mkdir()
        jobs: list[Callable[[], object]] = []
        if "key" in needs:
            (work / "base-key").mkdir()
            key_repo = Repo(str(work / "base-key" / "repo"), key_file=work / "base-key" / "key")
            world.key_repo = key_repo
            jobs.append(lambda: _fill(world, key_repo, home, []))
        if "pass" in needs:
            pass_repo = Repo(str(work / "base-pass" / "repo"), passphrase=PASSPHRASE)
            world.pass_repo = pass_repo
            jobs.append(lambda: _fill(world, pass_repo, home, ["--passphrase"]))
        if "s3" in needs:
            s3_repo = Repo(
                f"s3://{BUCKET}/base",
                key_file=work / "base-s3.key",
                endpoint=world.moto_url,
                oracle_endpoint=world.moto_url,
            )
            world.s3_repo = s3_repo
            jobs.append(lambda: _fill(world, s3_repo, home, []))
        if "repack" in needs:
            (work / "base-repack").mkdir()
            repack_repo = Repo(
                str(work / "base-repack" / "repo"), key_file=work / "base-repack" / "key"
            )
            world.repack_repo = repack_repo
            jobs.append(lambda: _fill_repack(world, repack_repo, home))
        if "other" in needs:
            world.other_key = work / "other.key"
            other = Repo(str(work / "other-repo"), key_file=world.other_key)
            jobs.append(lambda: _setup_cli(world, ["init"], other, home))
        with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
            for future in [pool.submit(job) for job in jobs]:
                future.result()
    except BaseException:
        world.stop()
        raise
    return world


def copy_s3_prefix(world: World, source: str, dest: str) -> None:
    """Copy every object under ``source/`` to ``dest/`` in the campaign's bucket."""
    client = world.s3_client()
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=BUCKET, Prefix=source + "/"):
        for item in page.get("Contents", []):
            key = item["Key"]
            client.copy_object(
                Bucket=BUCKET,
                Key=dest + key[len(source) :],
                CopySource={"Bucket": BUCKET, "Key": key},
            )


def delete_s3_prefix(world: World, prefix: str) -> None:
    client = world.s3_client()
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})
