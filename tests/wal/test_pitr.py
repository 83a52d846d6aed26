"""Point-in-time recovery on a real cluster that archives its WAL with ``strongroom
wal-push`` (run by the server as its OS user): markers committed every 100 ms, a base
backup in the middle, and ``restore --to-time`` at several moments recovering exactly the
markers committed up to each moment."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from strongroom_servers.postgres import PgServer, free_port
from tests.wal.support import WalPlace, archived_up_to, make_place, start_archiving, stop_copy

BACKUP_AT = 20  # the base backup starts after this many markers (one every 100 ms)
AFTER_BACKUP = 5.0  # seconds of markers after the base backup ended


@pytest.fixture(scope="module")
def archiving() -> Iterator[tuple[WalPlace, PgServer]]:
    place = make_place()
    server = start_archiving(
        place,
        {
            "archive_mode": "on",
            "wal_level": "replica",
            "archive_timeout": "60",
            "track_commit_timestamp": "on",
        },
    )
    try:
        yield place, server
    finally:
        server.stop()
        place.remove()


def _restored_ids(place: WalPlace, server: PgServer, name: str, *args: str) -> tuple[set[int], str]:
    """``restore --to-datadir … --start`` with ``args``; the marker ids the recovered
    cluster holds and the restore's output."""
    datadir = place.root / name
    port = free_port()
    result = place.run(
        "restore",
        "--config",
        str(place.config),
        "--to-datadir",
        str(datadir),
        "--start",
        "--port",
        str(port),
        *args,
        timeout=600,
    )
    try:
        assert result.returncode == 0, result.stderr + result.stdout
        # restore_command reads the repository's settings from the config given: no key,
        # no password in the data directory
        auto = (datadir / "postgresql.auto.conf").read_text()
        assert f"wal-fetch --snapshots --config {place.config} --stream postgresql-" in auto
        assert "AGE-SECRET-KEY" not in auto and server.password not in auto
        url = f"host=127.0.0.1 port={port} dbname=postgres user={server.user}"
        with psycopg.connect(url, password=server.password, autocommit=True) as conn:
            ids = {int(row[0]) for row in conn.execute("SELECT id FROM marker").fetchall()}
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        return ids, result.stdout
    finally:
        stop_copy(place, server, datadir)


def test_restore_to_time_recovers_exactly_the_markers(
    archiving: tuple[WalPlace, PgServer],
) -> None:
    place, server = archiving
    server.query("postgres", "CREATE TABLE marker (id int PRIMARY KEY, at timestamptz NOT NULL)")
    backup_started, stop = threading.Event(), threading.Event()
    failures: list[BaseException] = []
    lsn_after: dict[int, str] = {}  # marker id -> WAL insert position after its commit

    def commit_markers() -> None:
        try:
            with server.connect() as conn:
                i = 0
                while not stop.is_set():
                    conn.execute("INSERT INTO marker VALUES (%s, clock_timestamp())", (i,))
                    row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
                    lsn_after[i] = str(row[0]) if row else ""
                    if i == BACKUP_AT:
                        backup_started.set()
                    i += 1
                    time.sleep(0.1)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
            backup_started.set()

    writer = threading.Thread(target=commit_markers)
    writer.start()
    backup_started.wait(30)
    backup = place.run("backup", "--physical", "--config", str(place.config), server.url())
    backup_done = datetime.now(UTC)
    time.sleep(AFTER_BACKUP)
    stop.set()
    writer.join()
    assert not failures, failures
    assert backup.returncode == 0, backup.stderr
    archived_up_to(server)
    rows = server.query(
        "postgres", "SELECT id, pg_xact_commit_timestamp(xmin) FROM marker ORDER BY id"
    )
    committed = {int(i): at for i, at in rows}
    assert sorted(committed) == list(range(len(committed)))
    later = sorted(
        (at, i) for i, at in committed.items() if at > backup_done + timedelta(seconds=0.3)
    )
    assert len(later) >= 10, (backup_done, later[:3])  # markers after the backup ended
    # three moments after the base backup ended: a marker's exact commit time (inclusive),
    # half-way between two commits, and the last but one marker's commit time (recovery
    # needs a later commit to know it reached a time)
    half = len(later) // 2
    moments = [
        later[2][0],
        later[half][0] + (later[half + 1][0] - later[half][0]) / 2,
        later[-2][0],
    ]
    for number, moment in enumerate(moments):
        expected = {i for i, at in committed.items() if at <= moment}
        ids, output = _restored_ids(place, server, f"at{number}", "--to-time", moment.isoformat())
        assert ids == expected, (moment, sorted(ids ^ expected), output)
        print(f"\n--to-time {moment}: {len(ids)} of {len(committed)} markers, as expected")
        assert BACKUP_AT < len(expected) < len(committed)
        assert "recovered to" in output
    # an LSN: right after one marker's commit record
    marker = later[3][1]
    ids, _ = _restored_ids(place, server, "lsn", "--to-lsn", lsn_after[marker])
    assert ids == set(range(marker + 1)), (marker, lsn_after[marker], sorted(ids)[-3:])
    latest, _ = _restored_ids(place, server, "latest", "latest")
    assert latest == set(committed)
    # every copy was promoted to a new timeline and archived nothing into the original's
    # stream (archive_mode off in the copies): no history file there
    assert not list((place.repo / "logs").glob("postgresql-*/history"))
    # past the newest archived commit (an hour ahead: autovacuum's commits keep coming, and
    # archive_timeout archives them): PostgreSQL cannot know it got there; one line says so
    past = datetime.now(UTC) + timedelta(hours=1)
    result = place.run(
        "restore",
        "--config",
        str(place.config),
        "--to-datadir",
        str(place.root / "past"),
        "--to-time",
        past.isoformat(),
        "--start",
        "--port",
        str(free_port()),
        timeout=600,
    )
    stop_copy(place, server, place.root / "past")
    assert result.returncode == 5, result.stderr
    assert "past the end of the archived WAL" in result.stderr
    assert result.stderr.count("error:") == 1


