"""Passwords with non-ASCII and special characters, on every MySQL command path (check,
backup with its statistics, restore into a new database, restore over the live one, a
drill), against a real MariaDB server: PyMySQL and the client tools must send the same
UTF-8 bytes the server hashed, and no output may show the password."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest

from strongroom.engines.mysql import MysqlEngine, parse_url
from strongroom.engines.mysql.connection import MysqlConnection
from strongroom.engines.mysql.tools import option_value
from strongroom.errors import DatabaseAuthFailed, UnsupportedDatabaseUrl
from tests.fixtures.mariadb import MariaDbServer, fill_sample, unique_db_name
from tests.helpers import cli_fails, cli_ok, repository_env, run_cli

PASSWORDS = {
    "latin1": "pässwort",
    "beyond-latin1": "geheim€中文",
    "specials": " sp\"e#c\\i a@l:s/%'ü ",
}
TRICKY = [*PASSWORDS.values(), "tail\\", "a\nb\rc\td", "#", '"', "'x'", '"x"', "\\n\\s", "€"]


@dataclass
class Account:
    """A user allowed only its own database (and the ``<db>_…`` ones of staged restores)."""

    server: MariaDbServer
    user: str
    password: str
    database: str

    def url(self, database: str | None = None, password: str | None = None) -> str:
        pw = quote(self.password if password is None else password, safe="")
        s = self.server
        return f"mysql://{self.user}:{pw}@{s.host}:{s.port}/{database or self.database}"

    def forms(self) -> list[str]:
        """The password as typed and as written in the URL."""
        return [self.password, quote(self.password, safe="")]

    def assert_hidden(self, *texts: str | bytes) -> None:
        for text in texts:
            shown = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
            for form in self.forms():
                assert form not in shown, shown

    def fill(self) -> None:
        """The sample schema, created by the account itself: it may dump and re-create
        only views, routines, triggers and events it is the definer of."""
        own = dataclasses.replace(self.server, user=self.user)
        own.password = self.password.encode()  # type: ignore[assignment]  # PyMySQL: as-is
        fill_sample(own, self.database, customers=40)

    def rows(self, database: str, table: str = "orders") -> int:
        return self.server.query(database, f"SELECT COUNT(*) FROM `{table}`")[0][0]


@pytest.fixture(params=list(PASSWORDS), ids=list(PASSWORDS))
def account(request: pytest.FixtureRequest, mariadb_server: MariaDbServer) -> Iterator[Account]:
    password = PASSWORDS[request.param]
    user = f"pw_{uuid.uuid4().hex[:10]}"
    database = unique_db_name("pw")
    mariadb_server.create_database(database)
    try:
        with mariadb_server.connect() as conn, conn.cursor() as cur:
            cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
            cur.execute(f"GRANT ALL ON `{database}`.* TO %s@'%%'", (user,))
            cur.execute(f"GRANT ALL ON `{database}\\_%%`.* TO %s@'%%'", (user,))
        yield Account(mariadb_server, user, password, database)
    finally:
        mariadb_server.query(None, "DROP USER IF EXISTS %s@'%%'", (user,))
        for name in mariadb_server.databases():
            if name == database or name.startswith(f"{database}_"):
                mariadb_server.drop_database(name)


# --- no server ---------------------------------------------------------------------------
@pytest.mark.parametrize("password", TRICKY)
def test_the_url_password_is_decoded_as_utf8_and_kept_out_of_messages(password):
    url = f"mysql://app:{quote(password, safe='')}@db.example/shop"
    conn = MysqlConnection(url)
    assert conn.params.password == password
    shown = conn.describe() + conn.redact(f"failed: {password} {url}")
    for form in (password, quote(password, safe="")):
        assert form not in shown


@pytest.mark.skipif(not shutil.which("my_print_defaults"), reason="no my_print_defaults")
@pytest.mark.parametrize("password", TRICKY)
def test_the_client_tools_read_the_password_back_unchanged(password):
    """The clients' own option-file parser gives back exactly the password (UTF-8 bytes)."""
    conn = MysqlConnection(f"mysql://app:{quote(password, safe='')}@db.example/shop")
    with conn.option_file() as options:
        out = subprocess.run(
            ["my_print_defaults", f"--defaults-file={options.path}", "client"],
            pass_fds=options.pass_fds,
            capture_output=True,
            check=True,
        ).stdout
    assert f"--password={password}\n--host=".encode() in out
    assert "\n" not in option_value(password)


