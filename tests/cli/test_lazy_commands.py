"""Lazy command loading (cli/app.py): a command imports its own module only, so every
``strongroom`` process does not pay for importing the whole command line (psycopg, the
web stack, notifications, metrics), and the command line reads as it did with every
command registered: the same help, the same "No such command … Did you mean …?"."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from strongroom.cli import app as cli
from tests.helpers import REPO_ROOT, make_sqlite_db, repository_env

# What a command that does not talk to a database server, serve the web or notify must
# not import (each costs 0.1-0.7 s of CPU at start-up).
HEAVY = (
    "psycopg",
    "pymysql",
    "prometheus_client",
    "strongroom.web",
    "strongroom.services.notifications",
    "strongroom.services.metrics",
    "strongroom.engines.postgresql.physical",
)

# Run ``main()`` as the console script does (cli.entry), then print what was imported.
_PROBE = (
    "import json, sys\n"
    "sys.argv = ['strongroom', *sys.argv[1:]]\n"
    "from strongroom.cli.entry import main\n"
    "try:\n"
    "    main()\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n"
)


def _imports(*args: str, env: dict[str, str] | None = None) -> tuple[int, set[str], str]:
    """Exit code, imported modules and output of ``strongroom ARGS`` (a fresh process)."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=120,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["code"], set(report["modules"]), result.stdout + result.stderr


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m in HEAVY or m.startswith("strongroom.web."))


def test_backup_help_imports_no_driver_web_notifications_or_metrics():
    code, modules, out = _imports("backup", "--help")
    assert code == 0 and "Usage: strongroom backup" in out, out
    assert _heavy(modules) == []
    assert "strongroom.cli.restore_cmd" not in modules  # another command's module


def test_list_on_an_empty_repository_imports_only_what_it_needs(tmp_path):
    env = repository_env(tmp_path)
    init = subprocess.run(
        [sys.executable, "-m", "strongroom.cli.app", "init"],
        capture_output=True,
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        check=False,
    )
    assert init.returncode == 0, init.stderr
    code, modules, out = _imports("list", env=env)
    assert code == 0, out
    assert _heavy(modules) == []
    assert "strongroom.cli.backup_cmd" not in modules
    # no configuration file: the repository's fields are read without pydantic's models
    assert "strongroom.config" not in modules


def test_a_small_sqlite_backup_imports_no_driver_configuration_or_notifier(tmp_path):
    """Without a configuration file or a channel's variable nothing is notified: the
    backup imports neither the configuration's models nor the notifiers."""
    env = repository_env(tmp_path)
    db = make_sqlite_db(tmp_path / "shop.db", users=20, orders=20)
    assert _imports("init", env=env)[0] == 0
    code, modules, out = _imports("backup", f"sqlite:///{db}", env=env)
    assert code == 0 and "complete" in out, out
    assert _heavy(modules) == []
    assert "strongroom.config" not in modules


def test_a_variable_of_another_section_is_still_validated_by_list(tmp_path):
    """``list`` skips the whole ``Settings`` only when there is nothing else to validate:
    a bad SMTP port of the scripts' email channel fails it as before (exit 2)."""
    env = {
        **repository_env(tmp_path),
        "BACKUP_NOTIFICATION_EMAIL": "ops@example.com",
        "SMTP_HOST": "mail.example.com",
        "SMTP_PORT": "nope",
    }
    code, _, out = _imports("list", env=env)
    assert code == 2
    assert "error: SMTP_PORT must be a port number (1-65535), got 'nope'" in out


def test_version_imports_no_command():
    code, modules, out = _imports("-v", "--version")
    assert code == 0 and out.startswith("strongroom "), out
    assert not any(m.endswith("_cmd") for m in modules), sorted(modules)
    assert "pydantic" not in modules and "typer" not in modules


@pytest.mark.parametrize(
    "argv",
    [["backup", "--help"], ["index", "--help"], ["--log-format=json", "config", "--help"]],
)
def test_one_command_reads_as_in_the_whole_app(argv):
    """The help of one lazily registered command is that of the whole app's."""
    whole_first = "from strongroom.cli import app as cli\ncli.app\nimport sys\n"
    run = "sys.argv = ['strongroom', *sys.argv[1:]]\ncli.main()\n"
    env = {**os.environ, "COLUMNS": "120"}
    lazy, whole = (
        subprocess.run(
            [sys.executable, "-c", prefix + run, *argv],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env=env,
            check=False,
        )
        for prefix in ("from strongroom.cli import app as cli\nimport sys\n", whole_first)
    )
    assert lazy.returncode == whole.returncode == 0, lazy.stderr + whole.stderr
    assert lazy.stdout == whole.stdout and "Usage: strongroom " in lazy.stdout


def test_a_misspelt_command_is_suggested_from_every_command():
    result = subprocess.run(
        [sys.executable, "-m", "strongroom.cli.app", "-v", "bakcup"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(
        "error: No such command 'bakcup'. Did you mean 'backup'? (see "
    ), result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], (None, False)),
        (["list"], ("list", False)),
        (["-v", "--log-format", "json", "backup", "--help"], ("backup", False)),
        (["--log-format=json", "--verbose", "wal-receive"], ("wal-receive", False)),
        (["--version"], (None, True)),
        (["-v", "--version", "--log-format", "json"], (None, True)),
        (["--version", "list"], ("list", False)),
        (["--help"], (None, False)),  # the full help
        (["--help", "backup"], (None, False)),
        (["--version", "--help"], (None, False)),
        (["--log-format"], (None, False)),  # click says the value is missing
        (["--log-format", "list"], (None, False)),  # "list" is the value
        (["-vv", "list"], (None, False)),  # not known to the scan: the whole app decides
        (["--", "list"], (None, False)),
        (["bakcup"], (None, False)),  # click suggests from every command
        (["help"], (None, False)),
    ],
)
def test_the_command_is_found_only_when_plain(argv, expected):
    assert cli.command_named(argv) == expected


def test_every_command_of_the_table_is_registered_in_order():
    """The whole app (``app``) has the table's commands, in its order (Typer lists the
    commands before the sub-Typers, as when they were registered one by one)."""
    from typer.main import get_command

    group = get_command(cli.app)
    commands = [name for name, (_, _, sub) in cli.COMMANDS.items() if not sub]
    groups = [name for name, (_, _, sub) in cli.COMMANDS.items() if sub]
    assert list(group.commands) == commands + groups  # type: ignore[attr-defined]
    assert cli.app is cli.whole_app()


def test_wal_receive_names_the_engines_default_slot():
    """cli/wal_receive_cmd.py repeats the default slot's name so that importing it (the
    whole app's --help) does not import psycopg."""
    from strongroom.cli import wal_receive_cmd
    from strongroom.engines.postgresql.receivewal import DEFAULT_SLOT

    assert wal_receive_cmd.DEFAULT_SLOT == DEFAULT_SLOT


def test_the_whole_help_imports_no_database_driver():
    code, modules, out = _imports("--help")
    assert code == 0 and "wal-receive" in out, out
    assert _heavy(modules) == []
