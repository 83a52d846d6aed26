"""A bad value that only the environment gives (no configuration file) fails in one
`error:` line with exit 2, as the same value in the file does; it was exit 70 with
pydantic's multi-line report (found while making command loading lazy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import cli_fails, run_cli


@pytest.mark.parametrize("command", [("list",), ("health",)])
def test_a_bad_trusted_proxy_from_the_environment_is_one_line(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    env = {"STRONGROOM_REPO": str(tmp_path / "repo"), "STRONGROOM_TRUSTED_PROXIES": "notanip"}
    err = cli_fails(run_cli(*command, env=env), 2, r"trusted_proxies: 'notanip' is not an IP")
    assert "pydantic" not in err and "validation error" not in err