@pytest.mark.parametrize(
    ("url", "what"),
    [
        ("mysql://app:%FF%FE@h/db", "password"),
        ("mysql://app:p%C3@h/db", "password"),
        ("mysql://%E4pp:pw@h/db", "user"),
        ("mysql://app:pw@h/d%FFb", "database name"),
    ],
)
def test_percent_encoding_that_is_not_utf8_is_one_clear_error(url, what):
    with pytest.raises(UnsupportedDatabaseUrl, match=f"{what} .* not valid UTF-8") as info:
        parse_url(url)
    if what == "password":
        assert url.split(":")[2].split("@")[0] not in str(info.value)


def test_a_nul_in_the_password_is_refused():
    with pytest.raises(UnsupportedDatabaseUrl, match="NUL"):
        parse_url("mysql://app:a%00b@h/db")


def test_bad_urls_fail_in_the_cli_with_one_error_line(tmp_path):
    env = repository_env(tmp_path)
    cli_ok(run_cli("init", env=env))
    err = cli_fails(
        run_cli("backup", "mysql://app:geheim%FF%E2%82%AC@127.0.0.1:1/db", env=env),
        5,
        "not valid UTF-8",
    )
    assert "geheim" not in err


# --- against the server ------------------------------------------------------------------
def test_every_command_path_logs_in(account: Account, tmp_path):
    account.fill()
    engine = MysqlEngine(account.url())
    engine.check()
    with engine.connect(account.database) as conn, conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        assert cur.fetchone()[0].startswith(f"{account.user}@")

    env = repository_env(tmp_path)
    cli_ok(run_cli("init", env=env))
    backup = run_cli("backup", account.url(), env=env)
    cli_ok(backup)
    account.assert_hidden(backup.stdout, backup.stderr)

    shown = run_cli("show", "latest", "--json", env=env)
    tables = {t["name"]: t["rows"] for t in json.loads(cli_ok(shown))["tables"]}
    assert tables == {"audit": 120, "customers": 40, "orders": 120}
    account.assert_hidden(shown.stdout, shown.stderr)

    copy = f"{account.database}_copy"
    restored = run_cli("restore", "latest", "--to", account.url(copy), env=env)
    assert "verified" in cli_ok(restored)
    account.assert_hidden(restored.stdout, restored.stderr)
    assert account.rows(copy) == 120

    account.server.query(account.database, "DELETE FROM orders WHERE id > 60")
    swapped = run_cli("restore", "latest", "--to", account.url(), "--yes", env=env)
    assert "verified" in cli_ok(swapped)
    account.assert_hidden(swapped.stdout, swapped.stderr)
    assert account.rows(account.database) == 120

    scratch = account.url(f"{account.database}_drill")
    drill = run_cli("verify", "latest", "--restore", "--scratch", scratch, env=env)
    cli_ok(drill)
    account.assert_hidden(drill.stdout, drill.stderr)
    assert not account.server.database_exists(f"{account.database}_drill")


def test_a_wrong_non_ascii_password_is_authentication_failed(account: Account, tmp_path):
    wrong = account.password + "€ß"
    with pytest.raises(DatabaseAuthFailed, match="authentication failed") as info:
        MysqlEngine(account.url(password=wrong)).check()
    assert wrong not in str(info.value) and quote(wrong, safe="") not in str(info.value)

    env = repository_env(tmp_path)
    cli_ok(run_cli("init", env=env))
    failed = run_cli("backup", account.url(password=wrong), env=env)
    err = cli_fails(failed, 5, "authentication failed")
    for form in (wrong, quote(wrong, safe=""), *account.forms()):
        assert form not in err + failed.stdout.decode()
