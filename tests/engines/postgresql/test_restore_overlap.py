"""The parallel restore that starts while the temp dump is written (``restore_overlap``),
against a real server: the same result as one ``pg_restore -j2`` from a file, every entry
once; a failed or killed step fails the restore; an exception stops every ``pg_restore``."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.engines.postgresql import PostgresEngine, restore_overlap
from strongroom.engines.postgresql.restore import restore_flags
from strongroom.engines.postgresql.restore_overlap import restore_overlapped
from tests.engines.postgresql.dump_shape import dump, users_shape_database
from tests.engines.postgresql.test_fidelity import (  # noqa: F401  (fixture)
    App,
    _backup,
    _same,
    app,
)
from tests.fixtures.pg_app import app_queries_work
from tests.fixtures.postgres import PgServer, unique_db_name
from tests.helpers import cli_ok, run_cli

CHUNK = 1024 * 1024

EXTRA = """
CREATE TABLE "Aardvark" ("Id" bigserial PRIMARY KEY, "Payload" text NOT NULL);
INSERT INTO "Aardvark" ("Payload")
  SELECT md5(g::text) || md5((g * 7)::text) FROM generate_series(1, {big}) g;
CREATE TABLE "Tags" ("Id" serial PRIMARY KEY, "Name" text UNIQUE CHECK ("Name" <> ''));
INSERT INTO "Tags" ("Name") SELECT 'tag ' || g FROM generate_series(1, 500) g;
CREATE TABLE "Empty" (x int);
CREATE SEQUENCE "Counter" START 5;
SELECT setval('"Counter"', 4242);
SELECT setval('"Customers_Id_seq"', 90001);
CREATE VIEW "PaidLines" AS SELECT * FROM "OrderLines" WHERE "State" = 'paid';
COMMENT ON TABLE "Customers" IS 'the customers';
COMMENT ON COLUMN "OrderLines"."Note" IS 'free text';
COMMENT ON INDEX "OrderLines_State" IS 'by state';
ALTER TABLE "Aardvark" OWNER TO {role};
ALTER TABLE "Tags" OWNER TO {role};
ALTER VIEW "PaidLines" OWNER TO {role};
GRANT SELECT ON "Customers", "PaidLines" TO PUBLIC;
GRANT SELECT ("Id", "Name") ON "Tags" TO PUBLIC;
REVOKE ALL ON "Aardvark" FROM {role};
GRANT SELECT ON "Aardvark" TO {role};
"""

STATE = """
SELECT 'rel ' || c.relname || ' ' || c.relkind::text || ' ' || pg_get_userbyid(c.relowner)
       || ' ' || coalesce(c.relacl::text, '-') || ' ' || coalesce(obj_description(c.oid), '-')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public'
UNION ALL
SELECT 'con ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
 WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'idx ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'col ' || coalesce(col_description('"OrderLines"'::regclass, 4), '-')
UNION ALL
SELECT 'seq ' || sequencename || ' ' || coalesce(last_value::text, '-')
  FROM pg_sequences WHERE schemaname = 'public'
UNION ALL
SELECT 'rows ' || t || ' ' || n FROM (
  SELECT 'Customers' t, count(*) || md5(string_agg(c::text, '|' ORDER BY "Id")) n
    FROM "Customers" c
  UNION ALL SELECT 'OrderLines', count(*) || md5(string_agg(o::text, '|' ORDER BY "Id"))
    FROM "OrderLines" o
  UNION ALL SELECT 'Aardvark', count(*) || md5(string_agg(a::text, '|' ORDER BY "Id"))
    FROM "Aardvark" a
  UNION ALL SELECT 'Tags', count(*) || md5(string_agg(g::text, '|' ORDER BY "Id"))
    FROM "Tags" g
  UNION ALL SELECT 'Empty', count(*)::text FROM "Empty") s
"""

# pg_restore --verbose: one line per TOC entry it restores
_ENTRY = re.compile(r"^pg_restore: (creating .*|processing data for table .*|executing .*)$")


def _state(server: PgServer, dbname: str) -> list[str]:
    return sorted(str(row[0]) for row in server.query(dbname, STATE))


def _entries(stderr: str) -> Counter[str]:
    return Counter(m.group(1) for line in stderr.splitlines() if (m := _ENTRY.match(line)))


def _pg_restore(server: PgServer, *extra: str) -> list[str]:
    """One ``pg_restore`` with the flags of a faithful restore (the reference)."""
    return [str(server.bin_dir / "pg_restore"), *restore_flags(True), *extra]


def _chunks(data: bytes) -> Iterator[bytes]:
    for at in range(0, len(data), CHUNK):
        yield data[at : at + CHUNK]


def _children(name: str = "pg_restore") -> list[tuple[int, str]]:
    """(pid, command line) of this process's children running ``name``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and Path(cmdline.split(b" ")[0].decode()).name == name:
            found.append((int(entry), cmdline.decode()))
    return found


