"""Shared test harness: real servers started by the tests, stopped by the tests."""

import compileall
from pathlib import Path

import pytest

from strongroom import redaction

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.mariadb",
    "tests.fixtures.s3",
]


def pytest_configure(config: pytest.Config) -> None:
    """Compile src/strongroom once, before the workers start: every strongroom command a
    test runs as a subprocess otherwise compiles every module it imports from source
    when PYTHONDONTWRITEBYTECODE is set (about 1 s of CPU per full command line, 50 ms
    per wal-push/wal-fetch; measured on the 2-core CI host)."""
    if not hasattr(config, "workerinput"):
        source = Path(__file__).resolve().parent.parent / "src" / "strongroom"
        compileall.compile_dir(source, quiet=1, workers=0)


@pytest.fixture(autouse=True)
def _own_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords a test registers for redaction (parsing a URL registers its password,
    e.g. "a") stay out of the next test's redaction: the registry is process-wide, so
    without this a test's result would depend on which tests ran before it."""
    for name, empty in (("_registered", set()), ("_pending", []), ("_chunks", []), ("_quiet", 0)):
        monkeypatch.setattr(redaction, name, empty, raising=False)
