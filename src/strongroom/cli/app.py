"""The strongroom command line: one Typer app, thin commands calling services."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Annotated

import typer
from typer.exceptions import TyperException

from strongroom import __version__, interrupts, tempfiles
from strongroom.cli.backup_cmd import backup
from strongroom.cli.cat_cmd import cat
from strongroom.cli.catalog_cmd import list_backups, show
from strongroom.cli.init_cmd import init
from strongroom.cli.logs import configure_logging
from strongroom.cli.maintenance_cmd import check, prune, stats
from strongroom.cli.ops_cmd import config_app, health, run, schedule
from strongroom.cli.output import stderr
from strongroom.cli.recover_cmd import recover
from strongroom.cli.restore_cmd import restore, rollback
from strongroom.cli.retention_cmd import forget_cmd, pin, unpin
from strongroom.cli.verify_cmd import verify
from strongroom.cli.wal_cmd import wal_fetch_cmd, wal_push_cmd
from strongroom.cli.web_cmd import reindex, serve, token_app, user_app
from strongroom.errors import StrongroomError, UsageError
from strongroom.redaction import redact_text

log = logging.getLogger("strongroom.cli")

UNEXPECTED_EXIT = 70
INTERRUPTED_EXIT = 130  # SIGINT; any signal N exits 128 + N (SIGTERM 143, SIGHUP 129)
STOPPED_CLEANLY = "stopped cleanly; nothing unfinished was recorded"

app = typer.Typer(
    name="strongroom",
    help="Encrypted, deduplicated, verified database backups.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"strongroom {__version__}")
        raise typer.Exit(0)


@app.callback()
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


app.command()(init)
app.command()(backup)
app.command("list")(list_backups)
app.command()(show)
app.command()(restore)
app.command()(rollback)
app.command()(recover)
app.command()(verify)
app.command()(cat)
app.command("forget")(forget_cmd)
app.command()(pin)
app.command()(unpin)
app.command()(prune)
app.command()(check)
app.command()(stats)
app.command()(run)
app.command()(schedule)
app.command()(health)
app.add_typer(config_app, name="config")
app.command()(serve)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.command()(reindex)
app.command("wal-push")(wal_push_cmd)
app.command("wal-fetch")(wal_fetch_cmd)


def _fail(message: str, code: int) -> None:
    interrupts.hold()  # from here on a signal does not cut the message short
    stderr.print(f"error: {redact_text(message)}", markup=False)
    sys.exit(code)


def _interrupted(exc: BaseException | None) -> None:
    """The one line for a command a signal stopped (``interrupts``: the cleanup has run)."""
    if isinstance(exc, interrupts.Interrupted):
        _fail(f"interrupted by {exc.name}; {exc.outcome or STOPPED_CLEANLY}", exc.exit_code)
    _fail(f"interrupted; {STOPPED_CLEANLY}", INTERRUPTED_EXIT)


def main() -> None:
    """Entry point: run the app; turn every failure into one line and an exit code.

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


if __name__ == "__main__":
    main()
