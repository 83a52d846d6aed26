"""Shared test harness: real servers started by the tests, stopped by the tests."""

import pytest

from strongroom import redaction

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.mariadb",
    "tests.fixtures.s3",
]


@pytest.fixture(autouse=True)
def _own_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords a test registers for redaction (parsing a URL registers its password,
    e.g. "a") stay out of the next test's redaction: the registry is process-wide, so
    without this a test's result would depend on which tests ran before it."""
    for name, empty in (("_registered", set()), ("_pending", []), ("_chunks", []), ("_quiet", 0)):
        monkeypatch.setattr(redaction, name, empty, raising=False)
