"""The ``strongroom`` console script: ``wal-push`` and ``wal-fetch`` take a light path.

PostgreSQL runs ``archive_command`` once per 16 MB WAL segment and ``restore_command`` once
per segment replayed, so their start-up is paid thousands of times a day: importing the
whole command line (every command, psycopg, PyMySQL, the web service's imports) costs about
0.5 s, the WAL commands alone about 0.1 s. Everything else goes to ``cli.app``. Both paths
share ``cli.runner`` (global options, one ``error:`` line, exit codes, signals).
"""

from __future__ import annotations

import sys

WAL_COMMANDS = ("wal-push", "wal-fetch")


def main() -> None:
    """Run the command line; the WAL commands without importing the other commands."""
    if len(sys.argv) > 1 and sys.argv[1] in WAL_COMMANDS:
        from strongroom.cli.runner import new_app, run
        from strongroom.cli.wal_cmd import wal_fetch_cmd, wal_push_cmd

        app = new_app("Archive and fetch WAL files (PostgreSQL's archive/restore_command).")
        app.command("wal-push")(wal_push_cmd)
        app.command("wal-fetch")(wal_fetch_cmd)
        run(app)
        return
    from strongroom.cli.app import main as whole

    whole()


if __name__ == "__main__":
    main()