def test_restore_before_the_oldest_base_backup_names_the_window(
    archiving: tuple[WalPlace, PgServer],
) -> None:
    place, _server = archiving
    result = place.run(
        "restore",
        "--config",
        str(place.config),
        "--to-datadir",
        str(place.root / "too-early"),
        "--to-time",
        "2001-01-01 00:00:00+00",
    )
    assert result.returncode == 3, result.stderr
    assert "before the oldest base backup's end" in result.stderr
    assert result.stderr.count("error:") == 1
    assert not (place.root / "too-early").exists()


def test_wal_push_latency_per_16mb_segment(archiving: tuple[WalPlace, PgServer]) -> None:
    """Real segments of a bulk load pushed by the command line as the server runs it (a
    fresh stream, so every push uploads); prints p50 / max."""
    place, server = archiving
    server.query(
        "postgres",
        "CREATE TABLE bulk AS SELECT g, md5(g::text) AS h FROM generate_series(1, 600000) g",
    )
    archived_up_to(server)
    wal = server.data_dir / "pg_wal"
    segments = sorted(p for p in wal.iterdir() if len(p.name) == 24)[-6:-1]
    copies = place.root / "latency"
    copies.mkdir()
    place.chown(copies)
    seconds = []
    for segment in segments:
        copy = copies / segment.name
        copy.write_bytes(segment.read_bytes())
        place.chown(copy)
        clock = time.monotonic()
        result = place.run(
            "wal-push", "--config", str(place.config), "--stream", "latency-probe", str(copy)
        )
        seconds.append(time.monotonic() - clock)
        assert result.returncode == 0, result.stderr
    stored = sum(
        p.stat().st_size for p in (place.repo / "logs" / "latency-probe").rglob("*") if p.is_file()
    )
    print(
        f"\nwal-push of {len(seconds)} x 16 MB: p50 {statistics.median(seconds) * 1000:.0f} ms, "
        f"max {max(seconds) * 1000:.0f} ms; stored {stored / len(seconds) / 1e6:.1f} MB per segment"
    )


def test_consecutive_base_backups_deduplicate(archiving: tuple[WalPlace, PgServer]) -> None:
    """Unchanged relation files of a second base backup are stored once: most of its
    chunks are already in the repository."""
    place, server = archiving
    server.query("postgres", "CREATE TABLE IF NOT EXISTS churn (x int)")
    server.query(  # relation files that do not change between the two backups
        "postgres",
        "CREATE TABLE IF NOT EXISTS ballast AS SELECT g, md5(g::text) AS h"
        " FROM generate_series(1, 400000) g",
    )
    server.query("postgres", "CHECKPOINT")
    first = place.run("backup", "--physical", "--config", str(place.config), server.url())
    assert first.returncode == 0, first.stderr
    server.query("postgres", "INSERT INTO churn SELECT generate_series(1, 1000)")
    second = place.run("backup", "--physical", "--config", str(place.config), server.url())
    assert second.returncode == 0, second.stderr
    share = float(second.stdout.split("new data")[1].split("(")[1].split("%")[0])
    print(f"\nsecond base backup: {share:.1f}% of its raw size was new")
    assert share < 30.0, second.stdout
    # a base backup is never fed to the logical restore path
    backup_id = second.stdout.split()[1]
    wrong = place.run(
        "restore", backup_id, "--to", server.url("elsewhere"), "--config", str(place.config)
    )
    assert wrong.returncode == 2, wrong.stderr
    assert "is a base backup of a whole cluster" in wrong.stderr
    assert not server.database_exists("elsewhere")
    # without --config: the repository and key file go into strongroom-wal.toml (0600) in
    # the data directory, never the key itself; laid down only (no --start)
    datadir = place.root / "no-config"
    laid = place.run(
        "restore",
        "latest",
        "--repo",
        str(place.repo),
        "--key-file",
        str(place.key),
        "--to-datadir",
        str(datadir),
    )
    assert laid.returncode == 0, laid.stderr
    wal_toml = datadir / "strongroom-wal.toml"
    assert wal_toml.stat().st_mode & 0o777 == 0o600
    text = wal_toml.read_text()
    assert f'location = "{place.repo}"' in text and f'key_file = "{place.key}"' in text
    assert "AGE-SECRET-KEY" not in text
    assert f"--config {wal_toml}" in (datadir / "postgresql.auto.conf").read_text()
    assert (datadir / "recovery.signal").exists() and not (datadir / "postmaster.pid").exists()
    assert "start it with: pg_ctl" in laid.stdout


