"""forget / pin / unpin as a user runs them (SQLite, local repository)."""

import json
import re

import pytest

from tests.helpers import cli_fails as _fails
from tests.helpers import cli_ok as _ok
from tests.helpers import make_sqlite_db, repository_env, run_cli


@pytest.fixture()
def env(tmp_path):
    return repository_env(tmp_path)


@pytest.fixture()
def three_backups(tmp_path, env):
    db = make_sqlite_db(tmp_path / "shop.db", users=300, orders=600)
    _ok(run_cli("init", env=env))
    ids = []
    for tag in ("a", "b", "c"):
        out = _ok(run_cli("backup", str(db), "--tag", tag, env=env))
        ids.append(re.search(r"backup (\S+) complete", out).group(1))
    return ids


def _decisions(document):
    return {b["id"]: (b["action"], tuple(b["reasons"])) for b in document["backups"]}


def test_forget_dry_run_then_real_with_the_default_policy(env, three_backups):
    oldest, middle, newest = three_backups
    out = _ok(run_cli("forget", "--dry-run", env=env))
    assert "7 daily, 4 weekly, 12 monthly (from default)" in out
    assert re.search(rf"keep\s+{newest}.*daily 1 of 7, weekly 1 of 4, monthly 1 of 12", out)
    assert re.search(rf"forget\s+{oldest}", out)
    assert "1 kept, 2 would be forgotten (dry run: nothing was deleted)" in out
    assert len(json.loads(_ok(run_cli("list", "--json", env=env)))) == 3

    dry = json.loads(_ok(run_cli("forget", "--dry-run", "--json", env=env)))
    assert dry["dry_run"] and dry["deleted"] == [] and dry["policy"]["source"] == "default"
    real = json.loads(_ok(run_cli("forget", "--json", env=env)))
    assert _decisions(real) == _decisions(dry)
    assert sorted(real["deleted"]) == sorted([oldest, middle])
    assert [b["id"] for b in json.loads(_ok(run_cli("list", "--json", env=env)))] == [newest]


def test_pins_are_respected(env, three_backups):
    oldest, _, newest = three_backups
    assert "pinned" in _ok(run_cli("pin", oldest[:-2], env=env))
    assert "already pinned" in _ok(run_cli("pin", oldest, env=env))
    document = json.loads(_ok(run_cli("forget", "--keep-last", "1", "--json", env=env)))
    assert _decisions(document)[oldest] == ("keep", ("pinned",))
    assert _decisions(document)[newest] == ("keep", ("last 1 of 1",))
    assert len(document["deleted"]) == 1
    assert "unpinned" in _ok(run_cli("unpin", oldest, env=env))
    assert "was not pinned" in _ok(run_cli("unpin", oldest, env=env))
    out = _ok(run_cli("forget", "--keep-last", "1", env=env))
    assert "1 kept, 1 forgotten" in out and "strongroom prune" in out
    assert [b["id"] for b in json.loads(_ok(run_cli("list", "--json", env=env)))] == [newest]


def test_backup_retention_days_from_the_environment(env, three_backups):
    days = {**env, "BACKUP_RETENTION_DAYS": "30"}
    document = json.loads(_ok(run_cli("forget", "--json", env=days)))
    assert document["policy"] == {
        "description": "within 30d",
        "source": "BACKUP_RETENTION_DAYS",
        "safety": "newest 3 and all younger than 7d, and the rollback point of each database",
    }
    assert all(b["reasons"] == ["within 30d"] for b in document["backups"])
    assert document["deleted"] == []
    # options win over the environment
    document = json.loads(_ok(run_cli("forget", "--keep-last", "2", "--json", env=days)))
    assert document["policy"]["source"] == "options" and len(document["deleted"]) == 1


def test_other_rules_and_target(env, three_backups, tmp_path):
    other = make_sqlite_db(tmp_path / "crm.db", users=100, orders=100, seed=3)
    _ok(run_cli("backup", str(other), env=env))
    out = _ok(run_cli("forget", "--keep-tag", "a", "--target", "shop", "--dry-run", env=env))
    assert "tag a" in out and "crm" not in out
    document = json.loads(
        _ok(run_cli("forget", "--keep-within", "2h", "--keep-hourly", "1", "--json", env=env))
    )
    reasons = [b["reasons"] for b in document["backups"] if b["target"] == "crm"]
    assert reasons == [["hourly 1 of 1", "within 2h"]]


def test_bad_input_gets_one_line_and_an_exit_code(env, three_backups):
    _fails(run_cli("forget", "--keep-within", "3x", env=env), 2, "invalid duration")
    _fails(run_cli("forget", "--keep-last", "0", env=env), 2, "keeps")
    _fails(run_cli("forget", "--timezone", "Mars/Olympus", env=env), 2, "unknown time zone")
    _fails(run_cli("forget", env={**env, "BACKUP_RETENTION_DAYS": "soon"}), 2, "RETENTION")
    _fails(run_cli("pin", "nope", env=env), 3, "no backup")
    _fails(run_cli("unpin", "20990101T000000Z-00000000", env=env), 3, "no backup")
    result = run_cli("forget", "--keep-daily", "-1", env=env)
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    assert len(json.loads(_ok(run_cli("list", "--json", env=env)))) == 3
