"""The ``strongroom`` console script: ``wal-push`` and ``wal-fetch`` take a light path.

PostgreSQL runs ``archive_command`` once per 16 MB WAL segment and ``restore_command`` once
per segment replayed, so their start-up is paid thousands of times a day: importing the
whole command line (every command, psycopg, PyMySQL, the web service's imports) costs about
0.5 s. ``cli.wal_quick`` pushes into the spool importing nothing but ``os`` (when the last
push recorded the same settings), ``cli.wal_fast`` runs a plain call of them without Typer,
Rich or pydantic; anything else it leaves to the small Typer app below (same options,
``cli.runner``'s error line and exit codes). Everything else goes to ``cli.app``.
"""

from __future__ import annotations

import sys

WAL_COMMANDS = ("wal-push", "wal-fetch", "wal-upload")


def main() -> None:
    """Run the command line; the WAL commands without importing the other commands."""
    if len(sys.argv) > 1 and sys.argv[1] in WAL_COMMANDS:
        if sys.argv[1] == "wal-push":  # into the spool, with the settings of the last push
            from strongroom.cli.wal_quick import run_quick

            run_quick(sys.argv[1:])  # exits, unless the push is not the plain case
        from strongroom.cli.wal_fast import run_light

        run_light(sys.argv[1:])  # exits, unless Typer must answer (--help, a bad option…)
        from strongroom.cli.runner import new_app, run
        from strongroom.cli.wal_cmd import wal_fetch_cmd, wal_push_cmd, wal_upload_cmd

        app = new_app("Archive and fetch WAL files (PostgreSQL's archive/restore_command).")
        app.command("wal-push")(wal_push_cmd)
        app.command("wal-fetch")(wal_fetch_cmd)
        app.command("wal-upload")(wal_upload_cmd)
        run(app)
        return
    from strongroom.cli.app import main as whole

    whole()


if __name__ == "__main__":
    main()
