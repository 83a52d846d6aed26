"""A throwaway PostgreSQL cluster recovered from a base backup and the WAL archive, to
dump one database from it as of a moment (docs/design.md, "Point-in-time restore of one
database").

The cluster lives in a folder of its own (``tempfiles.folder_for``: 0700, owned by the OS
user that runs it), listens on no TCP address (``listen_addresses = ''``), only on a
Unix socket in that folder with a free port number, lets local connections in without a
password (only its OS user and root can reach the socket), and is always stopped
(``pg_ctl stop -m immediate``) and removed: at the end of the block, on an exception or
a signal (``Interrupted``), and at exit. A ``kill -9`` of strongroom leaves the folder
for the next start to sweep; the server notices its data directory is gone and stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from strongroom import tempfiles
from strongroom.engines.postgresql.physical import (
    RecoveryOutcome,
    RecoveryTarget,
    _failure,
    configure_recovery,
    find_pg_ctl,
    lay_down,
    prepare_datadir,
)
from strongroom.errors import RestoreFailed, UsageError

log = logging.getLogger("strongroom.engines.postgresql.throwaway")

READY = "database system is ready to accept connections"
_LAST = re.compile(r"last completed transaction was at log time (.+)$", re.M)
_STOP = re.compile(r"(recovery stopping [^\n]*|redo done at [^\n]*)", re.M)
_FETCH_ERROR = re.compile(r"^error: (.+)$", re.M)  # a strongroom wal-fetch failure in the log


@dataclass(frozen=True)
class OsUser:
    """The OS account a throwaway cluster runs as."""

    name: str
    uid: int
    gid: int

    @classmethod
    def named(cls, name: str) -> OsUser:
        """The account ``name``; ``UsageError`` when there is none."""
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise UsageError(f"--os-user {name!r}: there is no such OS user") from None
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    @classmethod
    def of_uid(cls, uid: int) -> OsUser:
        """The account of ``uid`` (a numeric name when it has no passwd entry)."""
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            return cls(str(uid), uid, uid)
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    @classmethod
    def current(cls) -> OsUser:
        return cls.of_uid(os.getuid())


def free_port() -> int:
    """A TCP port number nothing listens on now (the socket's name; the cluster itself
    listens on no TCP address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _conf(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class ThrowawayCluster:
    """One throwaway cluster: ``folder/data`` its data directory, ``folder`` its socket
    folder and log. Made by :func:`throwaway_cluster`."""

    def __init__(self, folder: Path, user: OsUser, pg_ctl: Path, port: int) -> None:
        self.folder = folder
        self.datadir = folder / "data"
        self.user = user
        self.pg_ctl = pg_ctl
        self.port = port
        self.log_file = folder / "server.log"
        self._started = False

    def _as_user(self) -> dict[str, Any]:
        if os.geteuid() == 0 and self.user.uid != 0:
            return {"user": self.user.uid, "group": self.user.gid, "extra_groups": []}
        return {}

    def _give(self, paths: Iterable[Path]) -> None:
        """As root: hand what was laid down to the cluster's user (never follows links)."""
        if not self._as_user():
            return
        for path in paths:
            os.lchown(path, self.user.uid, self.user.gid)

    def write_file(self, name: str, text: str) -> Path:
        """A new 0600 file in the folder, owned by the cluster's user (a config file its
        ``restore_command`` reads)."""
        path = self.folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        self._give([path])
        return path

    def lay_down(self, stream: Iterable[bytes]) -> int:
        """Extract the base backup into the data directory; the number of members."""
        prepare_datadir(self.datadir)
        members = lay_down(stream, self.datadir)
        self._give([self.datadir, *self.datadir.rglob("*")])
        return members

    def configure(self, restore_command: str, target: RecoveryTarget) -> None:
        """Recovery settings (``physical.configure_recovery``) and the throwaway's own:
        no TCP, the socket in the folder, local connections without a password, the log
        on stderr in English (its lines are read), no SSL files of the original."""
        configure_recovery(self.datadir, restore_command, target, self.port)
        hba = self.datadir / "pg_hba.conf"
        hba.write_text(
            "# strongroom throwaway cluster: its socket folder is 0700\nlocal all all trust\n"
        )
        conf = self.datadir / "postgresql.conf"
        if not conf.exists():  # Debian keeps it in /etc/postgresql: not in the backup
            conf.write_text("")
        settings = {
            "listen_addresses": "",
            "unix_socket_directories": str(self.folder),
            "hba_file": str(hba),
            "ident_file": str(self.datadir / "pg_ident.conf"),
            "external_pid_file": "",
            "logging_collector": "off",
            "log_min_messages": "warning",
            "lc_messages": "C",
            "ssl": "off",
            "hot_standby": "off",
            "cluster_name": "strongroom-throwaway",
        }
        (self.datadir / "pg_ident.conf").touch()
        lines = [f"{key} = {_conf(value)}" for key, value in settings.items()]
        with (self.datadir / "postgresql.auto.conf").open("a") as handle:
            handle.write("# strongroom throwaway cluster\n" + "\n".join(lines) + "\n")
        self._give(
            [hba, conf, self.datadir / "pg_ident.conf", self.datadir / "postgresql.auto.conf"]
        )

    def start(self, timeout: float = 3600.0) -> RecoveryOutcome:
        """Start the cluster and wait until recovery has ended and it was promoted;
        ``RestoreFailed`` with the server's reason when it stops instead."""
        command = [str(self.pg_ctl), "-D", str(self.datadir), "-l", str(self.log_file)]
        if not self.log_file.exists():
            self.log_file.touch(mode=0o600)
            self._give([self.log_file])
        self._started = True
        started = subprocess.run(
            [*command, "-W", "start"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.folder,
            **self._as_user(),
        )
        if started.returncode != 0:
            raise self._failed("the throwaway cluster did not start", started.stderr)
        deadline = time.monotonic() + timeout
        pid_seen = False
        while True:
            text = self.log_file.read_text(errors="replace")
            if READY in text:
                break
            if (self.datadir / "postmaster.pid").exists():
                pid_seen = True
            elif pid_seen or "FATAL" in text or "PANIC" in text:
                raise self._failed("recovery stopped", "")
            if time.monotonic() > deadline:
                raise RestoreFailed(f"recovery did not end within {timeout:.0f} s")
            time.sleep(0.1)
        last = _LAST.findall(text)
        stop_line = _STOP.findall(text)
        return RecoveryOutcome(
            last[-1].strip() if last else None,
            stop_line[0] if stop_line else None,
            self.log_file,
        )

    def _failed(self, prefix: str, fallback: str) -> RestoreFailed:
        """The server's reason (``physical._failure``: ``RecoveryEndedEarly`` for a target
        past the archived WAL); its log is removed with the folder, so its last lines go
        to the log (``-v``) and the message does not point at it."""
        error = _failure(prefix, self.log_file, fallback)
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        log.info("the throwaway cluster's log ended with:\n%s", "\n".join(text.splitlines()[-30:]))
        message = str(error).replace(f" (see {self.log_file})", " (its log: run with -v)")
        fetch = _FETCH_ERROR.findall(text)  # restore_command's own reason: it names the cause
        if fetch and type(error) is RestoreFailed:
            message = (
                f"{prefix}: restore_command (strongroom wal-fetch) failed: {fetch[-1].strip()}"
                " (its log: run with -v)"
            )
        return type(error)(message)

    def connect_url(self, database: str, roles: Iterable[str]) -> str:
        """A ``postgresql://`` URL to ``database`` through the socket, as the cluster's
        bootstrap superuser (found by connecting as the first of ``roles`` that exists)."""
        superuser = None
        for role in dict.fromkeys(r for r in roles if r):
            try:
                with psycopg.connect(
                    host=str(self.folder), port=self.port, dbname="template1", user=role
                ) as conn:
                    row = conn.execute("SELECT rolname FROM pg_roles WHERE oid = 10").fetchone()
            except psycopg.Error:
                continue
            superuser = str(row[0]) if row else role
            break
        if superuser is None:
            raise RestoreFailed(
                "cannot connect to the throwaway cluster: none of the roles tried exists in "
                "it (the destination's user, the OS user, postgres)"
            )
        from urllib.parse import quote

        return (
            f"postgresql://{quote(superuser, safe='')}@/{quote(database, safe='')}"
            f"?host={quote(str(self.folder), safe='')}&port={self.port}"
        )

    def stop(self) -> None:
        """Stop the server at once (``-m immediate``: nothing of it is kept); a server
        that does not go is killed."""
        if not self._started:
            return
        self._started = False
        pid_file = self.datadir / "postmaster.pid"
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                [
                    str(self.pg_ctl),
                    "-D",
                    str(self.datadir),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "30",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
                check=False,
                cwd=self.folder,
                **self._as_user(),
            )
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
            log.warning("the throwaway cluster's server %d did not stop: killed", pid)


@contextlib.contextmanager
def throwaway_cluster(server_version: str, user: OsUser) -> Iterator[ThrowawayCluster]:
    """A folder for a throwaway cluster of ``server_version`` run as ``user``; stopped and
    removed when the block ends, however it ends. ``ToolMissing`` without that version's
    ``pg_ctl``; ``UsageError`` when PostgreSQL would have to run as root."""
    if user.uid == 0:
        raise UsageError(
            "PostgreSQL does not run as root: give --os-user NAME (the owner of the "
            "server's data directory)"
        )
    pg_ctl = find_pg_ctl(server_version)
    folder = tempfiles.folder_for(user.uid, user.gid, "pitr-")
    cluster = ThrowawayCluster(folder, user, pg_ctl, free_port())
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            tempfiles.remove_folder(folder)
            log.info("throwaway cluster in %s removed", folder)
