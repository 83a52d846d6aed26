"""Exit codes and words every strongroom command line path shares (``cli.runner`` for
Typer, ``cli.wal_fast`` for PostgreSQL's archive and restore commands)."""

from __future__ import annotations

UNEXPECTED_EXIT = 70
INTERRUPTED_EXIT = 130  # SIGINT; any signal N exits 128 + N (SIGTERM 143, SIGHUP 129)
STOPPED_CLEANLY = "stopped cleanly; nothing unfinished was recorded"
