"""What both servers share: the run-as user, free ports, and the errors raised."""

from __future__ import annotations

import fcntl
import os
import pwd
import socket
import subprocess

RUN_AS = "strongroom-test"
"""The unprivileged system user the servers run as when we are root."""


class ServerUnavailable(RuntimeError):
    """No throwaway server could be had; the message says why and what to install."""


class ServerBinariesNotFound(ServerUnavailable):
    """The server binaries are not installed (and, for MariaDB, no fallback answered)."""


class ServerStartFailed(ServerUnavailable):
    """The binaries exist but no server started (after a few attempts)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_USERADD_LOCK = "/etc/.pwd.lock"
"""Shadow-utils' own lock file (never replaced, unlike ``/etc/passwd``); they lock it with
``fcntl`` record locks, which do not interact with the ``flock`` taken here."""


def ensure_system_user(name: str) -> pwd.struct_passwd:
    """The system user ``name``, created (no home, no login shell) if missing; needs root.

    Several processes may ask at once (``pytest -n 2`` workers each starting their servers,
    a benchmark beside the tests): creation is serialised by an ``flock`` on
    :data:`_USERADD_LOCK` and the user looked up again under it, so the second one finds
    the first one's user instead of failing in ``useradd`` ("user already exists", or
    "cannot lock /etc/passwd" while the first one's ``useradd`` holds it).
    """
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    fd = os.open(_USERADD_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return pwd.getpwnam(name)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                check=True,
                capture_output=True,
            )
            return pwd.getpwnam(name)


def run_as_user() -> pwd.struct_passwd | None:
    """:data:`RUN_AS` (created if missing) when we are root, else None (run as ourselves)."""
    return ensure_system_user(RUN_AS) if os.geteuid() == 0 else None
