"""Shared test harness: real servers started by the tests, stopped by the tests."""

import compileall
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom import redaction

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.mariadb",
    "tests.fixtures.s3",
]


def _default_signal_dispositions() -> None:
    """Undo ignored SIGINT/SIGQUIT/SIGHUP inherited from how the suite was started.

    A shell runs a background job (``cmd &`` in a script, no job control) with SIGINT and
    SIGQUIT ignored, and ``nohup`` ignores SIGHUP; ignored signals pass on to every child,
    and strongroom rightly leaves a signal that was ignored at start ignored
    (``interrupts.install``). The tests that stop commands with SIGINT or SIGHUP then
    failed (and left a fed ``pipe_into`` parent spinning): 11 of them in a clean-clone run
    started as ``(nohup bash .ci/run &)``. Each test process (and so each command it
    starts) gets the default dispositions back."""
    for signum, default in (
        (signal.SIGINT, signal.default_int_handler),
        (signal.SIGQUIT, signal.SIG_DFL),
        (signal.SIGHUP, signal.SIG_DFL),
    ):
        if signal.getsignal(signum) is signal.SIG_IGN:
            signal.signal(signum, default)


def pytest_configure(config: pytest.Config) -> None:
    """Default signal dispositions in every test process (above). Compile src/strongroom
    once, before the workers start: every strongroom command a test runs as a subprocess
    otherwise compiles every module it imports from source when PYTHONDONTWRITEBYTECODE
    is set (about 1 s of CPU per full command line, 50 ms per wal-push/wal-fetch;
    measured on the 2-core CI host)."""
    _default_signal_dispositions()
    if not hasattr(config, "workerinput"):
        source = Path(__file__).resolve().parent.parent / "src" / "strongroom"
        compileall.compile_dir(source, quiet=1, workers=0)


# The longest test modules, longest first (seconds of one xdist worker, measured with
# --junitxml on the shared 2-core host on 2026-12-01 and scaled to an unloaded run; re-measure
# when a module grows). With `--dist loadfile` a module runs on one worker: these run first
# (pyproject's addopts has --no-loadscope-reorder) so the modules handed out last are short
# and both workers finish together. xdist's own order (by number of tests, most first) hands
# out few-test modules that take a minute or more last, such as test_wal_faults (5 tests,
# ~90 s), test_cli_prune_concurrency (1 test, ~45 s) or test_wal_receive (2 tests, ~35 s).
LONGEST_FIRST: tuple[str, ...] = (
    "tests/cli/test_cli_restructure_attacks.py",
    "tests/cli/test_cli_safe_restore.py",
    "tests/wal/test_wal_faults.py",
    "tests/web/test_dashboard_browser_attacks.py",
    "tests/cli/test_cli_maintenance.py",
    "tests/wal/test_pitr_targets_attacks.py",
    "tests/cli/test_cli_urls.py",
    "tests/cli/test_cli_sqlite.py",
    "tests/wal/test_pitr_attacks.py",
    "tests/cli/test_cli_accounts.py",
    "tests/engines/postgresql/test_fidelity.py",
    "tests/web/test_auth.py",
    "tests/engines/postgresql/test_fidelity_attacks.py",
    "tests/cli/test_cli_ops.py",
    "tests/cli/test_settings_attacks.py",
    "tests/cli/test_cli_prune_concurrency.py",
    "tests/wal/test_pitr.py",
    "tests/cli/test_cli_postgres.py",
    "tests/cli/test_cli_settings_sources.py",
    "tests/cli/test_cli_messages.py",
    "tests/test_issue14_attacks.py",
    "tests/wal/test_pitr_database_attacks.py",
    "tests/wal/test_wal_receive.py",
    "tests/wal/test_pitr_database.py",
    "tests/wal/test_wal_commands.py",
    "tests/wal/test_wal_spool.py",
    "tests/wal/test_pitr_targets.py",
)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules in :data:`LONGEST_FIRST` first, in its order; then the others, most tests
    first (xdist's default); a module's tests stay together and in their order."""
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    counts = Counter(item.nodeid.split("::", 1)[0] for item in items)

    def key(item: pytest.Item) -> tuple[int, int, str]:
        path = item.nodeid.split("::", 1)[0]
        return (rank.get(path, len(rank)), -counts[path], path)

    items.sort(key=key)


@pytest.fixture(autouse=True)
def _own_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords a test registers for redaction (parsing a URL registers its password,
    e.g. "a") stay out of the next test's redaction: the registry is process-wide, so
    without this a test's result would depend on which tests ran before it."""
    for name, empty in (("_registered", set()), ("_pending", []), ("_chunks", []), ("_quiet", 0)):
        monkeypatch.setattr(redaction, name, empty, raising=False)


@pytest.fixture(autouse=True)
def _own_environment() -> Iterator[None]:
    """Variables a test sets in ``os.environ`` itself (``STRONGROOM_CACHE_DIR`` in a few
    repository tests) end with it: one leaked into a later MySQL CLI test of the same
    worker, whose index cache then lived in another test's temporary folder."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)
