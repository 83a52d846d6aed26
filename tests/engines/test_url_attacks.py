"""Database URLs and redaction attacked as a hostile user and a newcomer would (issue 16):
odd ports, unsupported forms that must not echo a password, Windows paths, poolers behind
several hosts, libpq strings that libpq cannot parse, overlapping and very many secrets,
and nasty passwords through the real CLI against the test servers."""

from __future__ import annotations

import json
import random
import re
import statistics
import string
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from strongroom.engines.urls import parse_database_url
from strongroom.errors import UnsupportedDatabaseUrl
from strongroom.redaction import REDACTED, redact_text, register_secret
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.storage.local import LocalStorage
from tests.fixtures.mariadb import MariaDbServer
from tests.fixtures.postgres import PgServer, unique_db_name
from tests.helpers import cli_fails, cli_ok, owned_database, repository_env, run_cli

# tests/conftest.py gives each test its own registry of secrets to redact


def _refused(text: str, pattern: str) -> str:
    with pytest.raises(UnsupportedDatabaseUrl) as caught:
        parse_database_url(text)
    message = str(caught.value)
    assert re.search(pattern, message), message
    assert "\n" not in message
    return message


# --- ports ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "postgresql://u:pw@h/db?port=²",  # str.isdigit() is true, int() fails: was exit 70
        "host=h port=² dbname=x",
        "host=h port=99999 dbname=x",  # the URL's authority refused it, the query did not
        "postgresql://u:pw@h/db?port=99999",
        "postgresql://u:pw@h/db?port=-1",
        "postgresql://u:pw@h:0/db",
        "mysql://u:pw@h:0/db",
        "postgresql://u:pw@h:٣/db",  # an Arabic-Indic digit was read as port 3
        "postgresql://u:pw@h:\uff15\uff14\uff13\uff12/db",  # fullwidth digits
        "postgresql://u:pw@h:abc/db",  # was "cannot read the host"
        "postgresql://u:pw@h:+5/db",
        "mysql://u:pw@h:x1/db",
    ],
)
def test_a_bad_port_is_one_line_naming_the_port(text: str) -> None:
    message = _refused(text, r"port .*not a number from 1 to 65535")
    assert "pw" not in message


def test_good_ports_and_hosts_still_parse() -> None:
    assert parse_database_url("postgresql://u:p@[::1]:5433/db").host == "::1"
    assert parse_database_url("postgresql://u:p@[::1]:5433/db").port == 5433
    assert parse_database_url("host=h port=5432,5433 dbname=x").params["port"] == "5432,5433"
    assert parse_database_url("postgresql://u:p@h:65535/db").port == 65535
    socket = parse_database_url("postgresql://u:p@/db?host=/run/postgresql")
    assert socket.socket == "/run/postgresql" and socket.host is None
    assert parse_database_url("postgresql://us@er:p@ss@h/db").user == "us@er"


# --- messages about text strongroom cannot read -----------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "mongodb://u:my secret pw@h/db",  # the space ended the URL for redact_url
        "postgress://app:hunter 2@h/db",  # a typo in the scheme
        "app:my secret@h/db",  # no scheme at all
    ],
)
def test_an_unsupported_form_never_echoes_its_password(text: str) -> None:
    message = _refused(text, r"unsupported database URL")
    for piece in ("secret", "hunter", " pw"):
        assert piece not in message, message


def test_an_unparsable_libpq_string_does_not_quote_a_piece_of_the_password() -> None:
    message = _refused("host=h password=my secret dbname=x", r"invalid libpq connection")
    assert "secret" not in message
    # other mistakes are still named
    _refused("host=h password=abc bogus=1", r'invalid connection option "bogus"')


@pytest.mark.parametrize(
    "text",
    ["sqlite:///C:/app.db", "sqlite:///C:\\data\\app.db", "file:C:/dev.db", "C:\\app.db"],
)
def test_windows_sqlite_paths_are_refused_not_read_as_a_folder_named_c(text: str) -> None:
    _refused(text, r"Windows path .*sqlite:////")


def test_sqlite_paths_that_only_look_like_drives_are_kept(tmp_path: Path) -> None:
    assert parse_database_url("sqlite:////srv/C:/x.db").path == Path("/srv/C:/x.db")
    _refused("file::memory:", r"names no file")
    _refused("file::memory:?cache=shared", r"names no file")


def test_three_slashes_with_both_files_existing_mean_the_absolute_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    absolute = tmp_path / "app.db"
    absolute.touch()
    cwd = tmp_path / "cwd"
    relative = cwd / str(absolute).lstrip("/")
    relative.parent.mkdir(parents=True)
    relative.touch()
    monkeypatch.chdir(cwd)
    rest = str(absolute).lstrip("/")
    assert parse_database_url(f"sqlite:///{rest}").path == absolute
    assert parse_database_url(f"sqlite:///./{rest}").path == relative
    assert parse_database_url(f"sqlite:////{rest}").path == absolute