def test_a_base_backup_is_never_chosen_or_fed_to_a_logical_restore_or_drill(
    archiving: tuple[WalPlace, PgServer],
) -> None:
    """A base backup shares its target with the dumps of the same server: ``latest`` for a
    logical restore passes it over, and a restore drill or a web/CLI restore of it by id is
    refused in one line (exit 2) before anything is touched."""
    place, server = archiving
    config = ("--config", str(place.config))
    server.create_database("small")
    server.query("small", "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 7)")
    physical = place.run("backup", "--physical", *config, server.url())
    assert physical.returncode == 0, physical.stderr
    target = physical.stdout.split("target")[1].split()[0]
    logical = place.run("backup", *config, "--target", target, server.url("small"))
    assert logical.returncode == 0, logical.stderr
    logical_id = logical.stdout.split()[1]
    base_id = place.run("backup", "--physical", *config, server.url()).stdout.split()[1]
    assert base_id != logical_id  # the base backup is the newest of the target

    # latest, for a restore into a database, is the newest dump
    restored = place.run(
        "restore", "latest", "--target", target, "--to", server.url("copy"), "--yes", *config
    )
    assert restored.returncode == 0, restored.stderr + restored.stdout
    assert logical_id in restored.stdout
    assert server.query("copy", "SELECT count(*) FROM t") == [(7,)]

    # the base backup by id: refused by the drill and the restore, nothing created
    for args in (
        ("verify", base_id, "--restore"),
        ("restore", base_id, "--to", server.url("never"), "--yes"),
    ):
        refused = place.run(*args, *config)
        assert refused.returncode == 2, (args, refused.stderr)
        assert "base backup" in refused.stderr and "--to-datadir" in refused.stderr, args
        assert refused.stderr.count("error:") == 1
    assert not server.database_exists("never")


def test_row_counts_of_every_database_are_recorded_when_asked(
    archiving: tuple[WalPlace, PgServer],
) -> None:
    """``backup --physical --row-counts`` records the rows of every table of every
    database (quoted CamelCase names, a table owned by an app role that is no superuser,
    a partitioned table counted in its partitions); without ``--physical`` it is refused
    in one line before anything is read."""
    from strongroom.engines.postgresql.physical_counts import table_key
    from strongroom.repository.keys import KeySource
    from strongroom.repository.repository import Repository
    from strongroom.services.pitr import physical_facts
    from strongroom.storage.local import LocalStorage

    place, server = archiving
    server.create_database("Camel Shop")
    server.psql(
        "Camel Shop",
        """
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'counted_app') THEN
            CREATE ROLE counted_app LOGIN;
          END IF;
        END $$;
        CREATE TYPE mood AS ENUM ('ok', 'sad');
        CREATE TABLE public."Orders" (id int, m mood);
        ALTER TABLE public."Orders" OWNER TO counted_app;
        INSERT INTO public."Orders" SELECT g, 'ok' FROM generate_series(1, 7) g;
        CREATE SCHEMA "Sch.ema";
        CREATE TABLE "Sch.ema".events (at int) PARTITION BY RANGE (at);
        CREATE TABLE "Sch.ema".events_1 PARTITION OF "Sch.ema".events FOR VALUES FROM (0) TO (10);
        INSERT INTO "Sch.ema".events SELECT generate_series(0, 4);
        """,
    )
    refused = place.run("backup", "--row-counts", "--config", str(place.config), server.url())
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("error:") == 1 and "--physical" in refused.stderr
    taken = place.run(
        "backup", "--physical", "--row-counts", "--config", str(place.config), server.url()
    )
    assert taken.returncode == 0, taken.stderr
    backup_id = taken.stdout.split()[1]
    repo = Repository.open(LocalStorage(place.repo), KeySource(key_file=place.key))
    facts = physical_facts(repo, repo.load_manifest(backup_id))
    counts = facts["row_counts"]["databases"]
    assert counts["Camel Shop"][table_key("public", "Orders")] == 7
    assert counts["Camel Shop"]['"Sch.ema".events_1'] == 5
    assert '"Sch.ema".events' not in counts["Camel Shop"]  # partitioned: its partitions
    assert set(counts) == set(facts["databases"])
    assert facts["row_counts"]["counted_at"].endswith("Z")
