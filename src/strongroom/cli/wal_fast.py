"""``wal-push`` and ``wal-fetch`` without Typer, Rich or pydantic.

PostgreSQL starts ``archive_command`` once per 16 MB WAL segment, so its start-up is paid
thousands of times a day: importing Typer, Rich and pydantic alone takes longer than
archiving the segment. ``run_light`` reads the command line by hand, the settings with
``Sources.wal_location`` (tomllib, the same order as every command), and runs the same
code as ``cli.wal_cmd``. Anything it does not recognise (``--help``, an unknown option, a
missing argument, a global option, a bad ``STRONGROOM_LOG_FORMAT``) returns ``False``, and
``cli.entry`` hands the command to Typer, which gives the usual answer: so the exit codes
and error lines are those of the whole command line.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from strongroom.cli.failures import INTERRUPTED_EXIT, STOPPED_CLEANLY, UNEXPECTED_EXIT
from strongroom.cli.wal_quick import WalArgs, parse, remember, settings_key

log = logging.getLogger("strongroom.cli")


def push(
    path: Path,
    stream: str | None,
    repo: str | None,
    key_file: Path | None,
    s3_endpoint: str | None,
    config: str | None,
    spool: str | None,
    on_spool: Callable[[Path], None] | None = None,
) -> None:
    """``wal-push``: into the spool when one is configured, else into the repository.
    ``on_spool``: called with the spool folder once the settings name one."""
    from strongroom.services.settings_sources import Sources

    location, spool_dir = Sources.load(config).wal_location(repo, key_file, s3_endpoint, spool)
    if spool_dir:
        from strongroom.services.wal_spool import push_file

        folder = Path(spool_dir).expanduser()
        if on_spool is not None:
            on_spool(folder)
        push_file(folder, path, stream)
        return
    from strongroom.services.wal import wal_push

    wal_push(location.open(), path, stream=stream)


def fetch(
    file_name: str,
    destination: Path,
    stream: str | None,
    snapshots: bool,
    repo: str | None,
    key_file: Path | None,
    s3_endpoint: str | None,
    config: str | None,
    spool: str | None,
) -> bool:
    """``wal-fetch``: from the spool when the file still waits there, else from the
    repository; ``False`` when it was never archived."""
    from strongroom.services.settings_sources import Sources
    from strongroom.services.wal import check_destination, wal_fetch
    from strongroom.services.wal_spool import fetch_file

    check_destination(destination)
    location, spool_dir = Sources.load(config).wal_location(repo, key_file, s3_endpoint, spool)
    if spool_dir and fetch_file(Path(spool_dir).expanduser(), file_name, destination, stream):
        return True
    repository = location.open()
    return wal_fetch(repository, file_name, destination, stream=stream, snapshots=snapshots)


def _execute(args: WalArgs) -> int:
    key_file = args.get("--key-file")
    common = (
        args.get("--repo"),
        Path(key_file) if key_file is not None else None,
        args.get("--s3-endpoint"),
        args.get("--config"),
        args.get("--spool"),
    )
    if args.command == "wal-push":
        key = settings_key(args.options)

        def record(folder: Path) -> None:  # for cli.wal_quick, when nothing changed meanwhile
            if key is not None and settings_key(args.options) == key:
                remember(key, str(folder))

        push(Path(args.arguments[0]), args.get("--stream"), *common, on_spool=record)
        return 0
    name, destination = args.arguments
    found = fetch(name, Path(destination), args.get("--stream"), "--snapshots" in args.flags,
                  *common)  # fmt: skip
    return 0 if found else 1


def _fail(message: str, code: int) -> None:
    from strongroom import interrupts
    from strongroom.redaction import redact_text

    interrupts.hold()  # from here on a signal does not cut the message short
    sys.stderr.write(f"error: {redact_text(message)}\n")
    sys.stderr.flush()
    sys.exit(code)


def run_light(argv: list[str]) -> None:
    """Run ``argv`` (the command and its arguments) and exit, or return when it is not a
    call this path takes (then Typer must answer). Every failure is one ``error:`` line and
    the exit code ``cli.runner`` would give."""
    args = parse(argv)
    log_format = os.environ.get("STRONGROOM_LOG_FORMAT") or "human"
    if args is None or log_format not in ("human", "json"):
        return
    from strongroom import interrupts, tempfiles
    from strongroom.cli.logs import configure_logging
    from strongroom.errors import StrongroomError
    from strongroom.redaction import redact_text

    interrupts.install()
    try:
        tempfiles.sweep()
        configure_logging(logging.WARNING, log_format)
        code = _execute(args)
    except StrongroomError as exc:
        _fail(exc.message, exc.exit_code)
    except KeyboardInterrupt as exc:
        if isinstance(exc, interrupts.Interrupted):
            _fail(f"interrupted by {exc.name}; {exc.outcome or STOPPED_CLEANLY}", exc.exit_code)
        _fail(f"interrupted; {STOPPED_CLEANLY}", INTERRUPTED_EXIT)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)
    except Exception as exc:
        log.info("unexpected failure:\n%s", redact_text(traceback.format_exc()))
        _fail(
            f"unexpected failure ({type(exc).__name__}): {exc}; run with -v for details",
            UNEXPECTED_EXIT,
        )
    interrupts.hold()
    sys.exit(code)