@pytest.fixture(scope="module")
def shaped(pg_server: PgServer) -> Iterator[tuple[str, bytes]]:
    """A users'-shape database (several tables of different sizes) and its piped dump."""
    name = unique_db_name("shape")
    pg_server.create_database(name)
    try:
        role = users_shape_database(pg_server, name, customers=20000)
        pg_server.psql(name, EXTRA.format(big=300000, role=role))
        pg_server.psql(name, f"ALTER ROLE {role} PASSWORD '{role}'")
        yield name, dump(pg_server, name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def target(pg_server: PgServer) -> Iterator[tuple[str, PostgresEngine]]:
    name = unique_db_name("overlap")
    url = pg_server.create_database(name)
    try:
        yield name, PostgresEngine(url)
    finally:
        pg_server.drop_database(name)


def _restore(
    server: PgServer,
    engine: PostgresEngine,
    source: Iterator[bytes],
    faithful: bool = True,
    jobs: int = 2,
) -> tuple[int, str]:
    return restore_overlapped(
        engine,
        server.bin_dir / "pg_restore",
        source,
        jobs,
        restore_flags(faithful),
        tolerate_errors=faithful,
    )


@pytest.fixture
def reference(pg_server: PgServer) -> Iterator[str]:
    name = unique_db_name("ref")
    pg_server.create_database(name)
    try:
        yield name
    finally:
        pg_server.drop_database(name)


def test_every_entry_once_as_one_pg_restore(
    pg_server: PgServer,
    shaped: tuple[str, bytes],
    target: tuple[str, PostgresEngine],
    reference: str,
    tmp_path: Path,
) -> None:
    """The steps' ``--verbose`` lines name the same entries, each as often, as one
    ``pg_restore`` of the file (both one process at a time: ``-j`` workers' lines can mix
    on one stderr)."""
    data = shaped[1]
    path = tmp_path / "piped.dump"
    path.write_bytes(data)
    one = subprocess.run(
        [*_pg_restore(pg_server), "-d", pg_server.url(reference), str(path)],
        capture_output=True,
        text=True,
    )
    assert one.returncode == 0, one.stderr
    returncode, stderr = _restore(pg_server, target[1], _chunks(data), jobs=1)
    assert returncode == 0, stderr
    assert "error:" not in stderr
    assert _entries(stderr) == _entries(one.stderr)
    assert sum(_entries(stderr).values()) > 40
    assert _state(pg_server, target[0]) == _state(pg_server, reference)


def test_same_state_as_one_pg_restore_j2_from_a_file(
    pg_server: PgServer,
    shaped: tuple[str, bytes],
    target: tuple[str, PostgresEngine],
    reference: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, data = shaped
    path = tmp_path / "file.dump"  # pg_dump to a file: its own offsets
    subprocess.run(
        [str(pg_server.bin_dir / "pg_dump"), "-Fc", "-Z0", "-f", str(path), pg_server.url(source)],
        check=True,
    )
    one = subprocess.run(
        [*_pg_restore(pg_server, "-j2"), "-d", pg_server.url(reference), str(path)],
        capture_output=True,
        text=True,
    )
    assert one.returncode == 0, one.stderr
    caplog.set_level(logging.DEBUG, logger="strongroom.engines.postgresql")
    returncode, stderr = _restore(pg_server, target[1], _chunks(data))
    assert returncode == 0, stderr
    assert "error:" not in stderr
    assert _state(pg_server, target[0]) == _state(pg_server, reference)
    assert _state(pg_server, target[0]) == _state(pg_server, source)
    # the overlap ran: pre-data, table batches during the stream, the rest, post-data
    started = [r.getMessage() for r in caplog.records if "pg_restore started" in r.getMessage()]
    assert started[0].startswith("pg_restore started: pre-data")
    assert sum("data of" in s for s in started) >= 2
    assert started[-1].startswith("pg_restore started: post-data")
    assert "5 of 10 data entries in table batches" in caplog.text


def _as_owner(server: PgServer, source: str) -> tuple[str, str]:
    """A new database owned by the owner role of ``source``'s tables; (name, its URL as
    that role)."""
    role = str(
        server.query(source, "SELECT tableowner FROM pg_tables WHERE tablename = 'Tags'")[0][0]
    )
    name = unique_db_name("owned")
    server.create_database(name)
    server.psql("postgres", f'ALTER DATABASE "{name}" OWNER TO {role}')
    return name, f"postgresql://{role}:{role}@{server.host}:{server.port}/{name}"


def test_a_non_superuser_owner_gets_the_rows_of_a_table_it_revoked_insert_on(
    pg_server: PgServer, shaped: tuple[str, bytes], tmp_path: Path
) -> None:
    """The owner revoked its own INSERT on "Aardvark" (``REVOKE ALL``, ``GRANT SELECT``):
    one ``pg_restore`` restores that ACL after the data; so must the steps (the ACLs of the
    pre-data section go to the last step), or the owner's ``COPY`` is refused."""
    source, data = shaped
    mine, mine_url = _as_owner(pg_server, source)
    one, one_url = _as_owner(pg_server, source)
    try:
        path = tmp_path / "file.dump"
        path.write_bytes(data)
        single = subprocess.run(
            [*_pg_restore(pg_server), "-d", one_url, str(path)],
            capture_output=True,
            text=True,
        )
        returncode, stderr = _restore(pg_server, PostgresEngine(mine_url), _chunks(data))
        assert returncode == single.returncode, stderr  # 1: the superuser's objects' owner
        errors = Counter(line for line in stderr.splitlines() if "error:" in line)
        assert errors == Counter(line for line in single.stderr.splitlines() if "error:" in line)
        assert not any("permission denied" in line for line in errors)
        assert pg_server.query(mine, 'SELECT count(*) FROM "Aardvark"')[0][0] == 300000
        assert _state(pg_server, mine) == _state(pg_server, one)
    finally:
        pg_server.drop_database(mine)
        pg_server.drop_database(one)


def test_small_tables_are_batched(
    pg_server: PgServer,
    shaped: tuple[str, bytes],
    target: tuple[str, PostgresEngine],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(restore_overlap, "MIN_BATCH_BYTES", 1 << 40)
    caplog.set_level(logging.DEBUG, logger="strongroom.engines.postgresql")
    returncode, stderr = _restore(pg_server, target[1], iter([shaped[1]]))  # one chunk
    assert returncode == 0, stderr
    batches = [int(n) for n in re.findall(r"pg_restore started: data of (\d+) ", caplog.text)]
    assert sum(batches) == 5 and max(batches) >= 4  # the small ones went together
    assert _state(pg_server, target[0]) == _state(pg_server, shaped[0])


def test_a_failing_table_step_fails_the_restore(
    pg_server: PgServer, shaped: tuple[str, bytes], target: tuple[str, PostgresEngine]
) -> None:
    data = bytearray(shaped[1])
    at = data.index(b"\tpaid\t")  # a State of OrderLines' data: not an OrderState now
    data[at + 1 : at + 5] = b"pxid"
    returncode, stderr = _restore(pg_server, target[1], _chunks(bytes(data)), faithful=False)
    assert returncode != 0
    assert 'invalid input value for enum public."OrderState": "pxid"' in stderr
    # nothing started after the failure: no post-data (the index is not there)
    assert not pg_server.query(
        target[0], "SELECT 1 FROM pg_indexes WHERE indexname = 'OrderLines_State'"
    )


def _batches(caplog: pytest.LogCaptureFixture) -> list[int]:
    """The pids of the table batches' ``pg_restore`` started so far (from the debug log)."""
    found = (re.search(r"started: data of .*\(pid (\d+)\)", r.getMessage()) for r in caplog.records)
    return [int(m.group(1)) for m in found if m]


def test_a_killed_table_step_fails_the_restore(
    pg_server: PgServer,
    shaped: tuple[str, bytes],
    target: tuple[str, PostgresEngine],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="strongroom.engines.postgresql")
    data = shaped[1]
    killed: list[int] = []

    def source() -> Iterator[bytes]:
        chunks = list(_chunks(data))
        yield from chunks[:-1]  # "Aardvark" (the first and largest table) is complete
        deadline = time.monotonic() + 30
        while not killed and time.monotonic() < deadline:
            running = {pid for pid, _command in _children()}
            for pid in _batches(caplog):
                if pid in running:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.002)
            yield b""  # the restore looks at its steps as chunks arrive
        yield chunks[-1]

    returncode, _stderr = _restore(pg_server, target[1], source())
    assert killed
    assert returncode == -signal.SIGKILL
    assert not _children()


def test_an_exception_mid_stream_stops_every_pg_restore(
    pg_server: PgServer,
    shaped: tuple[str, bytes],
    target: tuple[str, PostgresEngine],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="strongroom.engines.postgresql")
    data = shaped[1]
    seen: list[list[tuple[int, str]]] = []

    def source() -> Iterator[bytes]:
        chunks = list(_chunks(data))
        yield from chunks[:-1]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            running = _children()
            if set(_batches(caplog)) & {pid for pid, _command in running}:
                seen.append(running)
                break
            time.sleep(0.002)
            yield b""  # the restore looks at its steps as chunks arrive
        raise RuntimeError("a damaged chunk")

    with pytest.raises(RuntimeError, match="a damaged chunk"):
        _restore(pg_server, target[1], source())
    assert seen  # a table batch's pg_restore ran when the stream failed
    assert not _children()
    for pid, _command in seen[0]:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_parallel_cli_restore_of_the_app_database_is_exact(app: App) -> None:  # noqa: F811
    """The application-shaped database (large objects, partitions, a materialized view,
    RLS, column grants, default privileges) through the command line with 2 jobs."""
    _backup(app)
    new = app.name + "_par"
    env = {**app.env, "STRONGROOM_RESTORE_JOBS": "2"}
    out = cli_ok(run_cli("restore", "latest", "--to", app.url(new), "--yes", env=env))
    assert "MISMATCH" not in out and "restore complete and verified" in out
    _same(app.server, app.name, app.server, new)
    app_queries_work(app.server, new, app.roles)
