"""strongroom benchmark, MySQL/MariaDB section: strongroom next to mysqldump baselines.

    .venv/bin/python bench/mysql_bench.py --scale 0.1     # quick (~30 MB of table data)
    .venv/bin/python bench/mysql_bench.py                 # --scale 1.0 (~300 MB)

It starts a throwaway MariaDB (src/strongroom_servers/mariadb.py, which the tests use too),
generates a deterministic web-app database (users with JSON profiles, workouts, notes of free
text, invoices with PDF-like blobs; text from an invented Zipf-distributed vocabulary, so it
compresses like real data), then measures, each to local disk:

* backups: ``mariadb-dump | gzip > file``, ``mariadb-dump > file`` (the raw limit) and
  ``strongroom backup`` into a local repository (first, then after one day of churn:
  ~1 % new rows, ~0.5 % of recent rows updated);
* restores: ``gunzip -c file | mariadb`` and ``strongroom restore`` into a new database;
* the peak RSS of the strongroom process.

All dumps use strongroom's own options (``--single-transaction --routines --triggers
--events --hex-blob …``). Results: bench/results/mysql-latest.{json,md}. The server is
stopped and the work files removed at the end, also on failure or Ctrl-C.
``run_section(...)`` runs the same from another script (bench/run.py).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from strongroom.engines.mysql import MysqlEngine
from strongroom.engines.mysql.dump import dump_command
from strongroom_servers.mariadb import MariaDbServer, start_server

ROOT = Path(__file__).resolve().parent.parent
STRONGROOM = ROOT / ".venv" / "bin" / "strongroom"
MB = 1_000_000
DB = "app"
BASE = {"users": 62_000, "workouts": 246_000, "notes": 160_000, "invoices": 62_000}
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "sa",
    "ti",
    "vo",
    "ze",
    "ba",
    "da",
    "fe",
    "gi",
    "ho",
    "ju",
    "ky",
    "la",
    "me",
    "no",
    "pi",
    "qu",
    "re",
    "su",
    "ta",
]
BATCH = 2_000

SCHEMA = [
    """CREATE TABLE users (id BIGINT PRIMARY KEY, public_id CHAR(36) NOT NULL,
        email VARCHAR(190) NOT NULL, display_name VARCHAR(100) NOT NULL,
        password_hash CHAR(60) NOT NULL, created_at DATETIME(6) NOT NULL,
        last_login_at DATETIME(6), plan VARCHAR(20) NOT NULL, profile JSON NOT NULL,
        UNIQUE KEY (email))""",
    """CREATE TABLE workouts (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL,
        started_at DATETIME(6) NOT NULL, ended_at DATETIME(6), title VARCHAR(200) NOT NULL,
        notes TEXT, perceived_effort TINYINT, calories INT, device VARCHAR(40),
        KEY (user_id, started_at))""",
    """CREATE TABLE notes (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL,
        created_at DATETIME(6) NOT NULL, updated_at DATETIME(6) NOT NULL,
        title VARCHAR(300) NOT NULL, body MEDIUMTEXT NOT NULL, KEY (user_id))""",
    """CREATE TABLE invoices (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL,
        number VARCHAR(40) NOT NULL, issued_at DATETIME(6) NOT NULL, status VARCHAR(10) NOT NULL,
        amount DECIMAL(12,2) NOT NULL, items JSON NOT NULL, pdf MEDIUMBLOB, KEY (user_id))""",
]


class Vocabulary:
    """Invented words with Zipf-like frequencies (rank ** -1.1)."""

    def __init__(self, seed: int, size: int = 4000) -> None:
        rng = random.Random(f"vocabulary:{seed}")
        words: dict[str, None] = {}
        while len(words) < size:
            words["".join(rng.choice(SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 3, 4))))] = (
                None
            )
        self.words = list(words)
        self.weights = list(itertools.accumulate(1.0 / r**1.1 for r in range(1, size + 1)))

    def text(self, rng: random.Random, low: int, high: int) -> str:
        words = rng.choices(self.words, cum_weights=self.weights, k=rng.randint(low, high))
        if rng.random() < 0.2:
            words.append(f"{rng.randint(1, 250)}kg")
        return " ".join(words).capitalize() + rng.choice("....!?")


def _stamp(rng: random.Random, day: int = 0) -> str:
    base = 1_609_459_200 + day * 86_400  # 2021-01-01
    seconds = base + rng.randint(0, 86_400) if day else base + rng.randint(0, 3 * 365 * 86_400)
    return (
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{rng.randint(0, 999999):06d}"
    )


def _rows(
    table: str, rng: random.Random, vocab: Vocabulary, ids: range, users: int, day: int
) -> Iterator[tuple[Any, ...]]:
    for i in ids:
        if table == "users":
            profile = {
                "bio": vocab.text(rng, 5, 25),
                "units": rng.choice(("kg", "lb")),
                "goal": rng.randint(1, 7),
            }
            yield (
                i,
                f"{rng.getrandbits(128):032x}",
                f"user{i}@example.com",
                vocab.text(rng, 1, 3)[:100],
                "$2b$12$" + rng.randbytes(26).hex()[:53],
                _stamp(rng, day),
                _stamp(rng, day),
                rng.choice(("free", "pro", "team")),
                json.dumps(profile),
            )
        elif table == "workouts":
            yield (
                i,
                rng.randint(1, users),
                _stamp(rng, day),
                _stamp(rng, day),
                vocab.text(rng, 2, 5)[:200],
                vocab.text(rng, 3, 30) if rng.random() < 0.6 else None,
                rng.randint(1, 10),
                rng.randint(50, 1200),
                rng.choice(("watch", "phone", "web", None)),
            )
        elif table == "notes":
            body = "\n\n".join(vocab.text(rng, 10, 60) for _ in range(rng.randint(1, 4)))
            yield (
                i,
                rng.randint(1, users),
                _stamp(rng, day),
                _stamp(rng, day),
                vocab.text(rng, 2, 7)[:300],
                body,
            )
        else:
            items = [
                {
                    "sku": f"PLAN-{rng.randint(100, 999)}",
                    "qty": rng.randint(1, 3),
                    "price": rng.choice((4.99, 9.99, 29.0)),
                }
                for _ in range(rng.randint(1, 4))
            ]
            amount = sum(x["qty"] * x["price"] for x in items)  # type: ignore[operator]
            title = f"3 0 obj << /Title (Invoice {i}) /Total ({amount:.2f}) >> stream\n"
            head = b"%PDF-1.7\n" + title.encode()
            pdf = head + rng.randbytes(int(rng.lognormvariate(6.2, 0.5))) + b"\nendstream\n%%EOF\n"
            yield (
                i,
                rng.randint(1, users),
                f"INV-{i:08d}",
                _stamp(rng, day),
                rng.choice(("open", "paid")),
                f"{amount:.2f}",
                json.dumps(items),
                pdf,
            )


def _insert(cur: Any, table: str, rows: Iterator[tuple[Any, ...]]) -> int:
    count = 0
    while batch := list(itertools.islice(rows, BATCH)):
        marks = ", ".join(["%s"] * len(batch[0]))
        cur.executemany(f"INSERT INTO {table} VALUES ({marks})", batch)
        count += len(batch)
    return count


def generate(server: MariaDbServer, scale: float, seed: int) -> dict[str, int]:
    """Create and fill the database; return row counts."""
    server.create_database(DB)
    server.execute(DB, SCHEMA)
    vocab = Vocabulary(seed)
    counts = {t: max(10, round(n * scale)) for t, n in BASE.items()}
    with server.connect(DB, autocommit=False) as conn, conn.cursor() as cur:
        for table, n in counts.items():
            rng = random.Random(f"{table}:{seed}")
            _insert(cur, table, _rows(table, rng, vocab, range(1, n + 1), counts["users"], 0))
            conn.commit()
    return counts


def churn(server: MariaDbServer, seed: int, day: int = 1) -> None:
    """One day of activity: ~1 % new rows per table, ~0.5 % of recent rows updated."""
    vocab = Vocabulary(seed)
    rng = random.Random(f"day-{day}:{seed}")
    with server.connect(DB, autocommit=False) as conn, conn.cursor() as cur:
        cur.execute("SELECT MAX(id) FROM users")
        users = int(cur.fetchone()[0])
        for table in BASE:
            cur.execute(f"SELECT COUNT(*), MAX(id) FROM {table}")
            count, top = cur.fetchone()
            fresh = range(top + 1, top + 1 + max(1, count // 100))
            _insert(cur, table, _rows(table, rng, vocab, fresh, users, day))
            recent = [top - rng.randrange(max(1, count // 10)) for _ in range(max(1, count // 200))]
            column = {
                "users": "last_login_at",
                "workouts": "ended_at",
                "notes": "updated_at",
                "invoices": "issued_at",
            }[table]
            cur.executemany(
                f"UPDATE {table} SET {column} = %s WHERE id = %s",
                [(_stamp(rng, day), i) for i in recent],
            )
        conn.commit()


def _run(argv: Sequence[str], log: Path, env: dict[str, str]) -> tuple[float, int]:
    """Run a command; (seconds, peak RSS in KiB of it and its children)."""
    with log.open("ab") as out:
        out.write(f"\n$ {shlex.join(argv)}\n".encode())
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{argv[0]} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return seconds, int(usage.ru_maxrss)


def _shell(script: str) -> list[str]:
    return ["bash", "-o", "pipefail", "-c", script]


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def run_section(scale: float, seed: int, work: Path, say: Any = print) -> dict[str, Any]:
    """Start a server, generate, measure; return the results (see the module docstring)."""
    server = start_server()
    try:
        return _measure(server, scale, seed, work, say)
    finally:
        server.stop()


def _measure(
    server: MariaDbServer, scale: float, seed: int, work: Path, say: Any
) -> dict[str, Any]:
    clock = time.monotonic()
    say(f"MariaDB {server.query(None, 'SELECT VERSION()')[0][0]} on port {server.port}")
    rows = generate(server, scale, seed)
    size = server.query(
        None,
        "SELECT SUM(DATA_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
        (DB,),
    )[0][0]
    say(
        f"generated {rows} ({int(size) / MB:.0f} MB of table data)"
        f" in {time.monotonic() - clock:.0f} s"
    )
    engine = MysqlEngine(server.url(DB))
    tool, version = engine.tool(("mariadb-dump", "mysqldump"))
    client, _ = engine.tool(("mariadb", "mysql"))
    options = work / "client.cnf"  # the shell commands below read it by name
    options.touch(mode=0o600)
    options.write_text(engine.option_file_text())
    env = {
        **os.environ,
        "STRONGROOM_REPO": str(work / "repo"),
        "STRONGROOM_KEY_FILE": str(work / "key"),
    }
    log = work / "steps.log"
    dump = shlex.join(dump_command(tool, version, options, DB))
    raw, gz = work / "app.sql", work / "app.sql.gz"
    out: dict[str, Any] = {
        "scale": scale,
        "seed": seed,
        "rows": rows,
        "table_bytes": int(size),
        "tool": version,
    }

    say("mariadb-dump | gzip > file")
    out["gzip_seconds"], _ = _run(_shell(f"{dump} | gzip > {shlex.quote(str(gz))}"), log, env)
    say("mariadb-dump > file")
    out["raw_seconds"], _ = _run(_shell(f"{dump} > {shlex.quote(str(raw))}"), log, env)
    out["raw_bytes"], out["gzip_bytes"] = raw.stat().st_size, gz.stat().st_size
    _run([str(STRONGROOM), "init"], log, env)
    say("strongroom backup")
    out["backup_seconds"], out["backup_rss_kib"] = _run(
        [str(STRONGROOM), "backup", server.url(DB)], log, env
    )
    out["stored_bytes"] = _tree_bytes(work / "repo" / "chunks")

    say("one day of churn, then strongroom backup again")
    churn(server, seed)
    before = out["stored_bytes"]
    out["repeat_seconds"], _ = _run([str(STRONGROOM), "backup", server.url(DB)], log, env)
    out["repeat_new_bytes"] = _tree_bytes(work / "repo" / "chunks") - before
    _run(_shell(f"{dump} > {shlex.quote(str(raw))}"), log, env)
    out["repeat_raw_bytes"] = raw.stat().st_size

    say("gunzip -c | mariadb (restore of the first dump)")
    server.create_database("app_gz")
    feed = (
        f"gunzip -c {shlex.quote(str(gz))} | {shlex.quote(str(client))}"
        f" --defaults-file={shlex.quote(str(options))} --binary-mode app_gz"
    )
    out["gunzip_restore_seconds"], _ = _run(_shell(feed), log, env)
    server.drop_database("app_gz")
    say("strongroom restore (of the latest backup) into a new database")
    out["restore_seconds"], out["restore_rss_kib"] = _run(
        [str(STRONGROOM), "restore", "latest", "--to", server.url("app_sr")], log, env
    )
    server.drop_database("app_sr")
    options.unlink()

    out["ratios"] = {
        "backup_time_vs_raw_dump": _ratio(out["backup_seconds"], out["raw_seconds"]),
        "backup_time_vs_gzip_dump": _ratio(out["backup_seconds"], out["gzip_seconds"]),
        "stored_vs_gzip": _ratio(out["stored_bytes"], out["gzip_bytes"]),
        "stored_vs_raw": _ratio(out["stored_bytes"], out["raw_bytes"]),
        "repeat_new_share_of_raw": _ratio(out["repeat_new_bytes"], out["repeat_raw_bytes"]),
        "restore_time_vs_gunzip_mariadb": _ratio(
            out["restore_seconds"], out["gunzip_restore_seconds"]
        ),
    }
    out["total_seconds"] = round(time.monotonic() - clock, 1)
    return out


def report(res: dict[str, Any]) -> list[str]:
    """Markdown lines of one run's results."""
    r = res["ratios"]

    def mb(n: float) -> str:
        return f"{n / MB:.1f} MB"

    return [
        f"## MySQL/MariaDB (scale {res['scale']:g}: {mb(res['table_bytes'])} of table data)",
        "",
        "| step | time | size | ratio |",
        "| --- | ---: | ---: | --- |",
        f"| mariadb-dump > file (raw) | {res['raw_seconds']:.1f} s | {mb(res['raw_bytes'])} | |",
        f"| mariadb-dump \\| gzip | {res['gzip_seconds']:.1f} s | {mb(res['gzip_bytes'])} | |",
        f"| strongroom backup | {res['backup_seconds']:.1f} s | {mb(res['stored_bytes'])} stored | "
        f"time {r['backup_time_vs_raw_dump']}x raw dump, "
        f"{r['backup_time_vs_gzip_dump']}x gzip dump; "
        f"size {r['stored_vs_gzip']}x gzip |",
        f"| strongroom backup after 1 day of churn | {res['repeat_seconds']:.1f} s | "
        f"{mb(res['repeat_new_bytes'])} new | "
        f"{100 * r['repeat_new_share_of_raw']:.1f} % of the raw dump |",
        f"| gunzip -c \\| mariadb | {res['gunzip_restore_seconds']:.1f} s | | |",
        f"| strongroom restore (staged, verified) | {res['restore_seconds']:.1f} s | | "
        f"{r['restore_time_vs_gunzip_mariadb']}x gunzip \\| mariadb |",
        "",
        f"Peak RSS of strongroom: backup {res['backup_rss_kib'] / 1024:.0f} MiB, "
        f"restore {res['restore_rss_kib'] / 1024:.0f} MiB (with its child processes).",
    ]


@contextmanager
def _scratch(base: Path) -> Iterator[Path]:
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mysql-", dir=base))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/mysql_bench.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = about 300 MB of table data")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "work")
    args = parser.parse_args(argv)
    if not STRONGROOM.exists():
        print(f"error: {STRONGROOM} not found: run `make venv` first", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.0f}s] {message}", flush=True)

    with _scratch(args.work.resolve()) as work:
        try:
            res = run_section(args.scale, args.seed, work, say)
        except (RuntimeError, OSError) as exc:
            print(f"\nbenchmark failed: {exc}", file=sys.stderr)
            return 1
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "mysql-latest.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = report(res)
    (args.results / "mysql-latest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nresults: {args.results}/mysql-latest.json, mysql-latest.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
