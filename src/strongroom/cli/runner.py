"""Running a Typer app as strongroom's command line: the global options, one ``error:``
line and a documented exit code for every failure, signals through their cleanup.

Shared by the whole command line (``cli.app``) and the light one that PostgreSQL runs for
every WAL segment (``cli.entry``: ``wal-push``/``wal-fetch`` without importing every
command and database driver)."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Annotated

import typer
from typer.exceptions import TyperException

from strongroom import __version__, interrupts, tempfiles
from strongroom.cli.failures import INTERRUPTED_EXIT, STOPPED_CLEANLY, UNEXPECTED_EXIT
from strongroom.cli.logs import configure_logging
from strongroom.cli.output import stderr
from strongroom.errors import StrongroomError, UsageError
from strongroom.redaction import redact_text

log = logging.getLogger("strongroom.cli")

__all__ = ["INTERRUPTED_EXIT", "STOPPED_CLEANLY", "UNEXPECTED_EXIT", "new_app", "run"]


def new_app(help_text: str) -> typer.Typer:
    """A Typer app with strongroom's settings and global options (-v, --version,
    --log-format)."""
    app = typer.Typer(
        name="strongroom",
        help=help_text,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    app.callback()(_global)
    return app


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"strongroom {__version__}")
        raise typer.Exit(0)


def _global(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More log output.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version.", is_eager=True, callback=_print_version
        ),
    ] = False,
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            envvar="STRONGROOM_LOG_FORMAT",
            help="human, or json (one object per line with backup_id and target).",
        ),
    ] = "human",
) -> None:
    if log_format not in ("human", "json"):
        raise UsageError("--log-format must be human or json")
    configure_logging(logging.INFO if verbose else logging.WARNING, log_format)


def _fail(message: str, code: int) -> None:
    interrupts.hold()  # from here on a signal does not cut the message short
    stderr.print(f"error: {redact_text(message)}", markup=False)
    sys.exit(code)


def _interrupted(exc: BaseException | None) -> None:
    """The one line for a command a signal stopped (``interrupts``: the cleanup has run)."""
    if isinstance(exc, interrupts.Interrupted):
        _fail(f"interrupted by {exc.name}; {exc.outcome or STOPPED_CLEANLY}", exc.exit_code)
    _fail(f"interrupted; {STOPPED_CLEANLY}", INTERRUPTED_EXIT)


def run(app: typer.Typer) -> None:
    """Run ``app``; turn every failure into one line and an exit code.

    SIGINT, SIGTERM and SIGHUP stop a command through its cleanup (``interrupts``): one
    ``error:`` line, exit 128 + the signal's number. Temp folders of strongroom processes
    that died are removed first (``tempfiles.sweep``)."""
    interrupts.install()
    try:
        tempfiles.sweep()
        result = app(standalone_mode=False)
    except typer.Abort:
        if interrupts.last() is not None:  # a signal at a prompt
            _interrupted(interrupts.last())
        _fail("aborted", INTERRUPTED_EXIT)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except TyperException as exc:  # usage errors (unknown option, missing value…): one line
        format_message = getattr(exc, "format_message", None)
        message = format_message() if callable(format_message) else str(exc)
        if not message.strip():  # no_args_is_help: the help went to stdout already
            message = "no command given"
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            message += f" (see {ctx.command_path} --help)"
        _fail(message, int(getattr(exc, "exit_code", 2)))
    except StrongroomError as exc:
        _fail(exc.message, exc.exit_code)
    except KeyboardInterrupt as exc:
        _interrupted(exc)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)
    except Exception as exc:
        # -v shows INFO: the details the line below promises
        log.info("unexpected failure:\n%s", redact_text(traceback.format_exc()))
        _fail(
            f"unexpected failure ({type(exc).__name__}): {exc}; run with -v for details",
            UNEXPECTED_EXIT,
        )
    interrupts.hold()
    code = result if isinstance(result, int) else 0
    if code == INTERRUPTED_EXIT and interrupts.last() is not None:
        _interrupted(interrupts.last())  # typer turned the interrupt into exit code 130
    sys.exit(code)
