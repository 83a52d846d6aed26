"""Small helpers shared by the tests (no fakes of databases: real SQLite files)."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
STRONGROOM = [sys.executable, "-m", "strongroom.cli.app"]


def make_sqlite_db(path: Path, users: int = 2000, orders: int = 6000, seed: int = 7) -> Path:
    """A small shop database with random-looking (not repetitive) content; grows if present."""
    rng = random.Random(seed)
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, email TEXT, bio TEXT);"
        "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, user_id INT, total REAL,"
        " note TEXT);"
    )
    start = db.execute("SELECT coalesce(max(id), 0) FROM users").fetchone()[0]
    db.executemany(
        "INSERT INTO users VALUES (?, ?, ?)",
        [
            (start + i, f"u{start + i}@example.com", rng.randbytes(rng.randint(20, 300)).hex())
            for i in range(1, users + 1)
        ],
    )
    db.executemany(
        "INSERT INTO orders (user_id, total, note) VALUES (?, ?, ?)",
        [
            (rng.randint(1, start + users), rng.random() * 500, rng.randbytes(24).hex())
            for _ in range(orders)
        ],
    )
    db.commit()
    db.close()
    return path


def sqlite_counts(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: db.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
    finally:
        db.close()


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    """Run the real command line in a subprocess, as a user would."""
    full_env = dict(os.environ)
    full_env.pop("STRONGROOM_REPO", None)
    full_env.pop("STRONGROOM_KEY_FILE", None)
    full_env.pop("STRONGROOM_PASSPHRASE", None)
    full_env.pop("DATABASE_URL", None)
    full_env.update(env or {})
    return subprocess.run(
        [*STRONGROOM, *args],
        env=full_env,
        input=stdin,
        capture_output=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        check=False,
    )


def cli_ok(result: subprocess.CompletedProcess[bytes]) -> str:
    """Assert a CLI run succeeded; return its stdout."""
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    return result.stdout.decode()


def cli_fails(result: subprocess.CompletedProcess[bytes], code: int, pattern: str) -> str:
    """Assert a CLI run failed with ``code`` and exactly one ``error:`` line matching
    ``pattern``, without a traceback; return its stderr."""
    import re

    err = result.stderr.decode()
    assert result.returncode == code, (result.returncode, err, result.stdout.decode())
    assert re.search(pattern, err), err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err
    return err


def repository_env(tmp_path: Path) -> dict[str, str]:
    """A local repository and key file under ``tmp_path``, as environment variables."""
    return {
        "STRONGROOM_REPO": str(tmp_path / "repo"),
        "STRONGROOM_KEY_FILE": str(tmp_path / "repo.key"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
