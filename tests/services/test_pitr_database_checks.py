"""The point-in-time database restore's checks that need no server: table names are read
before anything is recovered, and (as root) the OS user who will run restore_command must
read the configuration, key file and repository."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.cli.pitr_database_cmd import _check_user_reads
from strongroom.engines import open_engine
from strongroom.engines.postgresql.throwaway import OsUser
from strongroom.errors import UsageError
from strongroom.services.pitr_database_plan import check_tables


@pytest.mark.parametrize("name", ['public."Orders', "", ".x", '"a"b'])
def test_an_unreadable_table_name_is_refused_before_recovery(name: str) -> None:
    engine = open_engine("postgresql://u:s3cret@127.0.0.1:1/shop")
    with pytest.raises(UsageError, match="cannot read table name") as caught:
        check_tables(engine, [name], None, look=False)
    assert "s3cret" not in str(caught.value)


def test_readable_names_pass_without_looking_at_the_server() -> None:
    engine = open_engine("postgresql://u@127.0.0.1:1/shop")  # nothing listens: not looked at
    check_tables(engine, ['"Sch.ema"."we.ird ""T"""', "Orders", "a.b"], "side", look=False)


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder every user may enter (pytest's tmp_path is under a 0700 folder)."""
    folder = Path(tempfile.mkdtemp(prefix="strongroom-reads-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_as_root_a_user_who_cannot_read_the_key_is_named(open_folder: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("as root only")
    nobody = OsUser.named(pwd.getpwnam("nobody").pw_name)
    tmp_path = open_folder
    config = tmp_path / "strongroom.toml"
    config.write_text("")
    config.chmod(0o644)
    key = tmp_path / "repo.key"
    key.write_text("secret")
    key.chmod(0o600)
    repo = tmp_path / "repo"
    repo.mkdir(mode=0o755)
    _check_user_reads(nobody, [config, repo])  # readable: passes
    with pytest.raises(UsageError, match=f"nobody .* cannot read {key}"):
        _check_user_reads(nobody, [config, key, repo])
    repo.chmod(0o700)
    with pytest.raises(UsageError, match=f"cannot read {repo}"):
        _check_user_reads(nobody, [config, repo])
