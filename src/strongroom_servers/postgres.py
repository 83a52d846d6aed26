"""A throwaway PostgreSQL cluster: ``initdb`` into a temporary folder, ``pg_ctl start``.

:func:`start_server` initialises a fresh cluster on a free loopback port with password
authentication over TCP (user ``strongroom``, password ``s3cret-pw``, scram-sha-256 for any
role on 127.0.0.1, so a role created ``WITH LOGIN PASSWORD '...'`` can connect) and with
``fsync=off``. As root, the server runs as the unprivileged system user ``strongroom-test``.
It never uses a PostgreSQL the machine may already run. :meth:`PgServer.stop` stops it
(immediate) and removes its files; :func:`start_server` also registers that for interpreter
exit.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from strongroom_servers.common import (
    RUN_AS,
    ServerBinariesNotFound,
    ServerStartFailed,
    ServerUnavailable,
    ensure_system_user,
    free_port,
    run_as_user,
)

__all__ = [
    "MISSING_HINT",
    "PG_PASSWORD",
    "PG_USER",
    "RUN_AS",
    "PgServer",
    "ServerBinariesNotFound",
    "ServerStartFailed",
    "ServerUnavailable",
    "ensure_system_user",
    "find_server_bin_dir",
    "free_port",
    "run_as_user",
    "start_server",
]

PG_USER = "strongroom"
PG_PASSWORD = "s3cret-pw"
MISSING_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in "
    "/usr/lib/postgresql/*/bin: run `make test`, which installs Debian's postgresql"
)


def find_server_bin_dir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres (newest Debian version first)."""
    candidates: list[Path] = []

    def key(path: str) -> int:
        name = Path(path).parent.name
        return int(name) if name.isdigit() else -1

    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=key, reverse=True):
        candidates.append(Path(found))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for directory in candidates:
        if all((directory / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


@dataclass
class PgServer:
    """A running throwaway PostgreSQL cluster."""

    bin_dir: Path
    base_dir: Path
    port: int
    host: str = "127.0.0.1"
    user: str = PG_USER
    password: str = PG_PASSWORD
    run_as: pwd.struct_passwd | None = None
    # extra postgresql.conf settings (e.g. archive_mode, archive_command); None: the default
    settings: dict[str, str] | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "sock"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    @property
    def version(self) -> int:
        """The server's major version."""
        with self.connect() as conn:
            return conn.info.server_version // 10000

    def url(self, dbname: str = "postgres", *, password: str | None = None) -> str:
        """``postgresql://strongroom:s3cret-pw@127.0.0.1:PORT/dbname``."""
        pw = self.password if password is None else password
        return f"postgresql://{self.user}:{pw}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        """An autocommit psycopg connection (over TCP, with the password)."""
        kwargs.setdefault("autocommit", True)
        return psycopg.connect(self.url(dbname), **kwargs)

    def query(self, dbname: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Rows of one statement run in ``dbname``."""
        with self.connect(dbname) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def psql(self, dbname: str, script: str) -> str:
        """Run an SQL script with ``psql`` (stops on the first error); return its output."""
        result = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                f"host={self.host} port={self.port} user={self.user} dbname={_conninfo(dbname)}",
            ],
            input=script,
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": self.password},
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"psql failed in {dbname}: {result.stderr.strip()}")
        return result.stdout.strip()

    def database_exists(self, name: str) -> bool:
        return bool(self.query("postgres", "SELECT 1 FROM pg_database WHERE datname = %s", (name,)))

    def create_database(self, name: str) -> str:
        """Create an empty database; return its URL."""
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database (closing its sessions) if it exists."""
        with self.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    # --- lifecycle ------------------------------------------------------------------
    def _run(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run a server binary, as the unprivileged user when we are root."""
        if self.run_as is not None:
            kwargs.update(user=self.run_as.pw_uid, group=self.run_as.pw_gid, extra_groups=[])
        return subprocess.run(
            args,
            cwd=self.base_dir,
            capture_output=True,
            text=True,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
            **kwargs,
        )

    def start(self) -> None:
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        self.socket_dir.mkdir()
        if self.run_as is not None:
            for path in (self.base_dir, pwfile, self.socket_dir):
                os.chown(path, self.run_as.pw_uid, self.run_as.pw_gid)
        init = self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--username={self.user}",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            timeout=120,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
        if self.settings:
            lines = "".join(f"{k} = {_conf_value(v)}\n" for k, v in self.settings.items())
            with (self.data_dir / "postgresql.conf").open("a") as conf:
                conf.write("\n# added by strongroom_servers (start_server settings)\n" + lines)
        self._pg_ctl_start()

    def _pg_ctl_start(self) -> None:
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=off "
            "-c max_connections=60 -c password_encryption=scram-sha-256"
        )
        started = self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ],
            timeout=90,
        )
        if started.returncode != 0:
            log = (
                self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            )
            raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()}\n{log}")

    def crash(self) -> None:
        """Stop the server at once, keeping its files (``pg_ctl stop -m immediate``: no
        shutdown checkpoint, clients and WAL senders cut off, as in a crash)."""
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
            timeout=60,
        )

    def restart(self) -> None:
        """Start a server stopped by :meth:`crash` again, on the same port (it runs crash
        recovery first)."""
        self._pg_ctl_start()

    def stop(self) -> None:
        """Stop the server (immediate) and remove its files; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run(
                    [
                        str(self.bin_dir / "pg_ctl"),
                        "-D",
                        str(self.data_dir),
                        "-m",
                        "immediate",
                        "-w",
                        "stop",
                    ],
                    timeout=60,
                )
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)


def start_server(settings: dict[str, str] | None = None) -> PgServer:
    """A fresh throwaway cluster, stopped at interpreter exit if not before.

    ``settings``: extra ``postgresql.conf`` lines (name -> value, quoted here), e.g.
    ``{"archive_mode": "on", "archive_command": "…", "wal_level": "replica"}``; without
    them the server is exactly the default one.

    Raises :class:`ServerBinariesNotFound` (message :data:`MISSING_HINT`) without the server
    binaries, :class:`ServerStartFailed` when three attempts fail.
    """
    bin_dir = find_server_bin_dir()
    if bin_dir is None:
        raise ServerBinariesNotFound(MISSING_HINT)
    run_as = run_as_user()
    last_error: Exception | None = None
    for _attempt in range(3):  # a free port can be taken between choosing and binding
        server = PgServer(
            bin_dir=bin_dir,
            base_dir=Path(tempfile.mkdtemp(prefix="strongroom-pg-")),
            port=free_port(),
            run_as=run_as,
            settings=settings,
        )
        atexit.register(server.stop)
        try:
            server.start()
            return server
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            last_error = exc
            server.stop()
    raise ServerStartFailed(f"could not start a throwaway PostgreSQL: {last_error}")


def _conf_value(value: str) -> str:
    """``value`` as a single-quoted postgresql.conf string."""
    return "'" + value.replace("'", "''") + "'"


def _conninfo(value: str) -> str:
    """``value`` as a single-quoted libpq conninfo value (any name, spaces included)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
