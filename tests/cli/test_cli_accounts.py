"""Issue 17, "Credentials and accounts", on the real command line against a SQLite service
database: user add|list|disable|enable|remove|passwd|role, token create|list|revoke; every
action in the audit log as ``cli:<os user>``; never a password or token in the output."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest
from sqlalchemy import select

from strongroom.web import audit
from strongroom.web.auth import authenticate, hash_token
from strongroom.web.db import ServiceDatabase
from strongroom.web.models import ApiToken
from tests.helpers import cli_fails, cli_ok, run_cli

PW = "first-pass-123"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"STRONGROOM_SERVICE_DB": str(tmp_path / "service.db")}


def _db(env: dict[str, str]) -> ServiceDatabase:
    return ServiceDatabase(env["STRONGROOM_SERVICE_DB"])


def _add(env: dict[str, str], name: str, role: str, password: str = PW) -> None:
    cli_ok(
        run_cli(
            "user",
            "add",
            name,
            "--role",
            role,
            "--password-stdin",
            env=env,
            stdin=f"{password}\n".encode(),
        )
    )


def test_users_from_add_to_remove(env: dict[str, str]) -> None:
    _add(env, "alice", "admin")
    _add(env, "bob", "viewer")
    listing = cli_ok(run_cli("user", "list", env=env))
    assert [line.split()[:3] for line in listing.splitlines()[1:]] == [
        ["alice", "admin", "active"],
        ["bob", "viewer", "active"],
    ]
    assert PW not in listing and "argon2" not in listing

    cli_ok(run_cli("user", "disable", "bob", env=env))
    assert "disabled" in cli_ok(run_cli("user", "list", env=env)).splitlines()[2]
    assert authenticate(_db(env), "bob", PW) is None
    cli_ok(run_cli("user", "enable", "bob", env=env))
    assert authenticate(_db(env), "bob", PW) is not None

    changed = run_cli(
        "user", "passwd", "bob", "--password-stdin", env=env, stdin=b"second-pass-456\n"
    )
    assert b"second-pass-456" not in cli_ok(changed).encode() + changed.stderr
    assert authenticate(_db(env), "bob", PW) is None
    assert authenticate(_db(env), "bob", "second-pass-456") is not None

    cli_ok(run_cli("user", "role", "bob", "admin", env=env))
    assert cli_ok(run_cli("user", "list", env=env)).splitlines()[2].split()[1] == "admin"
    cli_ok(run_cli("user", "remove", "bob", env=env))
    assert "bob" not in cli_ok(run_cli("user", "list", env=env))
    cli_fails(run_cli("user", "remove", "bob", env=env), 2, r"error: no user 'bob'")

    actor = f"cli:{getpass.getuser()}"
    done = {
        (e.action, e.subject, e.result)
        for e in audit.recent(_db(env))
        if e.user == actor and e.client == "local"
    }
    assert {
        ("user-add", "alice", "ok"),
        ("user-disable", "bob", "ok"),
        ("user-enable", "bob", "ok"),
        ("user-passwd", "bob", "ok"),
        ("user-role", "bob: admin", "ok"),
        ("user-remove", "bob", "ok"),
        ("user-remove", "bob", "refused: no user 'bob'"),
    } <= done
    assert not any(PW in (e.detail or "") + e.result for e in audit.recent(_db(env)))


def test_the_last_active_admin_cannot_go(env: dict[str, str]) -> None:
    _add(env, "alice", "admin")
    _add(env, "bob", "admin")
    cli_ok(run_cli("user", "disable", "bob", env=env))
    for args in (("disable", "alice"), ("remove", "alice"), ("role", "alice", "viewer")):
        cli_fails(run_cli("user", *args, env=env), 2, r"^error: alice is the last active admin")
    assert cli_ok(run_cli("user", "list", env=env)).splitlines()[1].split()[:3] == [
        "alice",
        "admin",
        "active",
    ]


def test_passwords_never_from_argv_and_checked(env: dict[str, str]) -> None:
    # no terminal, no --password-stdin, no variable: refused, nothing added
    cli_fails(run_cli("user", "add", "carol", env=env, stdin=b""), 2, r"--password-stdin")
    cli_fails(
        run_cli("user", "add", "carol", "--password-stdin", env=env, stdin=b"short\n"),
        2,
        r"at least 8 characters",
    )
    cli_fails(run_cli("user", "add", "carol", "--password", PW, env=env), 2, r"No such option")
    assert "carol" not in cli_ok(run_cli("user", "list", env=env))
    cli_fails(
        run_cli(
            "user",
            "add",
            "carol",
            "--role",
            "root",
            "--password-stdin",
            env=env,
            stdin=b"x" * 9 + b"\n",
        ),
        2,
        r"role must be one of admin, viewer",
    )


def test_tokens_create_list_revoke(env: dict[str, str]) -> None:
    made = run_cli("token", "create", "ci", "--role", "admin", "--expires", "30d", env=env)
    token = cli_ok(made).strip()
    assert token.startswith("sr_") and token not in made.stderr.decode()
    cli_ok(run_cli("token", "create", "dash", env=env))
    listing = cli_ok(run_cli("token", "list", env=env))
    assert token not in listing and hash_token(token) not in listing
    rows = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert rows["ci"].split()[1:3] == ["admin", "active"]
    assert rows["ci"].rstrip().endswith("UTC") and rows["dash"].rstrip().endswith("never")
    with _db(env).session() as session:
        stored = session.scalar(select(ApiToken).where(ApiToken.name == "ci"))
        assert stored is not None and stored.expires_at is not None

    cli_fails(run_cli("token", "create", "x", "--expires", "later", env=env), 2, r"expiry")
    cli_ok(run_cli("token", "revoke", "ci", env=env))
    assert cli_ok(run_cli("token", "list", env=env)).splitlines()[1].split()[2] == "revoked"
    cli_fails(run_cli("token", "revoke", "ci", env=env), 2, r"no active token 'ci'")
    # a revoked token's name can be used again
    assert cli_ok(run_cli("token", "create", "ci", env=env)).strip() != token

    entries = audit.recent(_db(env))
    assert not any(token in (e.subject or "") + e.result + (e.detail or "") for e in entries)
    assert {e.action for e in entries} >= {"token-create", "token-revoke"}
