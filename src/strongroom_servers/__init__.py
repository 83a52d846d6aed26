"""Throwaway PostgreSQL and MariaDB servers for strongroom's tests and benchmarks.

Each server is started from the machine's server binaries into a fresh temporary folder, on
a free loopback port, with password authentication (user ``strongroom``, password
``s3cret-pw``); as root it runs as the unprivileged system user ``strongroom-test``
(created if missing). Stopping it removes its files; every server started by
:func:`postgres.start_server` or :func:`mariadb.start_server` is also stopped at interpreter
exit. A PostgreSQL the machine already runs is never used. MariaDB has one exception: when
no throwaway server can be started, :func:`mariadb.start_server` falls back to the machine's
MariaDB on 127.0.0.1:3306 (root without a password) and creates the same user there.

Nothing here depends on pytest: ``tests/fixtures/`` wraps these servers in fixtures (and
turns :class:`ServerUnavailable` into ``pytest.fail``), ``bench/`` starts them directly.
This package is not part of strongroom's backup tool and nothing in ``strongroom`` imports
it.

* :mod:`strongroom_servers.postgres`: :class:`~strongroom_servers.postgres.PgServer`,
  :func:`~strongroom_servers.postgres.start_server`,
  :func:`~strongroom_servers.postgres.find_server_bin_dir`.
* :mod:`strongroom_servers.mariadb`: :class:`~strongroom_servers.mariadb.MariaDbServer`,
  :func:`~strongroom_servers.mariadb.start_server`.
"""

from __future__ import annotations

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
    "RUN_AS",
    "ServerBinariesNotFound",
    "ServerStartFailed",
    "ServerUnavailable",
    "ensure_system_user",
    "free_port",
    "run_as_user",
]