# --- poolers ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "postgresql://u:pw@h:5432,h2:6543/db",  # one host of several is the pooler
        "postgresql://u:pw@h/db?host=h,h2&port=5432,6543",
        "postgresql://u:pw@h:06543/db",
        "postgresql://u:pw@h/db?pgbouncer=TRUE",
        "postgresql://u:pw@h/db?PgBouncer=1",
    ],
)
def test_a_pooler_anywhere_in_the_url_is_refused(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STRONGROOM_ALLOW_POOLER", raising=False)
    _refused(text, r"transaction-mode connection pooler")


def test_a_direct_server_on_6543_is_allowed_by_the_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STRONGROOM_ALLOW_POOLER", raising=False)
    url = parse_database_url("postgresql://u:pw@h:6543/db?strongroom_allow_pooler=1")
    assert url.port == 6543 and "strongroom_allow_pooler" not in url.params
    monkeypatch.setenv("STRONGROOM_ALLOW_POOLER", "1")
    assert parse_database_url("postgresql://u:pw@h:5432,h2:6543/db").host == "h,h2"


# --- redaction --------------------------------------------------------------------------
def test_overlapping_secrets_are_both_hidden_whole() -> None:
    register_secret("x-y")
    register_secret("y-zzzz")
    assert redact_text("at x-y-zzzz now") == f"at {REDACTED} now"
    register_secret("Q1-w:e")
    register_secret("w:e-R2")
    assert redact_text("[Q1-w:e-R2]") == f"[{REDACTED}]"


@pytest.mark.parametrize(
    "shape",
    ["{}", "{},", '"{}"', "{}.", "({})", ":{}@", "u:{}@h", "'{}'", "[{}]", "x={}&y", "{}\n"],
)
@pytest.mark.parametrize(
    "password",
    ["pw", "hunter2", ".*+?()[]{}|\\^$", "a\\b", "%41", "😀", "\u202eabc", "a'b\"c", "z"],
)
def test_a_password_next_to_punctuation_is_hidden(shape: str, password: str) -> None:
    register_secret(password)
    out = redact_text(shape.format(password))
    assert password not in out.replace(REDACTED, "\0"), out


def test_a_deep_family_of_secrets_and_a_10kb_secret_compile() -> None:
    for i in range(1, 300):  # nested prefixes deeper than re's nesting limit
        register_secret("k" * i + "Z")
    big = "".join(random.Random(3).choices("abc@:/%é😀 ", k=10240))
    register_secret(big)
    assert redact_text(f"x kkkZ y {'k' * 299}Z kkk") == f"x {REDACTED} y {REDACTED} kkk"
    assert redact_text(f"pre {big} post") == f"pre {REDACTED} post"


def test_redaction_with_1000_secrets_is_fast() -> None:
    """Registering was quadratic (1000 secrets: 1-4 s) and a 10 KB line took 17-21 ms."""
    rng = random.Random(1)
    alphabet = string.ascii_letters + string.digits + "@:/%!"
    secrets = ["".join(rng.choices(alphabet, k=rng.randint(6, 24))) for _ in range(1000)]
    started = time.perf_counter()
    for secret in secrets:
        register_secret(secret)
        redact_text("a short line between two registrations")
    registering = time.perf_counter() - started
    for _ in range(200):  # the log of a backup goes on
        redact_text("INFO strongroom.pipeline: table public.orders: 120000 rows")
    words = ("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(3000))
    line = " ".join(words)[:10240]
    line = f"{line[:5000]} {secrets[5]} {secrets[500]} {line[5000:]}"
    times = []
    for _ in range(15):
        started = time.perf_counter()
        out = redact_text(line)
        times.append(time.perf_counter() - started)
    assert secrets[5] not in out and secrets[500] not in out
    per_line = statistics.median(times)
    print(f"register+redact 1000: {registering * 1e3:.0f} ms; 10 KB line: {per_line * 1e3:.2f} ms")
    assert registering < 2.0
    assert per_line < 0.010


# --- through the real CLI ---------------------------------------------------------------
WILD = "S3c.*+?()[]{}|\\^$ 😀\u202e\tz%41"


def _hidden(password: str, text: str) -> None:
    for form in {password, json.dumps(password)[1:-1], "S3c.*", "😀", "\\u202e"}:
        assert form not in text, (form, text)


def _pg_role(server: PgServer, password: str) -> tuple[str, str]:
    return owned_database(server, password, "atk", 10)


@pytest.fixture
def pg_role(pg_server: PgServer) -> Iterator[list[tuple[str, str]]]:
    made: list[tuple[str, str]] = []
    yield made
    for role, db in made:
        pg_server.drop_database(db)
        pg_server.drop_database(f"{db}_copy")
        with pg_server.connect() as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_a_wild_postgresql_password_never_shows_anywhere(
    pg_server: PgServer, pg_role: list[tuple[str, str]], tmp_path: Path
) -> None:
    """Success, list, show --json (the manifest's source), the restore plan, and failures
    (wrong password, missing database, unreachable, TLS file missing), in both formats."""
    role, db = _pg_role(pg_server, WILD)
    pg_role.append((role, db))
    env = repository_env(tmp_path)
    cli_ok(run_cli("init", env=env))
    where = f"{pg_server.host}:{pg_server.port}"
    url = f"postgresql://{role}:{WILD}@{where}/{db}"
    text = ""
    for fmt in ("human", "json"):
        ok = run_cli("-v", "--log-format", fmt, "backup", url, "--target", "wild", env=env)
        cli_ok(ok)
        text += ok.stdout.decode() + ok.stderr.decode()
    listed = cli_ok(run_cli("list", "--json", env=env))
    shown = cli_ok(run_cli("show", "latest", "--json", env=env))
    repository = Repository.open(
        LocalStorage(Path(env["STRONGROOM_REPO"])),
        KeySource(key_file=Path(env["STRONGROOM_KEY_FILE"])),
    )
    source = repository.private_section(repository.list_backups("wild")[0]).source
    assert source == f"postgresql://{role}:{REDACTED}@{where}/{db}"  # stored redacted
    plan = run_cli(
        "restore", "latest", "--target", "wild", "--to", f"{url}_copy", "--dry-run", env=env
    )
    text += listed + shown + cli_ok(plan) + plan.stderr.decode()
    failures = {
        f"postgresql://{role}:{WILD}x@{where}/{db}": "authentication failed",
        f"postgresql://{role}:{WILD}@{where}/{db}_nosuch": "does not exist",
        f"postgresql://{role}:{WILD}@{pg_server.host}:1/{db}": "cannot reach PostgreSQL",
        f"{url}?sslmode=verify-full&sslrootcert=/nonexistent": "cannot reach PostgreSQL",
    }
    for i, (bad, pattern) in enumerate(failures.items()):
        fmt = ("human", "json")[i % 2]
        failed = run_cli("-v", "--log-format", fmt, "backup", bad, env=env)
        text += cli_fails(failed, 5, pattern) + failed.stdout.decode()
    _hidden(WILD, text)


@pytest.mark.xfail(
    strict=True,
    reason="a password that is also a word of strongroom's own messages is redacted in the "
    "message text too ('*** atk_… does not exist'), which both mangles the message and "
    "tells the reader which word the password is; redacting only the variable parts of "
    "messages needs every error and log call to keep its template apart from its values",
)
def test_a_password_that_is_a_message_word_leaves_the_message_intact(
    pg_server: PgServer, pg_role: list[tuple[str, str]], tmp_path: Path
) -> None:
    role, db = _pg_role(pg_server, "database")
    pg_role.append((role, db))
    env = repository_env(tmp_path)
    cli_ok(run_cli("init", env=env))
    where = f"{pg_server.host}:{pg_server.port}"
    failed = run_cli("backup", f"postgresql://{role}:database@{where}/{db}_nosuch", env=env)
    err = cli_fails(failed, 5, r"does not exist")
    assert f"database {db}_nosuch does not exist" in err


def test_mysql_node_ssl_object_and_wild_password(
    mariadb_server: MariaDbServer, tmp_path: Path
) -> None:
    """``ssl={"rejectUnauthorized":false}`` with raw braces asks for TLS: against a server
    without TLS that is one clear error line (exit 5), and the password never shows."""
    user = f"atk_{uuid.uuid4().hex[:8]}"
    db = unique_db_name("atk")
    mariadb_server.create_database(db)
    mariadb_server.query(None, "CREATE USER %s@'%%' IDENTIFIED BY %s", (user, WILD))
    mariadb_server.query(None, f"GRANT ALL ON `{db}`.* TO %s@'%%'", (user,))
    mariadb_server.query(db, "CREATE TABLE t (id INT PRIMARY KEY)")
    try:
        env = repository_env(tmp_path)
        cli_ok(run_cli("init", env=env))
        where = f"{mariadb_server.host}:{mariadb_server.port}"
        base = f"mysql://{user}:{WILD}@{where}/{db}"
        ok = run_cli("-v", "--log-format", "json", "backup", base, "--target", "my", env=env)
        text = cli_ok(ok) + ok.stderr.decode()
        tls = run_cli("-v", "backup", base + '?ssl={"rejectUnauthorized":false}', env=env)
        assert tls.returncode in (0, 5), tls.stderr.decode()
        text += tls.stdout.decode() + tls.stderr.decode()
        if tls.returncode == 5:
            cli_fails(tls, 5, r"MySQL|TLS|SSL|ssl")
        for fmt in ("human", "json"):
            wrong = f"mysql://{user}:{WILD}x@{where}/{db}"
            failed = run_cli("-v", "--log-format", fmt, "backup", wrong, env=env)
            text += cli_fails(failed, 5, r"authentication failed")
        text += cli_ok(run_cli("show", "latest", "--json", env=env))
        _hidden(WILD, text)
    finally:
        mariadb_server.query(None, "DROP USER IF EXISTS %s@'%%'", (user,))
        mariadb_server.drop_database(db)
