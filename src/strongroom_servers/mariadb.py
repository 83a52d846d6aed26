"""A throwaway MariaDB server: ``mariadb-install-db`` into a temporary folder, ``mariadbd``.

:func:`start_server` installs a fresh data directory and starts ``mariadbd`` on a free
loopback port and a private socket, with password authentication: user ``strongroom`` /
``s3cret-pw`` with every privilege. As root, the server runs as the unprivileged system user
``strongroom-test``. Only when no server binaries exist (or no server can start) does it fall
back to the machine's running MariaDB on 127.0.0.1:3306 (root without a password), where it
creates the same user; :meth:`MariaDbServer.stop` leaves that one running.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql

from strongroom_servers.common import (
    RUN_AS,
    ServerBinariesNotFound,
    ServerStartFailed,
    ServerUnavailable,
    free_port,
    run_as_user,
)

__all__ = [
    "MISSING_HINT",
    "MY_PASSWORD",
    "MY_USER",
    "RUN_AS",
    "SYSTEM_HOST",
    "SYSTEM_PORT",
    "MariaDbServer",
    "ServerBinariesNotFound",
    "ServerStartFailed",
    "ServerUnavailable",
    "start_server",
]

MY_USER = "strongroom"
MY_PASSWORD = "s3cret-pw"
SYSTEM_HOST, SYSTEM_PORT = "127.0.0.1", 3306
MISSING_HINT = (
    "MariaDB server binaries (mariadbd, mariadb-install-db) not found and no MariaDB "
    "answers on 127.0.0.1:3306: install Debian's mariadb-server"
)


def _which(*names: str) -> str | None:
    for name in names:
        for folder in (None, "/usr/sbin", "/usr/bin"):
            found = shutil.which(name, path=folder) if folder else shutil.which(name)
            if found:
                return found
    return None


@dataclass
class MariaDbServer:
    """A running MariaDB server (throwaway unless ``base_dir`` is None)."""

    host: str
    port: int
    base_dir: Path | None = None
    user: str = MY_USER
    password: str = MY_PASSWORD
    run_as: pwd.struct_passwd | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def socket_path(self) -> Path | None:
        return self.base_dir / "mysqld.sock" if self.base_dir else None

    @property
    def log_file(self) -> Path | None:
        return self.base_dir / "error.log" if self.base_dir else None

    def url(self, dbname: str, *, password: str | None = None, scheme: str = "mysql") -> str:
        """``mysql://strongroom:s3cret-pw@127.0.0.1:PORT/dbname``."""
        pw = self.password if password is None else password
        return f"{scheme}://{self.user}:{pw}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str | None = None, **kwargs: Any) -> pymysql.Connection[Any]:
        kwargs.setdefault("autocommit", True)
        # loopback: no TLS (PyMySQL 2 otherwise builds a default TLS context, ~50 ms of CPU,
        # for every connection, and the tests open thousands)
        kwargs.setdefault("ssl_disabled", True)
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=dbname,
            charset="utf8mb4",
            **kwargs,
        )

    def query(self, dbname: str | None, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Rows of one statement run in ``dbname``."""
        with self.connect(dbname) as conn, conn.cursor() as cur:
            cur.execute(query, params)
            return list(cur.fetchall()) if cur.description else []

    def execute(self, dbname: str, statements: list[str]) -> None:
        """Run statements one by one (routine bodies need no DELIMITER)."""
        with self.connect(dbname) as conn, conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)

    def database_exists(self, name: str) -> bool:
        return bool(
            self.query(
                None, "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME=%s", (name,)
            )
        )

    def databases(self) -> set[str]:
        return {str(r[0]) for r in self.query(None, "SHOW DATABASES")}

    def create_database(self, name: str) -> str:
        self.query(None, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.query(None, f"DROP DATABASE IF EXISTS `{name}`")

    # --- lifecycle ------------------------------------------------------------------
    def start(self, mariadbd: str, install_db: str) -> None:
        assert self.base_dir is not None
        data = self.base_dir / "data"
        if self.run_as is not None:
            os.chown(self.base_dir, self.run_as.pw_uid, self.run_as.pw_gid)
        user_args = [f"--user={self.run_as.pw_name}"] if self.run_as else []
        install = subprocess.run(
            [
                install_db,
                "--no-defaults",
                f"--datadir={data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *user_args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if install.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {install.stderr.strip()[-2000:]}")
        self.proc = subprocess.Popen(
            [
                mariadbd,
                "--no-defaults",
                f"--datadir={data}",
                f"--socket={self.socket_path}",
                f"--port={self.port}",
                f"--bind-address={self.host}",
                f"--pid-file={self.base_dir / 'mysqld.pid'}",
                f"--log-error={self.log_file}",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
                "--innodb-buffer-pool-size=128M",
                "--innodb-log-file-size=64M",
                "--innodb-flush-log-at-trx-commit=0",
                "--sync-binlog=0",
                "--skip-name-resolve",
                "--max-connections=100",
                *user_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                root = pymysql.connect(unix_socket=str(self.socket_path), user="root", password="")
                break
            except pymysql.err.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file else ""
                    raise RuntimeError(f"mariadbd did not start:\n{log}") from None
                time.sleep(0.1)
        with root, root.cursor() as cur:
            cur.execute(f"CREATE USER '{self.user}'@'%' IDENTIFIED BY '{self.password}'")
            cur.execute(f"GRANT ALL ON *.* TO '{self.user}'@'%' WITH GRANT OPTION")

    def stop(self) -> None:
        """Stop the server and remove its files; safe to call twice."""
        if self._stopped or self.base_dir is None:
            return
        self._stopped = True
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=30)
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)


def _system_server() -> MariaDbServer | None:
    """The machine's running MariaDB (root, no password), with our user created."""
    try:
        root = pymysql.connect(host=SYSTEM_HOST, port=SYSTEM_PORT, user="root", password="")
    except pymysql.Error:
        return None
    with root, root.cursor() as cur:
        cur.execute(f"CREATE USER IF NOT EXISTS '{MY_USER}'@'%' IDENTIFIED BY '{MY_PASSWORD}'")
        cur.execute(f"GRANT ALL ON *.* TO '{MY_USER}'@'%' WITH GRANT OPTION")
    return MariaDbServer(host=SYSTEM_HOST, port=SYSTEM_PORT)


def start_server() -> MariaDbServer:
    """A throwaway MariaDB (preferred), else the machine's own (see the module's docstring).

    A throwaway server is stopped at interpreter exit if not before. Raises
    :class:`ServerBinariesNotFound` when there are no server binaries and no MariaDB answers
    on 127.0.0.1:3306, :class:`ServerStartFailed` when the binaries exist but neither a
    throwaway server nor the machine's answers; the message starts with :data:`MISSING_HINT`.
    """
    mariadbd = _which("mariadbd", "mysqld")
    install_db = _which("mariadb-install-db", "mysql_install_db")
    problem = "server binaries not found"
    if mariadbd and install_db:
        run_as = run_as_user()
        for _attempt in range(3):  # a free port can be taken between choosing and binding
            server = MariaDbServer(
                host="127.0.0.1",
                port=free_port(),
                base_dir=Path(tempfile.mkdtemp(prefix="strongroom-mariadb-")),
                run_as=run_as,
            )
            atexit.register(server.stop)
            try:
                server.start(mariadbd, install_db)
                return server
            except (RuntimeError, subprocess.TimeoutExpired, pymysql.Error) as exc:
                problem = str(exc)
                server.stop()
    fallback = _system_server()
    if fallback is not None:
        return fallback
    error = ServerStartFailed if mariadbd and install_db else ServerBinariesNotFound
    raise error(f"{MISSING_HINT} ({problem})")
