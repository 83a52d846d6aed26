"""The strongroom command line: one Typer app, thin commands calling services.

Commands are loaded lazily: ``main()`` finds the command's name in ``sys.argv`` (after the
global options of ``cli.runner``) and imports and registers only that command's module, so
``strongroom list`` does not pay for importing ``backup``'s database drivers or the web
service. Whenever the command line is not that plain case (no command, ``--help`` before
it, an unknown or misspelt name, an option the scan does not know) every command is
registered, in the order of ``COMMANDS``: the full help and click's "No such command …
Did you mean …?" are those of the whole app; ``--version`` with nothing but global options
is answered without Typer. ``app`` (``from strongroom.cli.app import app``) is the whole
app, built on first access; once built, ``main()`` runs it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from strongroom.cli.failures import INTERRUPTED_EXIT, STOPPED_CLEANLY, UNEXPECTED_EXIT

if TYPE_CHECKING:
    import typer

__all__ = ["COMMANDS", "INTERRUPTED_EXIT", "STOPPED_CLEANLY", "UNEXPECTED_EXIT", "app", "main"]

HELP = "Encrypted, deduplicated, verified database backups."

# name -> (module, attribute, is a sub-Typer): the order is the order of the full help.
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "init": ("strongroom.cli.init_cmd", "init", False),
    "backup": ("strongroom.cli.backup_cmd", "backup", False),
    "list": ("strongroom.cli.catalog_cmd", "list_backups", False),
    "show": ("strongroom.cli.catalog_cmd", "show", False),
    "restore": ("strongroom.cli.restore_cmd", "restore", False),
    "rollback": ("strongroom.cli.restore_cmd", "rollback", False),
    "recover": ("strongroom.cli.recover_cmd", "recover", False),
    "verify": ("strongroom.cli.verify_cmd", "verify", False),
    "cat": ("strongroom.cli.cat_cmd", "cat", False),
    "forget": ("strongroom.cli.retention_cmd", "forget_cmd", False),
    "pin": ("strongroom.cli.retention_cmd", "pin", False),
    "unpin": ("strongroom.cli.retention_cmd", "unpin", False),
    "prune": ("strongroom.cli.maintenance_cmd", "prune", False),
    "check": ("strongroom.cli.maintenance_cmd", "check", False),
    "stats": ("strongroom.cli.maintenance_cmd", "stats", False),
    "index": ("strongroom.cli.index_cmd", "index_app", True),
    "run": ("strongroom.cli.ops_cmd", "run", False),
    "schedule": ("strongroom.cli.ops_cmd", "schedule", False),
    "health": ("strongroom.cli.ops_cmd", "health", False),
    "config": ("strongroom.cli.ops_cmd", "config_app", True),
    "serve": ("strongroom.cli.web_cmd", "serve", False),
    "user": ("strongroom.cli.web_cmd", "user_app", True),
    "token": ("strongroom.cli.web_cmd", "token_app", True),
    "reindex": ("strongroom.cli.web_cmd", "reindex", False),
    "wal-push": ("strongroom.cli.wal_cmd", "wal_push_cmd", False),
    "wal-fetch": ("strongroom.cli.wal_cmd", "wal_fetch_cmd", False),
    "wal-receive": ("strongroom.cli.wal_receive_cmd", "wal_receive_cmd", False),
    "wal-upload": ("strongroom.cli.wal_cmd", "wal_upload_cmd", False),
    "restore-point": ("strongroom.cli.restore_point_cmd", "restore_point", False),
}

# The global options of ``cli.runner._global``: flags, and the one that takes a value.
_GLOBAL_FLAGS = frozenset({"-v", "--verbose", "--version"})
_GLOBAL_WITH_VALUE = "--log-format"

_whole: typer.Typer | None = None  # the app with every command, once built

app: typer.Typer  # the whole app, built by ``__getattr__`` on first access


def _register(target: typer.Typer, name: str) -> None:
    module, attribute, is_group = COMMANDS[name]
    # __import__ rather than importlib.import_module: -X importtime shows the module
    obj = getattr(__import__(module, fromlist=[attribute]), attribute)
    if is_group:
        target.add_typer(obj, name=name)
    else:
        target.command(name)(obj)


def whole_app() -> typer.Typer:
    """The app with every command (built once)."""
    global _whole
    if _whole is None:
        from strongroom.cli.runner import new_app

        built = new_app(HELP)
        for name in COMMANDS:
            _register(built, name)
        _whole = built
    return _whole


def __getattr__(name: str) -> Any:
    if name == "app":
        return whole_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def command_named(argv: list[str]) -> tuple[str | None, bool]:
    """The command ``argv`` (without the program) runs, if that is plain, and whether the
    global options before it ask for ``--version`` (and nothing but global options).

    ``None``: no command, or the line is not plain (``--help`` or an unknown option before
    the command, a missing ``--log-format`` value, an unknown or misspelt command name)."""
    version = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _GLOBAL_FLAGS:
            version = version or arg == "--version"
            i += 1
        elif arg == _GLOBAL_WITH_VALUE:
            if i + 1 >= len(argv):
                return None, False
            i += 2
        elif arg.startswith(_GLOBAL_WITH_VALUE + "="):
            i += 1
        elif arg.startswith("-"):
            return None, False
        else:
            return (arg if arg in COMMANDS else None), False
    return None, version


def app_for(argv: list[str]) -> typer.Typer:
    """The app to run ``argv``: the whole app unless the line names one command plainly
    (then only that command)."""
    if _whole is not None:
        return _whole
    name, _ = command_named(argv)
    if name is None:
        return whole_app()
    from strongroom.cli.runner import new_app

    lean = new_app(HELP)
    _register(lean, name)
    return lean


def main() -> None:
    """Entry point of the whole command line (see ``cli.runner.run``)."""
    argv = sys.argv[1:]
    if _whole is None and command_named(argv) == (None, True):
        # only global options, one of them --version (eager: it answers before the
        # others are looked at, as cli.runner's): no need for Typer
        from strongroom import __version__

        print(f"strongroom {__version__}")
        sys.exit(0)
    from strongroom.cli.runner import run

    run(app_for(argv))


if __name__ == "__main__":
    main()
