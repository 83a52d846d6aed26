"""Shared test harness: real servers started by the tests, stopped by the tests."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.mariadb",
    "tests.fixtures.s3",
]
